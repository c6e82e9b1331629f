"""helix_dask: HELIX-style reuse for iterative machine-learning workflows on Dask.

Decorate functions with :func:`task`, call :func:`setup` on a cluster, and compute as usual:
unchanged steps are loaded from Zarr or pruned, changed ones recompute, every run is a version.
"""

from __future__ import annotations

from typing import Any

from . import _config  # noqa: F401  (registers the helix.* defaults in dask.config)
from ._errors import (
    HelixConfigError,
    HelixConfigWarning,
    HelixCorruptArtifact,
    HelixError,
    HelixSignatureError,
    HelixStoreError,
    HelixTaskError,
)
from ._events import Decision, Materialization, NodeRecord, RunReport
from .catalog import Catalog
from .signature import File
from .task import HelixNode, HelixTask, task

__all__ = [
    "Catalog",
    "Decision",
    "File",
    "HelixConfigError",
    "HelixConfigWarning",
    "HelixCorruptArtifact",
    "HelixError",
    "HelixNode",
    "HelixSchedulerPlugin",
    "HelixSignatureError",
    "HelixStoreError",
    "HelixTask",
    "HelixTaskError",
    "HelixWorkerPlugin",
    "Materialization",
    "NodeRecord",
    "RunReport",
    "last_run",
    "preview",
    "setup",
    "task",
]

__version__ = "0.1.0"


_LAZY = {
    "setup": "client",
    "last_run": "client",
    "HelixSchedulerPlugin": "scheduler_plugin",
    "HelixWorkerPlugin": "worker_plugin",
    "preview": "planning",
}
"""Names whose modules import distributed: loaded on first use, so the CLI starts fast."""


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def dask_setup(service: Any) -> None:
    """Preload hook: ``dask scheduler --preload helix_dask`` installs the scheduler plugin with
    the settings under ``helix.*`` (for example ``DASK_HELIX__STORE=/shared/helix``)."""
    from distributed import Scheduler

    from .scheduler_plugin import HelixSchedulerPlugin

    if isinstance(service, Scheduler):
        service.add_plugin(HelixSchedulerPlugin(), name=HelixSchedulerPlugin.name)
