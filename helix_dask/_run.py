"""Run tracking: one :class:`Run` per version in flight, owning its nodes and a pending count,
and a :class:`RunBook` that routes scheduler transitions and worker offers to them in O(1)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from ._events import (
    Decision,
    EventKind,
    EventRecord,
    Materialization,
    NodeRecord,
    RunReport,
    RunStatus,
)
from ._wire import NodeMeta
from .rewrite import load_key

KEEP_FINISHED = 16
"""A client's last finished run is kept in memory (its report answers ``hx.last_run`` without
the catalog) unless this many versions are newer."""


@dataclass(slots=True, eq=False)
class NodeProgress:
    """Mutable progress of one node within one run; frozen into a NodeRecord for reports."""

    key: str
    meta: NodeMeta
    decision: Decision
    estimate: float
    run: Run
    compute_seconds: float | None = None
    load_seconds: float | None = None
    write_seconds: float | None = None
    nbytes: int | None = None
    materialization: Materialization | None = None
    reason: str = ""
    metrics: dict[str, float] | None = None
    recompute: float = 0.0
    in_memory: bool = False
    """Its task reached memory in this run (its worker's offer is due)."""
    eff: str | None = None
    """Effective signature (static signature + verified run-time requirements + parents'):
    what its artifact is stored and looked up under. None until settled (a node computing)
    or when it cannot be verified."""
    identified: bool = False
    """``eff`` is final for this run (children's storage waits for it)."""
    writer: str | None = None
    """Address of the worker writing its accepted result."""
    load_task: str = ""
    """Key of the task loading it (a loaded node), when not its own ``load-<key>``."""
    reserved: int = 0
    """Bytes of the budget reserved for its accepted write."""
    _id_waiters: list[asyncio.Future[None]] | None = None
    done: bool = False
    accepted: bool = False
    """The policy chose to store it (the write may still be in flight)."""
    decided: bool = False
    """Its materialization is decided, or never will be (not computed here, failed)."""
    _waiters: list[asyncio.Future[None]] | None = None

    def decide(self) -> None:
        """Mark it decided and wake whoever waits for it (a parent's storage decision)."""
        self.decided = True
        if self._waiters:
            for w in self._waiters:
                if not w.done():
                    w.set_result(None)
            self._waiters = None

    def wait_decided(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.decided:
            fut.set_result(None)
        else:
            (self._waiters if self._waiters is not None else self._set_waiters()).append(fut)
        return fut

    def _set_waiters(self) -> list[asyncio.Future[None]]:
        self._waiters = []
        return self._waiters

    @property
    def identity(self) -> str:
        """The artifact identity: the effective signature once known, else the static one."""
        return self.eff or self.meta.signature

    def identify(self, eff: str | None) -> None:
        """Settle the effective signature and wake the children waiting for it."""
        self.eff = eff
        self.identified = True
        for w in self._id_waiters or ():
            if not w.done():
                w.set_result(None)
        self._id_waiters = None

    def wait_identified(self) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.identified:
            fut.set_result(None)
        else:
            if self._id_waiters is None:
                self._id_waiters = []
            self._id_waiters.append(fut)
        return fut

    def measured(self) -> bool:
        """Whether its run measured or settled anything of it since its plan was recorded: a
        node that is neither computed nor loaded, and was never offered, keeps its planned row."""
        return (
            self.decision is Decision.COMPUTE
            or self.decision is Decision.LOAD
            or self.materialization is not None
            or self.reason != ""
            or self.compute_seconds is not None
            or self.load_seconds is not None
            or self.write_seconds is not None
            or self.nbytes is not None
            or self.metrics is not None
        )

    def record(self) -> NodeRecord:
        m = self.meta
        return NodeRecord(
            key=self.key,
            name=m.name,
            signature=m.signature,
            code=m.code,
            args=m.args,
            parents=m.parents,
            decision=self.decision,
            compute_seconds=self.compute_seconds,
            load_seconds=self.load_seconds,
            write_seconds=self.write_seconds,
            nbytes=self.nbytes,
            materialization=self.materialization,
            reason=self.reason,
            estimated_compute_seconds=self.estimate,
            arg_values=m.arg_values,
            metrics=self.metrics,
            identity=self.eff or "",
            label=m.label,
        )


@dataclass(slots=True, eq=False)
class Run:
    """One version in flight: its nodes, how many are pending, its events and its end."""

    version: int
    workflow: str
    message: str
    predicted: float | None
    started: float = field(default_factory=time.time)
    nodes: dict[str, NodeProgress] = field(default_factory=dict)
    children: dict[str, list[str]] = field(default_factory=dict)
    """Key of each node -> keys of the nodes in this run that take it as an argument."""
    outputs: frozenset[str] = frozenset()
    """Keys the client asked for: stored as outputs even when released before their offer."""
    pending: int = 0
    failed: bool = False
    unplanned: bool = False
    """Planning failed: the graph runs as plain Dask, nothing is stored."""
    status: RunStatus = RunStatus.RUNNING
    finished: float | None = None
    time_saved: float = 0.0
    measured: float = 0.0
    events: list[EventRecord] = field(default_factory=list)
    _done: asyncio.Event | None = None

    def add(self, node: NodeProgress) -> None:
        self.nodes[node.key] = node
        for parent in node.meta.parents:
            self.children.setdefault(parent, []).append(node.key)
        if node.decision in (Decision.COMPUTE, Decision.LOAD):
            self.pending += 1
        else:
            node.done = True
            node.decide()  # never offered: nothing to decide
        if node.decision is not Decision.COMPUTE:
            node.identify(node.eff)  # identified by the plan

    def settle(self, node: NodeProgress) -> bool:
        """Mark ``node`` finished; True when that was the run's last pending node."""
        node.decide()
        if node.done:
            return False
        node.done = True
        self.pending -= 1
        return self.pending == 0 and self.finished is None

    def event(
        self,
        kind: EventKind,
        node_or_name: NodeProgress | str,
        signature: str = "",
        nbytes: int | None = None,
        reason: str = "",
    ) -> EventRecord:
        if isinstance(node_or_name, NodeProgress):
            n = node_or_name
            rec = EventRecord(
                time.time(), self.version, kind, n.meta.signature, n.meta.name, n.nbytes, reason
            )
        else:
            rec = EventRecord(
                time.time(), self.version, kind, signature, node_or_name, nbytes, reason
            )
        self.events.append(rec)
        return rec

    def child_nodes(self, key: str) -> list[NodeProgress]:
        return [self.nodes[c] for c in self.children.get(key, ()) if c in self.nodes]

    def finish(self, status: RunStatus) -> None:
        """Close the run: its status, the time it saved (never negative) and what it measured."""
        self.finished = time.time()
        self.status = status
        saved = measured = 0.0
        for n in self.nodes.values():  # one pass: it runs on the scheduler's event loop
            n.decide()
            if not n.identified:
                n.identify(n.eff)
            d = n.decision
            if d is Decision.COMPUTE:
                measured += n.compute_seconds or 0.0
            elif d is Decision.LOAD:
                measured += n.load_seconds or 0.0
                saved += max(0.0, n.estimate - (n.load_seconds or 0.0))
            elif d is Decision.PRUNE or d is Decision.IN_CLUSTER:
                saved += max(0.0, n.estimate - (n.load_seconds or 0.0))
        self.time_saved, self.measured = saved, measured
        if self._done is not None:
            self._done.set()

    async def wait(self, timeout: float) -> bool:
        """Wait until it finished; False on timeout."""
        if self.finished is not None:
            return True
        if self._done is None:
            self._done = asyncio.Event()
        try:
            await asyncio.wait_for(self._done.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def report(self) -> RunReport:
        return RunReport(
            version=self.version,
            workflow=self.workflow,
            started=self.started,
            finished=self.finished,
            status=str(self.status),
            nodes=tuple(sorted((n.record() for n in self.nodes.values()), key=lambda r: r.name)),
            time_saved=self.time_saved,
            message=self.message,
            predicted_seconds=self.predicted,
            measured_seconds=self.measured if self.finished is not None else None,
            events=tuple(self.events),
        )


class RunBook:
    """Every run in memory and who is waiting for what: scheduler keys to the nodes that
    compute or load them, signatures being written, the last run of each client."""

    def __init__(self) -> None:
        self.runs: dict[int, Run] = {}
        self.watch: dict[str, list[NodeProgress]] = {}
        """Scheduler key -> nodes of running versions that compute it (or load it, under the
        load task's key), oldest first. Usually one; two when a key is computed again while
        an older run still waits for its offer."""
        self.writing: dict[str, NodeProgress] = {}
        """Signature -> the node whose accepted write is in flight."""
        self.last_by_client: dict[str, int] = {}
        self.protected: dict[str, int] = {}
        """Signature -> number of running nodes loading it (never evicted meanwhile)."""
        self.producers: dict[str, NodeProgress] = {}
        """Key of a helix result on the cluster -> the node (of whichever run) that computed
        or loaded it: where its effective signature is settled."""

    def open(self, run: Run, client: str) -> None:
        """Take in a new run: route its computed and loaded keys to their nodes."""
        self.runs[run.version] = run
        self.last_by_client[client] = run.version
        for node in run.nodes.values():
            if node.decision is Decision.COMPUTE:
                self.watch.setdefault(node.key, []).append(node)
                self.producers[node.key] = node
            elif node.decision is Decision.LOAD:
                self.watch.setdefault(node.load_task or load_key(node.key), []).append(node)
                self.producers[node.key] = node
                sig = node.identity
                self.protected[sig] = self.protected.get(sig, 0) + 1

    def computing(self, key: str) -> NodeProgress | None:
        """The node whose task for ``key`` is running now: the newest not yet in memory."""
        for node in reversed(self.watch.get(key, ())):
            if not node.in_memory:
                return node
        return None

    def loading(self, key: str) -> list[NodeProgress]:
        """The nodes the load task ``key`` is loading now (several for a shared read)."""
        return [n for n in self.watch.get(key, ()) if not n.in_memory]

    def offered(self, key: str, signature: str) -> NodeProgress | None:
        """The node a worker's offer for ``key`` answers: the oldest that reached memory, else
        the one computing (the offer can overtake the scheduler's own transition)."""
        nodes = self.watch.get(key)
        if not nodes:
            return None
        node = next((n for n in nodes if n.in_memory), None) or self.computing(key)
        if node is None or node.meta.signature != signature:
            return None
        node.in_memory = True
        self.unwatch(key, node)
        return node

    def unwatch(self, key: str, node: NodeProgress) -> None:
        nodes = self.watch.get(key)
        if nodes is None:
            return
        try:
            nodes.remove(node)
        except ValueError:
            return
        if not nodes:
            del self.watch[key]
        if node.decision is Decision.LOAD:
            sig = node.identity
            left = self.protected.get(sig, 0) - 1
            if left > 0:
                self.protected[sig] = left
            else:
                self.protected.pop(sig, None)

    def close(self, run: Run) -> None:
        """Forget routes of a finished run and trim old finished runs."""
        for node in run.nodes.values():
            if node.decision is Decision.COMPUTE:
                self.unwatch(node.key, node)
            elif node.decision is Decision.LOAD:
                self.unwatch(node.load_task or load_key(node.key), node)
        # A finished run is kept only while a client may ask for it as its last (its nodes
        # are many objects: each one makes every garbage collection of the scheduler longer);
        # older reports come from the catalog.
        keep = set(self.last_by_client.values())
        keep.add(max(self.runs))  # the newest: its graph tells a child from a parent
        old = [
            v
            for v, r in self.runs.items()
            if r.finished and (v not in keep or v < run.version - KEEP_FINISHED)
        ]
        for v in old:
            del self.runs[v]

    def running(self) -> Iterator[Run]:
        return (r for r in self.runs.values() if r.finished is None)

    def current_signatures(self) -> dict[str, frozenset[str]]:
        """Signatures per task name over the runs in flight."""
        current: dict[str, set[str]] = {}
        for r in self.running():
            for n in r.nodes.values():
                current.setdefault(n.meta.name, set()).add(n.meta.signature)
        return {k: frozenset(v) for k, v in current.items()}

    def newest_children(self) -> dict[str, set[str]]:
        """The task graph of the newest run, by task name: name -> names of its children."""
        children: dict[str, set[str]] = {}
        if self.runs:
            newest = self.runs[max(self.runs)]
            for key, child_keys in newest.children.items():
                if key in newest.nodes:
                    children.setdefault(newest.nodes[key].meta.name, set()).update(
                        newest.nodes[c].meta.name for c in child_keys if c in newest.nodes
                    )
        return children
