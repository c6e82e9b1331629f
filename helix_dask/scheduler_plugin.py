"""The scheduler half: :class:`HelixSchedulerPlugin`, whose thin hooks hand each graph with
helix tasks to the graph intake (plan, record, rewrite), task transitions to run progress, the
worker twin's offers and write reports to the offers, and clients' calls to the client
handlers. It owns the catalog, the storage ledger and the run book they share, and installs the
worker twin. Catalog writes go through a write queue (one thread)."""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import threading
import weakref
from typing import TYPE_CHECKING, Any

from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.protocol.pickle import dumps

from ._client_handlers import ClientHandlers
from ._config import catalog_timeout
from ._events import RunStatus
from ._eviction import Eviction
from ._flow import MaterializationFlow
from ._intake import GraphIntake
from ._ledger import StorageLedger
from ._location import catalog_dir
from ._offers import Offers
from ._owner import Owner, new_owner, retire
from ._progress import Progress
from ._run import RunBook
from ._settings import Settings
from ._write_queue import WriteQueue
from .catalog import CatalogWriter
from .costs import CostModel
from .materializer import StorageLimits
from .worker_plugin import OFFER, VERDICT, WRITTEN, HelixWorkerPlugin

if TYPE_CHECKING:
    from distributed.scheduler import Scheduler

logger = logging.getLogger("helix_dask")

PLUGIN_NAME = "helix"

_STARTED: weakref.WeakSet[HelixSchedulerPlugin] = weakref.WeakSet()
"""Plugin instances started in this process and not closed (to retire a replaced one)."""


class HelixSchedulerPlugin(SchedulerPlugin):
    """Plans, rewrites and records every graph that contains helix tasks.

    Settings not given are read from ``helix.*`` in the scheduler's dask.config when the plugin
    starts (where the store is), with code defaults when unset. Graphs without helix tasks pass
    through untouched.
    """

    name = PLUGIN_NAME

    def __init__(
        self,
        store: str | None = None,
        budget: int | str | None = None,
        policy: str | None = None,
        workflow: str | None = None,
        solver: str | None = None,
    ) -> None:
        self.requested = Settings.requested(store, budget, policy, workflow, solver)

    def settings(self) -> tuple[str, str, str, str, str]:
        """The settings in force: store, budget (as configured), policy, workflow, solver."""
        return self.resolved.as_tuple()

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self, scheduler: Scheduler) -> None:
        threading.Thread(target=_warm_planner, name="helix-warm", daemon=True).start()
        self.scheduler = scheduler
        self.resolved = s = self.requested.resolve()
        self.store, self.budget, self.workflow, self.solver = s.store, s.bytes, s.workflow, s.solver
        self.policy_name, self.policy = s.policy, s.policy_object()
        self.owner: Owner = new_owner()
        await _retire_replaced(scheduler, self)
        _STARTED.add(self)
        self._open_catalog()
        # Imported here: the client only pickles this plugin, and Zarr takes 0.2 s to import.
        from ._scheduler_api import install_handlers
        from ._store_access import open_store
        from .dashboard import install_routes

        self.artifacts = open_store(self.store)
        self.artifacts.sweep_temporaries()  # writes a killed worker left behind
        self.ledger = StorageLedger(self.budget, self.catalog.artifacts())
        self.book = RunBook()
        self._model: CostModel | None = None
        self.eviction = Eviction(
            self.ledger, self.book, self.catalog, self.writer, self.artifacts, scheduler
        )
        self.flow = MaterializationFlow(
            self.policy, self.ledger, self.book, scheduler, self.cost_model, self.eviction.evict
        )
        self.progress = Progress(self.book, self.ledger, self.writer)
        self.offers = Offers(
            scheduler,
            self.book,
            self.ledger,
            self.flow,
            self.progress,
            self.writer,
            self.artifacts,
            self.policy,
            self.policy_name,
            self.budget,
        )
        self.intake = GraphIntake(
            scheduler,
            s,
            self.policy,
            self.owner,
            self.catalog,
            self.writer,
            self.ledger,
            self.artifacts,
            self.book,
            self.cost_model,
        )
        self.clients = ClientHandlers(
            s, self.book, self.ledger, self.catalog, self.writer, self.intake.digests
        )
        # Offers and write reports come on the workers' streams: routed to whichever helix
        # plugin is installed when they arrive (an unknown op would close the stream).
        scheduler.stream_handlers[OFFER] = functools.partial(_route, scheduler, "handle_offer")
        scheduler.stream_handlers[WRITTEN] = functools.partial(_route, scheduler, "handle_written")
        scheduler.handlers.update(self.clients.handlers())
        install_handlers(scheduler, self)  # catalog reads and the pickle key, for elsewhere
        # Sent by hx.last_run on the client's stream, after its graphs: ordered behind them.
        scheduler.stream_handlers["helix-mark"] = self.clients.handle_mark
        await scheduler.register_worker_plugin(
            None,
            dumps(HelixWorkerPlugin(self.store, StorageLimits(*self.limits()))),
            name=PLUGIN_NAME,
            idempotent=False,
        )
        logger.info(
            "helix store %s, budget %d bytes, policy %s", self.store, self.budget, self.policy_name
        )
        self.eviction.fit_budget(lambda: self.flow.stored_values(self.cost_model(refit=True)))
        await self.writer.drained()  # hx.setup returns once the store fits its budget
        install_routes(scheduler, self)
        self._closed = False

    def _open_catalog(self) -> None:
        """Two connections: the event loop's (reads, and recording a version before its graph
        is rewritten, waiting at most ``helix.catalog-timeout``) and the write queue's; then
        versions whose owner is gone are marked interrupted."""
        where = catalog_dir(self.store)
        self.catalog = CatalogWriter(where, timeout=catalog_timeout())
        self.writer = WriteQueue(CatalogWriter(where))
        try:
            gone = self.catalog.interrupt_dead_versions()
        except sqlite3.Error as e:
            logger.warning("helix could not check for versions left running: %s", e)
        else:
            if gone:
                logger.warning(
                    "helix marked versions %s interrupted: the scheduler running them is gone",
                    ", ".join(f"v{v}" for v in gone),
                )

    async def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        _STARTED.discard(self)
        for run in list(self.book.running()):
            self.progress.finish(run, RunStatus.INTERRUPTED)
        await asyncio.to_thread(self.writer.close)
        retire(self.owner)
        self.writer.catalog.close()
        self.catalog.close()

    def cost_model(self, refit: bool = False) -> CostModel:
        """The cost model of the current plan (refit from the catalog once per plan)."""
        if self._model is None or refit:
            from .planning import cost_model

            self._model = cost_model(self.catalog, self.ledger, self.workflow, self.store)
        return self._model

    # -- hooks ----------------------------------------------------------------------------------

    def update_graph(
        self,
        scheduler: Scheduler,
        *,
        client: str,
        keys: set,
        tasks: list,
        stimulus_id: str,
        **kwargs: Any,
    ) -> None:
        run = self.intake.open(client, keys, tasks, stimulus_id, self.solver)
        if run is None:
            return
        self.book.open(run, client)
        if run.pending == 0:
            self.progress.finish(run)

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "forgotten":
            self.book.producers.pop(key, None)
        if key in self.book.watch:
            self.progress.transition(key, start, finish, kwargs)

    def remove_worker(self, scheduler: Scheduler, worker: str, **kwargs: Any) -> None:
        """A worker left: the writes it had accepted will never report."""
        self.offers.worker_left(worker)

    def handle_offer(self, **msg: Any) -> None:
        """A worker finished a helix task (see :meth:`~helix_dask._offers.Offers.offer`)."""
        self.offers.offer(**msg)

    def handle_written(self, **msg: Any) -> None:
        """A worker finished writing (see :meth:`~helix_dask._offers.Offers.written`)."""
        self.offers.written(**msg)

    def handle_info(self) -> dict[str, Any]:
        """Where the store is and how full it is (what ``helix_info`` answers)."""
        return self.clients.handle_info()

    def limits(self) -> list[Any]:
        """The :class:`~helix_dask.materializer.StorageLimits` workers decide alone with."""
        return self.offers.limits()

    def leftovers(self) -> dict[str, Any]:
        """What is still held after every compute finished: empty when the plugin drained."""
        out: dict[str, Any] = {}
        if self.ledger.reserved:
            out["reserved_bytes"] = self.ledger.reserved
        running = [r.version for r in self.book.running()]
        if running:
            out["unfinished_runs"] = running
        if self.book.watch:
            out["watched_keys"] = sorted(self.book.watch)[:20]
        if self.book.writing:
            out["writes"] = sorted(self.book.writing)[:20]
        return out


def _route(scheduler: Scheduler, handler: str, **msg: Any) -> None:
    """Hand a worker's stream message to the helix plugin; without one, let a held result go."""
    plugin = scheduler.plugins.get(PLUGIN_NAME)
    method = getattr(plugin, handler, None)
    if method is not None:
        method(**msg)
    elif msg.get("offer") is not None and msg.get("worker") in scheduler.stream_comms:
        scheduler.stream_comms[msg["worker"]].send(
            {"op": VERDICT, "offer": msg["offer"], "store": False}
        )


async def _retire_replaced(scheduler: Scheduler, new: HelixSchedulerPlugin) -> None:
    """Close the plugins of this scheduler that another ``hx.setup`` replaced (distributed
    removes them without closing them): their runs end as interrupted, their writes apply."""
    for old in list(_STARTED):
        if old is not new and old.scheduler is scheduler and old.name not in scheduler.plugins:
            await old.close()


def _warm_planner() -> None:
    """Import the min-cut solver off the first plan's critical path (1-4 s for scipy)."""
    try:
        import scipy.sparse.csgraph  # noqa: F401
    except ImportError:  # networkx solver only
        pass
