"""The client façade: ``hx.setup`` installs the plugin pair; ``hx.last_run`` reports a run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from distributed import Client, LocalCluster

from . import _config
from ._events import RunReport, report_from_dict
from .scheduler_plugin import PLUGIN_NAME, HelixSchedulerPlugin

_embedded: Client | None = None


def setup(
    client: Client | None = None,
    store: str | os.PathLike[str] | None = None,
    *,
    budget: int | str | None = None,
    policy: str | None = None,
    workflow: str | None = None,
    storage_options: dict | None = None,
) -> Client:
    """Register the helix scheduler plugin (and, through it, the worker plugin) on a cluster.

    Parameters
    ----------
    client
        A connected ``distributed.Client``. None starts (or reuses) an embedded in-process
        ``LocalCluster`` and returns its client.
    store
        Directory for the catalog and the Zarr artifacts, which every worker must see at the
        same path, or an fsspec URL such as ``"s3://bucket/prefix"`` (the catalog then stays on
        the scheduler's machine, see ``helix.catalog``). Default: ``helix.store`` from
        dask.config (``./.helix``).
    budget
        Storage budget in bytes or as a size string (``"10 GiB"``); never exceeded.
        Default: a quarter of the store disk's free space.
    policy
        Materialization policy name: ``"helix2x"`` (default), ``"all"`` or ``"none"``.
    workflow
        Name recorded with each version (default: the running script's name).
    storage_options
        fsspec options of a store URL (``endpoint_url``, ``key``, ``secret``...), given to the
        scheduler and to every worker; default ``helix.storage-options`` from dask.config.

    Examples
    --------
    >>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))  # doctest: +SKIP
    >>> hx.setup(client, store="./.helix")                                # doctest: +SKIP
    """
    global _embedded
    if client is None:
        if _embedded is None or _embedded.status != "running":
            _embedded = Client(LocalCluster(processes=False, dashboard_address=":0"))
        client = _embedded
    if workflow is None:
        script = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else ""
        workflow = script or None
    if storage_options is not None:
        from ._fsspec_store import share_options
        from ._location import store_location

        share_options(client, store_location(store or str(_config.get("store"))), storage_options)
    plugin = HelixSchedulerPlugin(
        store=None if store is None else os.fspath(store),
        budget=budget,
        policy=policy,
        workflow=workflow,
    )
    installed = client.run_on_scheduler(_installed_settings)
    if installed == list(plugin.settings()):
        return client  # the same settings: keep the running plugin and what it has measured
    if installed is not None:
        client.unregister_scheduler_plugin(PLUGIN_NAME)  # new settings replace the old ones
    client.register_plugin(plugin, name=PLUGIN_NAME)
    return client


def _installed_settings(dask_scheduler) -> list | None:
    plugin = dask_scheduler.plugins.get(PLUGIN_NAME)
    return None if plugin is None else list(plugin.settings())


def last_run(client: Client | None = None, *, timeout: float = 60.0) -> RunReport | None:
    """The report of the client's most recent compute with helix tasks, once it has finished
    (every node done and every write committed); None before the first one.

    Examples
    --------
    >>> out.compute()                                   # doctest: +SKIP
    >>> hx.last_run(client).summary()                   # doctest: +SKIP
    'v2: computed 1, loaded 1, pruned 2, stored 1, saved ~8.10s'
    """
    client = client or Client.current()
    d = client.sync(client.scheduler.helix_run, client=client.id, timeout=timeout)
    return None if d is None else report_from_dict(d)
