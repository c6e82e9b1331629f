"""The worker half: measures each helix task where it ran and writes the artifacts the
scheduler plugin asks for, off the task's critical path."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from dask import is_dask_collection
from distributed.diagnostics.plugin import WorkerPlugin

from ._errors import HelixStoreError
from ._keys import withdraw_key
from ._trace import Scopes, covered, requirement_digests, take_outdated, take_trace
from ._wire import ANNOTATION
from .costs import compute_seconds

if TYPE_CHECKING:
    from distributed import Worker

    from .store import ArtifactInfo, ZarrArtifactStore

logger = logging.getLogger("helix_dask")


class HelixWorkerPlugin(WorkerPlugin):
    """Offers every finished helix result to the scheduler plugin and writes what it accepts.

    The result stays referenced by the write until it is committed, so the worker may release
    the key meanwhile; downstream tasks never wait for a write.
    """

    name = "helix"

    def __init__(self, store: str) -> None:
        self.store = store
        self._pending: set[asyncio.Task[None]] = set()

    async def setup(self, worker: Worker) -> None:
        from ._scheduler_api import adopt_key  # with the catalog: not imported with the plugin

        self.worker = worker
        self._artifacts: ZarrArtifactStore | None = None
        # The scheduler's key, not a file on this machine: workers elsewhere share no home.
        self._key = await adopt_key(worker, self.store)

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
        if getattr(self, "_key", False):
            withdraw_key(self.store)

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if start not in ("executing", "long-running") or finish != "memory":
            return  # a task that seceded (worker_client) finishes from long-running
        ts = self.worker.state.tasks.get(key)
        ann = ts.annotations.get(ANNOTATION) if ts is not None and ts.annotations else None
        if ann is None or key not in self.worker.data:
            return
        seconds = compute_seconds(ts.startstops)
        value = self.worker.data[key]
        nbytes = int(getattr(value, "nbytes", 0)) if is_dask_collection(value) else ts.nbytes or 0
        metrics = _metrics(value) if ann.get("metrics") else None
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
            trace = _OUTDATED  # the offer says which code differed
        task = asyncio.ensure_future(
            self._offer(key, ann, value, seconds, nbytes, metrics, trace, outdated)
        )
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

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

    async def _offer(
        self,
        key: str,
        ann: dict[str, Any],
        value: object,
        seconds: float,
        nbytes: int,
        metrics: dict[str, float] | None,
        trace: Scopes | None,
        outdated: str | None = None,
    ) -> None:
        scheduler = self.worker.scheduler
        name = ann["name"]
        try:
            try:
                requires, traced = await _requirements(ann, trace)
            except Exception:  # a dependency that cannot be digested: never stored
                logger.warning("helix could not digest what %s required", key, exc_info=True)
                requires, traced = None, None
            answer = await scheduler.helix_offer(
                key=key,
                signature=ann["signature"],
                compute_seconds=seconds,
                nbytes=nbytes,
                metrics=metrics,
                requires=requires,
                traced=traced,
                worker=self.worker.address,
                outdated=outdated,
            )
            if not answer.get("store"):
                return
            signature = answer["signature"]  # the effective signature: static + requirements
            reserved = answer["reserved"]
            try:
                info = await asyncio.to_thread(self._put, signature, value, name)
            except HelixStoreError as e:
                await scheduler.helix_written(
                    key=key, signature=signature, reserved=reserved, ok=False, error=str(e)
                )
                return
            await scheduler.helix_written(
                key=key,
                signature=signature,
                reserved=reserved,
                ok=True,
                location=info.location,
                kind=info.kind,
                nbytes=info.nbytes,
                seconds=info.seconds,
            )
            logger.debug("stored %s (%d bytes) in %.3fs", key, info.nbytes, info.seconds)
        except OSError:
            logger.warning("helix could not report %s to the scheduler", key, exc_info=True)


_OUTDATED: Any = object()
"""Stands for the trace of a result computed by code other than the client's."""


async def _requirements(
    ann: dict[str, Any], trace: Scopes | None
) -> tuple[dict[str, str] | None, list[str] | None]:
    """What a node's result required beyond its static signature, with digests taken here
    (where the code ran), and the dependencies its trace found (``None``: not traced)."""
    if trace is _OUTDATED:
        return None, None  # not what the client signed: never stored
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
