"""Typed decisions and records: what the planner chose and what a run did, read by every view."""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class Decision(enum.StrEnum):
    """What the plan does with one helix node in one iteration."""

    COMPUTE = "compute"
    """Run the task's function; every parent is computed or loaded."""
    LOAD = "load"
    """Read the stored artifact with the same signature instead of running the function."""
    PRUNE = "prune"
    """Skip the node: nothing this iteration needs it once its descendants are loaded."""
    IN_CLUSTER = "in_cluster"
    """Already held (or being computed) on the cluster under the same key; used as is."""


class Materialization(enum.StrEnum):
    """What the materializer did with a computed node's result."""

    STORED = "stored"
    """Written to the artifact store for later iterations."""
    SKIPPED = "skipped"
    """Not written: the policy judged the saving too small or the task opted out."""
    NO_SPACE = "no_space"
    """Not written: it would have pushed the store past its budget."""
    FAILED = "failed"
    """The write raised; nothing was committed and a WARNING was logged."""


class RunStatus(enum.StrEnum):
    """Where one version stands."""

    RUNNING = "running"
    """Planned; some node has not finished or some write has not committed yet."""
    DONE = "done"
    """Every node finished and every write committed."""
    FAILED = "failed"
    """A task raised; the rest finished."""
    INTERRUPTED = "interrupted"
    """The scheduler plugin closed while it ran."""
    PLAN_FAILED = "plan_failed"
    """Planning or rewriting raised: the graph ran unchanged, as plain Dask, and stored nothing."""


class EventKind(enum.StrEnum):
    """What happened to one result in the store."""

    STORED = "stored"
    SKIPPED = "skipped"
    NO_SPACE = "no_space"
    FAILED = "failed"
    EVICTED = "evicted"
    """Removed to make room or to fit a lowered budget."""
    STALE = "stale"
    """Stored, but not reusable: a run-time dependency it recorded changed (named in the
    reason), so the node computes again."""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """One helix node in one version: identity, decision and measured costs."""

    key: str
    name: str
    signature: str
    code: str
    args: Mapping[str, str]
    parents: tuple[str, ...]
    decision: Decision
    compute_seconds: float | None = None
    load_seconds: float | None = None
    write_seconds: float | None = None
    nbytes: int | None = None
    materialization: Materialization | None = None
    reason: str = ""
    estimated_compute_seconds: float = 0.0
    arg_values: Mapping[str, str] = field(default_factory=dict)
    metrics: Mapping[str, float] | None = None
    label: str = ""
    """A name the user gave this call (``hx_name=``); '' when none."""
    identity: str = ""
    """The effective signature its artifact is stored and loaded under (static signature plus
    verified run-time dependencies); '' when it is the signature or was never settled."""
    label: str = ""
    """The name the user gave this call (``hx_name=``), '' when none: it names the node in
    tables and pictures and identifies it across versions."""

    @property
    def stored_as(self) -> str:
        """The artifact identity of this node's result: ``identity`` or else ``signature``."""
        return self.identity or self.signature


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One materializer event with its numbers: stored, skipped, no_space, failed or evicted."""

    time: float
    version: int | None
    kind: str
    signature: str
    name: str
    nbytes: int | None
    reason: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}-{self.signature[:8]}: {self.reason}"


@dataclass(frozen=True, slots=True)
class RunReport:
    """What one compute through helix did: the version id, every node's state and the savings.

    ``time_saved`` is the estimated compute time of loaded and pruned nodes minus the time spent
    loading; ``status`` is ``"running"`` until every node finished and every write committed.
    """

    version: int
    workflow: str
    started: float
    finished: float | None
    status: str
    nodes: tuple[NodeRecord, ...] = field(default_factory=tuple)
    time_saved: float = 0.0
    message: str = ""
    predicted_seconds: float | None = None
    """What the plan expected its computes and loads to take, before it ran."""
    measured_seconds: float | None = None
    """What those computes and loads took, as measured by the workers."""
    events: tuple[EventRecord, ...] = field(default_factory=tuple)

    def __repr__(self) -> str:
        return f"<RunReport {self.summary()} ({self.status})>"

    def names(self) -> dict[str, str]:
        """Key -> readable name of every node: the task name, or for a task used more than once
        its label or lineage (``score(train(model='rf'))``), so repeated tasks are told apart."""
        from ._lineage import node_names

        return node_names(self.nodes)

    def by_decision(self, decision: Decision) -> list[str]:
        """Names of the nodes with ``decision`` (see :meth:`names`), sorted."""
        names = self.names()
        return sorted(names[n.key] for n in self.nodes if n.decision is decision)

    @property
    def computed(self) -> list[str]:
        return self.by_decision(Decision.COMPUTE)

    @property
    def loaded(self) -> list[str]:
        return self.by_decision(Decision.LOAD)

    @property
    def pruned(self) -> list[str]:
        return self.by_decision(Decision.PRUNE)

    @property
    def stored(self) -> list[str]:
        names = self.names()
        return sorted(
            names[n.key] for n in self.nodes if n.materialization is Materialization.STORED
        )

    def node(self, name: str) -> NodeRecord:
        """The record of the node called ``name`` (its readable name, label or task name);
        KeyError if absent or ambiguous."""
        names = self.names()
        found = [n for n in self.nodes if names[n.key] == name]
        found = found or [n for n in self.nodes if name in (n.label, n.name)]
        if len(found) != 1:
            raise KeyError(
                f"{len(found)} nodes named {name!r} in version {self.version}; expected one of "
                f"{sorted(names.values())}"
            )
        return found[0]

    def summary(self) -> str:
        """One line: counts per decision and the time saved (and the status unless done)."""
        status = "" if self.status == RunStatus.DONE else f" ({self.status})"
        return (
            f"v{self.version}{status}: computed {len(self.computed)}, "
            f"loaded {len(self.loaded)}, "
            f"pruned {len(self.pruned)}, stored {len(self.stored)}, "
            f"saved ~{self.time_saved:.2f}s"
        )

    def _repr_html_(self) -> str:
        """A small table for notebooks: every node's decision, materialization and costs."""
        from html import escape

        def secs(value: float | None) -> str:
            return "" if value is None else f"{value:.3f}s"

        names = self.names()
        rows = "".join(
            f"<tr><td>{escape(names[n.key])}</td><td>{n.decision}</td>"
            f"<td>{n.materialization or ''}</td><td>{secs(n.compute_seconds)}</td>"
            f"<td>{secs(n.load_seconds)}</td><td>{'' if n.nbytes is None else n.nbytes}</td>"
            f"<td>{escape(n.reason)}</td></tr>"
            for n in sorted(self.nodes, key=lambda n: (names[n.key], n.key))
        )
        return (
            f"<div><b>{escape(self.summary())}</b> ({escape(self.status)}"
            f"{', ' + escape(repr(self.message)) if self.message else ''})<table>"
            "<tr><th>node</th><th>decision</th><th>materialization</th><th>compute</th>"
            "<th>load</th><th>bytes</th><th>reason</th></tr>" + rows + "</table></div>"
        )


def report_to_dict(report: RunReport) -> dict:
    """Plain data (str enums, lists) for sending a report over a Dask comm or as JSON.

    Field by field rather than ``dataclasses.asdict``, which deep-copies every value: a report
    of 100k nodes is converted in a fraction of the time."""
    node_fields = _field_names(NodeRecord)
    d = {name: getattr(report, name) for name in _field_names(RunReport)}
    d["nodes"] = [_node_to_dict(n, node_fields) for n in report.nodes]
    event_fields = _field_names(EventRecord)
    d["events"] = [{name: getattr(e, name) for name in event_fields} for e in report.events]
    return d


def _node_to_dict(node: NodeRecord, names: tuple[str, ...]) -> dict[str, Any]:
    n = {name: getattr(node, name) for name in names}
    n["decision"] = str(node.decision)
    n["materialization"] = str(node.materialization) if node.materialization else None
    n["parents"] = list(node.parents)
    n["args"] = dict(node.args)
    n["arg_values"] = dict(node.arg_values)
    n["metrics"] = dict(node.metrics) if node.metrics is not None else None
    return n


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    from dataclasses import fields

    return tuple(f.name for f in fields(cls))


def report_from_dict(d: Mapping[str, Any]) -> RunReport:
    """Rebuild a RunReport sent by the scheduler's ``helix_run`` handler
    (:meth:`~helix_dask._client_handlers.ClientHandlers.handle_run`)."""
    nodes = tuple(
        NodeRecord(
            **{
                **n,
                "decision": Decision(n["decision"]),
                "materialization": Materialization(n["materialization"])
                if n["materialization"]
                else None,
                "parents": tuple(n["parents"]),
            }
        )
        for n in d["nodes"]
    )
    from dataclasses import fields as dc_fields

    fields = {f.name for f in dc_fields(RunReport)}
    events = tuple(EventRecord(**e) for e in d.get("events", ()))
    rest = {k: v for k, v in d.items() if k in fields and k not in ("nodes", "events")}
    return RunReport(**rest, nodes=nodes, events=events)
