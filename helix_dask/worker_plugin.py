"""The worker half: measures each helix task where it ran and writes the artifacts the
scheduler plugin asks for, off the task's critical path."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import sys
from typing import TYPE_CHECKING, Any

from dask import is_dask_collection
from distributed.diagnostics.plugin import WorkerPlugin

from ._errors import HelixStoreError
from ._events import Materialization
from ._trace import Scopes, covered, requirement_digests, take_outdated, take_trace
from ._wire import ANNOTATION
from .costs import compute_seconds
from .materializer import StorageLimits

if TYPE_CHECKING:
    from distributed import Worker

    from .store import ArtifactInfo, ZarrArtifactStore

logger = logging.getLogger("helix_dask")


class HelixWorkerPlugin(WorkerPlugin):
    """Offers every finished helix result to the scheduler plugin and writes what it accepts.

    Offers and their verdicts travel on the worker's batched stream (no connection per task).
    A result that no verdict could store (see :class:`~helix_dask.materializer.StorageLimits`)
    is never held: its offer only reports what the scheduler needs to settle its identity,
    and the worker releases it as plain Dask would. Any other result is held until its verdict
    and, when accepted, until its write commits (written as it is, never copied); downstream
    tasks never wait for a write.
    """

    name = "helix"

    def __init__(self, store: str, limits: StorageLimits | None = None) -> None:
        self.store = store
        # Without limits (an older scheduler twin), every result is offered and held.
        self.limits = limits or StorageLimits("value", True, sys.maxsize, sys.maxsize)
        self._pending: set[asyncio.Task[None]] = set()

    def setup(self, worker: Worker) -> None:
        self.worker = worker
        self._artifacts: ZarrArtifactStore | None = None
        # Routed by offer id, not by plugin: a verdict can arrive after hx.setup replaced us.
        worker.stream_handlers[VERDICT] = functools.partial(_on_verdict, worker)

    @property
    def artifacts(self) -> ZarrArtifactStore:
        """The store, opened on the first write: importing Zarr takes a few tenths of a second,
        which registering the plugin (``hx.setup``) should not wait for."""
        if self._artifacts is None:
            from .store import open_store

            self._artifacts = open_store(self.store)  # a local directory or a URL
        return self._artifacts

    async def teardown(self, worker: Worker) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if start not in ("executing", "long-running") or finish != "memory":
            return  # a task that seceded (worker_client) finishes from long-running
        ts = self.worker.state.tasks.get(key)
        ann = ts.annotations.get(ANNOTATION) if ts is not None and ts.annotations else None
        if ann is None or key not in self.worker.data:
            return
        value = self.worker.data[key]
        nbytes = int(getattr(value, "nbytes", 0)) if is_dask_collection(value) else ts.nbytes or 0
        offer: dict[str, Any] = {
            "op": OFFER,
            "key": key,
            "signature": ann["signature"],
            "compute_seconds": compute_seconds(ts.startstops),
            "nbytes": nbytes,
            "metrics": _metrics(value) if ann.get("metrics") else None,
        }
        trace = take_trace(key)
        outdated = take_outdated(key)
        if outdated is not None:
            logger.warning(
                "helix: this worker ran %s in another version than the client signed (a module "
                "loaded before it was edited); the result of %s is not stored. Restart the "
                "workers to load the current code",
                outdated,
                key,
            )
            # Not what the client signed: never stored, so never held; the offer says which
            # code differed, and nothing it required is digested.
            offer["outdated"], offer["requires"], offer["traced"] = outdated, None, None
            offer["skip"] = [Materialization.SKIPPED.value, f"worker ran {outdated} outdated"]
            self.worker.batched_send(offer)
            return
        never = self.limits.never(nbytes, ann.get("materialize"), ann.get("deterministic", True))
        if never is None:
            offer["offer"] = _hold(self, key, value, ann["name"])
        else:
            offer["skip"] = [never.outcome.value, never.reason]
        del value  # a result that cannot be stored is not kept alive by its offer
        if trace is None and not ann.get("deps"):
            offer["requires"], offer["traced"] = {}, None
            self.worker.batched_send(offer)  # nothing to digest: no coroutine
            return
        task = asyncio.ensure_future(self._offer(offer, ann, trace))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _offer(
        self, offer: dict[str, Any], ann: dict[str, Any], trace: Scopes | None
    ) -> None:
        """Digest what the result required where it ran, then send the offer."""
        try:
            offer["requires"], offer["traced"] = await _requirements(ann, trace)
        except Exception:  # a dependency that cannot be digested: never stored
            logger.warning("helix could not digest what %s required", offer["key"], exc_info=True)
            offer["requires"], offer["traced"] = None, None
        self.worker.batched_send(offer)

    def _put(self, signature: str, value: object, name: str) -> ArtifactInfo:
        """Runs in a plain thread: a dask array's chunk writes run as tasks on this cluster."""
        scheduler = None
        if is_dask_collection(value):
            scheduler = self.worker.client
            if scheduler.status in ("closing", "closed"):
                # In-process workers adopt the user's client, which may have closed since.
                self.worker._client = None
                scheduler = self.worker.client
        return self.artifacts.put(signature, value, name=name, scheduler=scheduler)

    def verdict(self, key: str, value: object, name: str, answer: dict[str, Any]) -> None:
        """The scheduler's answer to an offer whose result was held: write it, or let it go."""
        limits = answer.get("limits")
        if limits is not None:
            self.limits = StorageLimits(*limits)
        if not answer.get("store"):
            return
        task = asyncio.ensure_future(
            self._write(key, answer["signature"], answer["reserved"], value, name)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(
        self, key: str, signature: str, reserved: int, value: object, name: str
    ) -> None:
        report: dict[str, Any] = {
            "op": WRITTEN,
            "key": key,
            "signature": signature,
            "reserved": reserved,
        }
        try:
            info = await asyncio.to_thread(self._put, signature, value, name)
        except HelixStoreError as e:
            self.worker.batched_send({**report, "ok": False, "error": str(e)})
            return
        del value
        self.worker.batched_send(
            {
                **report,
                "ok": True,
                "location": info.location,
                "kind": info.kind,
                "nbytes": info.nbytes,
                "seconds": info.seconds,
            }
        )
        logger.debug("stored %s (%d bytes) in %.3fs", key, info.nbytes, info.seconds)


OFFER = "helix-offer"
"""Stream op: a worker finished a helix task (worker -> scheduler)."""
VERDICT = "helix-verdict"
"""Stream op: whether to store a held result (scheduler -> worker)."""
WRITTEN = "helix-written"
"""Stream op: an accepted result was written, or could not be (worker -> scheduler)."""

_held: dict[int, tuple[HelixWorkerPlugin, str, object, str]] = {}
"""Offer id -> the plugin, key, result and task name of a result awaiting its verdict."""
_offer_ids = itertools.count()


def _hold(plugin: HelixWorkerPlugin, key: str, value: object, name: str) -> int:
    offer = next(_offer_ids)
    _held[offer] = (plugin, key, value, name)
    return offer


def _on_verdict(worker: Worker, offer: int, **answer: Any) -> None:
    held = _held.pop(offer, None)
    if held is not None:
        plugin, key, value, name = held
        plugin.verdict(key, value, name, answer)


async def _requirements(
    ann: dict[str, Any], trace: Scopes | None
) -> tuple[dict[str, str] | None, list[str] | None]:
    """What a node's result required beyond its static signature, with digests taken here
    (where the code ran), and the dependencies its trace found (``None``: not traced)."""
    if trace is None:
        deps: Scopes | dict[str, None] = dict.fromkeys(ann.get("deps") or ())
    else:
        sources = [*(ann.get("sources") or {}), *(ann.get("covers") or ())]
        packages = ann.get("packages") or {}
        deps = await asyncio.to_thread(
            lambda: {d: s for d, s in trace.items() if not covered(d, sources, packages)}
        )
    if not deps:
        return {}, None if trace is None else []
    scopes = {d: s for d, s in deps.items() if s is not None}
    requires = await asyncio.to_thread(requirement_digests, list(deps), scopes)
    return requires, None if trace is None else list(deps)


def _metrics(value: object) -> dict[str, float] | None:
    """The numbers of a metrics task's result dict (non-numbers are left out)."""
    if not isinstance(value, dict):
        logger.warning("metrics task returned %s, not a dict of numbers", type(value).__name__)
        return None
    out = {}
    for k, v in value.items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            continue
    return out
