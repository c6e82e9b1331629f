"""Giving every process of a cluster the storage options of a store URL: registered here, on
the scheduler, and on every worker by a worker plugin (workers that join later too)."""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from helix_dask._location import register_options

__all__ = ["StorageOptionsPlugin", "share_options"]


class StorageOptionsPlugin(WorkerPlugin):
    """Gives every worker, present and future, the storage options ``hx.setup`` was given for
    a store URL (installed by :func:`helix_dask.setup` under the name ``helix-storage``)."""

    name = "helix-storage"

    def __init__(self, location: str, options: dict[str, Any]) -> None:
        self.location = location
        self.options = dict(options)

    def setup(self, worker: Any) -> None:
        register_options(self.location, self.options)


def share_options(client: Any, location: str, options: dict[str, Any]) -> None:
    """Register ``options`` for the store at ``location`` here, on the scheduler and on every
    worker of ``client``'s cluster (workers that join later too)."""
    register_options(location, options)
    client.run_on_scheduler(_register_on_scheduler, location, dict(options))
    client.register_plugin(StorageOptionsPlugin(location, options), name=StorageOptionsPlugin.name)


def _register_on_scheduler(location: str, options: dict[str, Any], dask_scheduler: Any) -> None:
    register_options(location, options)
