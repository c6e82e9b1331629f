"""The worker half: measures each helix task where it ran and writes the artifacts the
scheduler plugin asks for, off the task's critical path."""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from dask import is_dask_collection
from dask.utils import format_bytes
from distributed.diagnostics.plugin import WorkerPlugin

from . import _config
from ._errors import HelixStoreError
from ._events import Materialization
from ._keys import withdraw_key
from ._trace import result_digest, take_outdated, take_requirements
from ._wire import ANNOTATION
from .costs import compute_seconds
from .materializer import StorageLimits

if TYPE_CHECKING:
    from distributed import Worker

    from ._store_base import ArtifactInfo
    from .store import ZarrArtifactStore

logger = logging.getLogger("helix_dask")


class HelixWorkerPlugin(WorkerPlugin):
    """Offers every finished helix result to the scheduler plugin and writes what it accepts.

    Offers and their verdicts travel on the worker's batched stream (no connection per task).
    A result that no verdict could store (see :class:`~helix_dask.materializer.StorageLimits`)
    is never held: its offer only reports what the scheduler needs to settle its identity,
    and the worker releases it as plain Dask would. Any other result is held until its verdict
    and, when accepted, until its write commits (written as it is, never copied); downstream
    tasks never wait for a write.

    Holding a result Dask has released costs memory plain Dask would not use. A result still
    awaiting its verdict when Dask releases it is let go (not stored) unless the worker can hold
    it within ``helix.worker-hold`` bytes; while released results being written exceed that,
    helix tasks on this worker wait for the writes before they start (write back-pressure).
    """

    name = "helix"

    def __init__(self, store: str, limits: StorageLimits | None = None) -> None:
        self.store = store
        # Without limits (an older scheduler twin), every result is offered and held.
        self.limits = limits or StorageLimits("value", True, sys.maxsize, sys.maxsize)
        self._pending: set[asyncio.Task[None]] = set()
        self._keeping: dict[str, _Held] = {}
        """Key -> the result kept for helix (awaiting its verdict, or being written)."""
        self._room = threading.Condition()
        self._beyond = 0
        """Bytes kept of results Dask has released (memory plain Dask would have freed)."""
        self._waited: dict[str, float] = {}
        """Key -> seconds its task waited for writes before it ran (not compute time)."""
        self.closing = False
        self.waiting = 0
        """Helix tasks waiting for the worker's writes before they run."""

    def __getstate__(self) -> dict[str, Any]:
        return {"store": self.store, "limits": self.limits}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["store"], state["limits"])

    async def setup(self, worker: Worker) -> None:
        from ._scheduler_api import adopt_key  # with the catalog: not imported with the plugin

        self.worker = worker
        self._artifacts: ZarrArtifactStore | None = None
        # Routed by offer id, not by plugin: a verdict can arrive after hx.setup replaced us.
        worker.stream_handlers[VERDICT] = functools.partial(_on_verdict, worker)
        # The scheduler's key, not a file on this machine: workers elsewhere share no home.
        self._key = await adopt_key(worker, self.store)

    @property
    def artifacts(self) -> ZarrArtifactStore:
        """The store, opened on the first write: importing Zarr takes a few tenths of a second,
        which registering the plugin (``hx.setup``) should not wait for."""
        if self._artifacts is None:
            from ._store_access import open_store

            self._artifacts = open_store(self.store)  # a local directory or a URL
        return self._artifacts

    async def teardown(self, worker: Worker) -> None:
        with self._room:
            self.closing = True
            self._room.notify_all()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        if getattr(self, "_key", False):
            withdraw_key(self.store)

    def transition(self, key: Any, start: str, finish: str, **kwargs: Any) -> None:
        if start == "memory" and finish != "memory":
            self._released(key)
            return
        if start not in ("executing", "long-running") or finish != "memory":
            return  # a task that seceded (worker_client) finishes from long-running
        ts = self.worker.state.tasks.get(key)
        ann = ts.annotations.get(ANNOTATION) if ts is not None and ts.annotations else None
        waited = self._waited.pop(key, 0.0)
        found = take_requirements(key)
        if ann is None or key not in self.worker.data:
            return
        if found is not None:
            waited += found.seconds  # digesting what it required is not computing it
        value = self.worker.data[key]
        nbytes = int(getattr(value, "nbytes", 0)) if is_dask_collection(value) else ts.nbytes or 0
        offer: dict[str, Any] = {
            "op": OFFER,
            "key": key,
            "signature": ann["signature"],
            "compute_seconds": max(compute_seconds(ts.startstops) - waited, 0.0),
            "nbytes": nbytes,
            "metrics": _metrics(value) if ann.get("metrics") else None,
        }
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
            offer["offer"] = self._hold(key, value, ann["name"], nbytes)
            self._keeping[key].digest = found.result if found is not None else None
        else:
            offer["skip"] = [never.outcome.value, never.reason]
        del value  # a result that cannot be stored is not kept alive by its offer
        if found is None:  # its call did not run here as a helix node: nothing was traced
            found_requires = {} if not ann.get("deps") else None
            offer["requires"], offer["traced"] = found_requires, None
        else:
            offer["requires"], offer["traced"] = found.requires, found.traced
        self.worker.batched_send(offer)

    def _put(
        self, signature: str, value: object, name: str, digest: str | None = None
    ) -> ArtifactInfo:
        """Runs in a plain thread: a dask array's chunk writes run as tasks on this cluster.
        ``digest``: the result's content as its task returned it; a result modified in place
        since (by whoever holds it) is not what the task computed, and is not kept."""
        info = self._write_value(signature, value, name)
        if digest is not None and result_digest(value) != digest:
            self.artifacts.delete(signature)
            raise HelixStoreError(
                f"the result of {name!r} was modified in place after its task returned (by "
                "the code that received it, or a task downstream); it is not stored. Copy a "
                "result before modifying it to keep it reusable"
            )
        return info

    def _write_value(self, signature: str, value: object, name: str) -> ArtifactInfo:
        scheduler = None
        if is_dask_collection(value):
            scheduler = self.worker.client
            if scheduler.status in ("closing", "closed"):
                # In-process workers adopt the user's client, which may have closed since.
                self.worker._client = None
                scheduler = self.worker.client
        return self.artifacts.put(signature, value, name=name, scheduler=scheduler)

    def _hold(self, key: str, value: object, name: str, nbytes: int) -> int:
        """Keep a result until its verdict; its offer id. A dask collection counts no bytes:
        it is lazy, and its chunks are computed and written by tasks on the cluster."""
        offer = next(_offer_ids)
        held = _Held(self, key, value, name, 0 if is_dask_collection(value) else nbytes, offer)
        _held[offer] = self._keeping[key] = held
        return offer

    def _released(self, key: str) -> None:
        """Dask released ``key``: what helix keeps of it now costs memory of its own."""
        held = self._keeping.get(key)
        if held is None or held.released:
            return
        held.released = True
        with self._room:
            if held.offer is not None and self._beyond + held.nbytes > self.hold_limit():
                # Awaiting a verdict: let it go as plain Dask would; the verdict is answered.
                self._keeping.pop(key, None)
                held.value = None
                return
            held.beyond = True
            self._beyond += held.nbytes

    def _let_go(self, held: _Held) -> None:
        """Helix no longer keeps ``held`` (written, refused or failed)."""
        if self._keeping.get(held.key) is held:
            del self._keeping[held.key]
        held.value = None
        if held.beyond:
            held.beyond = False
            with self._room:
                self._beyond -= held.nbytes
                self._room.notify_all()

    def wait_for_room(self, key: str) -> None:
        """In a helix task's thread, before it runs: wait while released results being written
        exceed ``helix.worker-hold`` bytes (a write that stalls is waited for a minute at
        most, then the task runs anyway)."""
        if not self._beyond:  # the common case: nothing released is kept (no lock, no config)
            return
        limit = self.hold_limit()
        with self._room:
            if self._beyond <= limit or self.closing:
                return
            t0 = time.perf_counter()
            self.waiting += 1
            try:
                self._room.wait_for(lambda: self._beyond <= limit or self.closing, WRITE_WAIT)
            finally:
                self.waiting -= 1
            self._waited[key] = time.perf_counter() - t0

    def hold_limit(self) -> int:
        """``helix.worker-hold`` in bytes on this worker, read at call time."""
        manager = getattr(self.worker, "memory_manager", None)
        return hold_limit(_config.get("worker-hold"), getattr(manager, "memory_limit", None))

    @property
    def beyond(self) -> int:
        """Bytes kept of results Dask has released."""
        return self._beyond

    def verdict(self, held: _Held, answer: dict[str, Any]) -> None:
        """The scheduler's answer to an offer whose result was held: write it, or let it go."""
        limits = answer.get("limits")
        if limits is not None:
            self.limits = StorageLimits(*limits)
        held.offer = None
        if not answer.get("store"):
            self._let_go(held)
            return
        report = {
            "op": WRITTEN,
            "key": held.key,
            "signature": answer["signature"],
            "reserved": answer["reserved"],
        }
        if held.value is None:  # released before its verdict, and let go
            hold = format_bytes(self.hold_limit())
            self.worker.batched_send(
                {
                    **report,
                    "ok": False,
                    "let_go": True,
                    "error": f"released by Dask before its verdict; holding it would exceed "
                    f"helix.worker-hold ({hold}) on this worker",
                }
            )
            return
        task = asyncio.ensure_future(self._write(held, report))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, held: _Held, report: dict[str, Any]) -> None:
        try:
            info = await asyncio.to_thread(
                self._put, report["signature"], held.value, held.name, held.digest
            )
        except HelixStoreError as e:
            self.worker.batched_send({**report, "ok": False, "error": str(e)})
            return
        finally:
            self._let_go(held)
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
        logger.debug("stored %s (%d bytes) in %.3fs", held.key, info.nbytes, info.seconds)


class _Held:
    """A result helix keeps on a worker: awaiting its verdict (``offer``), or being written."""

    __slots__ = (
        "beyond", "digest", "key", "name", "nbytes", "offer", "plugin", "released", "value"
    )  # fmt: skip

    def __init__(
        self, plugin: HelixWorkerPlugin, key: str, value: object, name: str, nbytes: int, offer: int
    ) -> None:
        self.plugin, self.key, self.value, self.name = plugin, key, value, name
        self.nbytes, self.offer = nbytes, offer
        self.released = False
        """Dask released the key."""
        self.beyond = False
        """Counted in the bytes kept beyond Dask (released, and still kept)."""
        self.digest: str | None = None
        """The result's content digest as its task returned it (None: unchecked)."""


WRITE_WAIT = 60.0
"""Seconds a helix task waits at most for the worker's writes before it runs anyway."""


def hold_limit(setting: object, memory_limit: int | None) -> int:
    """``helix.worker-hold`` in bytes: a size, or a percentage of the worker's memory limit
    (of the machine's memory when the worker has none)."""
    text = str(setting).strip()
    if not text.endswith("%"):
        return _config.parse_size(setting)
    total = memory_limit or _machine_memory()
    return int(float(text[:-1]) / 100 * total)


def _machine_memory() -> int:
    from distributed.system import MEMORY_LIMIT

    return int(MEMORY_LIMIT)


def wait_for_room(key: str) -> None:
    """Write back-pressure, called by a helix task before it runs (see
    :meth:`HelixWorkerPlugin.wait_for_room`); nothing outside a worker with the helix plugin."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    plugin = worker.plugins.get(HelixWorkerPlugin.name)
    if isinstance(plugin, HelixWorkerPlugin):
        plugin.wait_for_room(key)


OFFER = "helix-offer"
"""Stream op: a worker finished a helix task (worker -> scheduler)."""
VERDICT = "helix-verdict"
"""Stream op: whether to store a held result (scheduler -> worker)."""
WRITTEN = "helix-written"
"""Stream op: an accepted result was written, or could not be (worker -> scheduler)."""

_held: dict[int, _Held] = {}
"""Offer id -> the result awaiting its verdict."""
_offer_ids = itertools.count()


def _on_verdict(worker: Worker, offer: int, **answer: Any) -> None:
    held = _held.pop(offer, None)
    if held is not None:
        held.plugin.verdict(held, answer)


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
