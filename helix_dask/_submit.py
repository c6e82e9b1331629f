"""Before a graph is submitted: the client's digests of the run-time dependencies its stored
results require are sent to the scheduler plugin, once per submission; a compute on a cluster
without the helix plugin (or without a client) says once that it runs as plain Dask."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ._wire import ANNOTATION

if TYPE_CHECKING:
    from ._node import HelixNode

logger = logging.getLogger("helix_dask")


_PLUGIN_SEEN: dict[str, bool] = {}
"""Client id -> whether its scheduler runs the helix plugin (``hx.setup`` clears it)."""
_WARNED: set[str] = set()


def _warn_once(what: str, message: str) -> None:
    if what not in _WARNED:
        _WARNED.add(what)
        logger.warning(message)


def _has_helix(dask_scheduler: Any) -> bool:
    return "helix" in dask_scheduler.plugins


class _Submission(threading.local):
    keys: frozenset[str] = frozenset()
    """Keys whose digests were sent for the graph this thread is about to submit."""


_submission = _Submission()


@contextlib.contextmanager
def one_submission(client: Any, nodes: Sequence[HelixNode]) -> Iterator[None]:
    """Around one ``client.compute(nodes)``: the digests the scheduler needs for all of
    ``nodes`` are sent once, on entry, rather than once per node as each is prepared (two
    round trips per node when stored results have run-time dependencies)."""
    _send_requirement_digests(*nodes, client=client)
    outer = _submission.keys
    _submission.keys = outer | {n.key for n in nodes}
    try:
        yield
    finally:
        _submission.keys = outer


def _send_requirement_digests(*nodes: HelixNode, client: Any = None) -> None:
    """Tell the scheduler plugin the client's digests of the run-time dependencies recorded
    for the stored results of these nodes' graphs (usually none: one round trip). Says once
    when the graph runs where helix cannot see it (no client, or no helix plugin on the
    cluster)."""
    from ._dependency_digests import requirement_digests

    try:
        from distributed import default_client

        client = client or default_client()
    except (ImportError, ValueError):
        _warn_once(
            "client",
            "helix nodes computed without a distributed client run as plain Dask: nothing is "
            "planned, stored or recorded; call hx.setup() (or hx.setup(client)) first",
        )
        return
    if client.id not in _PLUGIN_SEEN:
        _PLUGIN_SEEN[client.id] = bool(client.run_on_scheduler(_has_helix))
    if not _PLUGIN_SEEN[client.id]:
        _warn_once(
            client.id,
            "the cluster of this client has no helix plugin: helix nodes run as plain Dask "
            "(nothing is planned, stored or recorded); call hx.setup(client) first",
        )
        return
    sigs = list(
        {
            ann["signature"]: None
            for node in nodes
            for layer in node.dask.layers.values()
            if (ann := (layer.annotations or {}).get(ANNOTATION)) is not None
        }
    )
    deps = client.sync(client.scheduler.helix_requirements, signatures=sigs)
    if deps:
        digests = requirement_digests(deps)
        client.sync(client.scheduler.helix_digests, client=client.id, digests=digests)
