"""The client façade: ``hx.setup`` installs the plugin pair; ``hx.last_run`` reports a run."""

from __future__ import annotations

import os
import sys
import uuid
import warnings
from dataclasses import replace
from pathlib import Path

from distributed import Client, LocalCluster

from . import _config
from ._errors import HelixConfigWarning, HelixError
from ._events import RunReport, report_from_dict
from ._settings import Settings
from ._submit import _PLUGIN_SEEN
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
        the scheduler's machine, see ``helix.catalog``). Default: ``helix.store`` in the
        scheduler's dask.config (``./.helix`` relative to the scheduler's working directory).
    budget
        Storage budget in bytes (an int) or as a size string (``"10 GiB"``); never exceeded.
        Default: a quarter of the free space of the store's disk, measured on the scheduler.
    policy
        Materialization policy name: ``"value"`` (default), ``"helix2x"``, ``"all"`` or
        ``"none"``.
    workflow
        Name recorded with each version (default: the running script's name).
    storage_options
        fsspec options of a store URL (``endpoint_url``, ``key``, ``secret``...), given to the
        scheduler and to every worker; default ``helix.storage-options`` from dask.config.

    Settings not given are resolved on the scheduler, where the store is. On a cluster whose
    scheduler already runs the helix plugin (``--preload helix_dask``, an earlier
    ``hx.setup``), settings not given keep the cluster's; settings that differ replace the
    plugin with a ``HelixConfigWarning`` naming both values.

    Examples
    --------
    >>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))  # doctest: +SKIP
    >>> hx.setup(client, store="./.helix")                                # doctest: +SKIP
    """
    global _embedded
    if client is None:
        if _embedded is None or _embedded.status != "running":
            # Loopback only: the dashboard shows argument values and code to whoever reaches it.
            _embedded = Client(LocalCluster(processes=False, dashboard_address="127.0.0.1:0"))
        client = _embedded
    requested = Settings.requested(store, budget, policy, workflow)  # checked here, resolved there
    _PLUGIN_SEEN.pop(client.id, None)  # computes ask the scheduler again
    if storage_options is not None:
        from ._location import store_location
        from ._storage_options import share_options

        share_options(client, store_location(store or str(_config.get("store"))), storage_options)
    installed = client.run_on_scheduler(_installed_settings)
    if installed is not None:
        conflicts = requested.conflicts(installed)
        if not conflicts:
            return client  # keep the running plugin, its settings and what it has measured
        warnings.warn(
            "hx.setup replaces the helix plugin on this cluster: "
            + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in conflicts.items())
            + "; call hx.setup without these settings to keep the cluster's",
            HelixConfigWarning,
            stacklevel=2,
        )
        requested = requested.merged(installed)
        client.unregister_scheduler_plugin(PLUGIN_NAME)
    elif requested.workflow is None:
        script = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else ""
        requested = replace(requested, workflow=script or None)
    plugin = HelixSchedulerPlugin(
        requested.store, requested.budget, requested.policy, requested.workflow, requested.solver
    )
    client.register_plugin(plugin, name=PLUGIN_NAME)
    return client


def _installed_settings(dask_scheduler) -> Settings | None:
    plugin = dask_scheduler.plugins.get(PLUGIN_NAME)
    return None if plugin is None else plugin.resolved


def last_run(client: Client | None = None, *, timeout: float = 60.0) -> RunReport | None:
    """The report of the client's most recent compute with helix tasks, once it has finished
    (every node done and every write committed); None before the first one.

    Raises HelixError when the cluster has no helix plugin (call ``hx.setup`` first).

    Examples
    --------
    >>> out.compute()                                   # doctest: +SKIP
    >>> hx.last_run(client).summary()                   # doctest: +SKIP
    'v2: computed 1, loaded 1, pruned 2, stored 1, saved ~8.10s'
    """
    client = client or Client.current()
    if not client.run_on_scheduler(_has_plugin):
        raise HelixError(
            f"the cluster at {client.scheduler.address} has no helix plugin; call "
            "hx.setup(client) (or start the scheduler with --preload helix_dask) before computing"
        )
    # The mark travels on the stream that carried the client's graphs, so the scheduler
    # answers only after it has seen all of them.
    mark = uuid.uuid4().hex
    client._send_to_scheduler({"op": "helix-mark", "token": mark})
    d = client.sync(client.scheduler.helix_run, client=client.id, timeout=timeout, mark=mark)
    return None if d is None else report_from_dict(d)


def _has_plugin(dask_scheduler) -> bool:
    return PLUGIN_NAME in dask_scheduler.plugins
