"""What a scheduler running helix answers to processes that share no disk with it.

- **Catalog reads** (``helix --scheduler``): a fixed set of the catalog's read-only queries,
  answered as plain data (JSON and msgpack alike) over the scheduler's comm (handler
  ``helix_catalog``) and over its HTTP server (``POST /helix/api/catalog``, see
  :mod:`helix_dask.dashboard`). Nothing here writes. Argument values are what the catalog holds
  (secrets were redacted before they were recorded); store URLs lose any ``user:password@``.
- **The pickle key** (handler ``helix_pickle_key``): what the worker plugin asks for when it is
  set up, so that workers on other machines sign and check pickles with the scheduler's key.
  It travels only over the comm, which anyone able to use can run code on the scheduler anyway;
  never over HTTP.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ._errors import HelixError
from ._events import report_to_dict
from ._location import catalog_dir, public_location
from .catalog import Catalog
from .presentation import to_data

if TYPE_CHECKING:
    from distributed import Scheduler, Worker

logger = logging.getLogger("helix_dask")

_READERS: dict[str, Catalog] = {}
_READERS_LOCK = threading.Lock()


def reader(store: str) -> Catalog:
    """This process's read-only connection to the catalog of ``store`` (one per store), shared
    by the dashboard and the catalog API."""
    where = catalog_dir(store)
    with _READERS_LOCK:
        cat = _READERS.get(where)
        if cat is None:
            cat = _READERS[where] = Catalog(where)
        return cat


# -- catalog reads ------------------------------------------------------------------------------


def _ints(params: Mapping[str, Any], name: str) -> list[int] | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, list | tuple) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"parameter {name!r} is {value!r}, not a list of version ids")
    return list(value)  # msgpack gives tuples


def _strs(params: Mapping[str, Any], name: str) -> list[str]:
    value = params.get(name)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"parameter {name!r} is {value!r}, not a list of strings")
    return list(value)


def _int(params: Mapping[str, Any], name: str, *, optional: bool = False) -> int | None:
    value = params.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise ValueError(f"parameter {name!r} is {value!r}, not a count or id >= 0")
    return value


def _artifact(row: Any) -> dict[str, Any]:
    data = to_data(row)
    data["location"] = public_location(data["location"])
    return data


def _run(cat: Catalog, params: Mapping[str, Any]) -> dict[str, Any]:
    return report_to_dict(cat.run(_int(params, "version")))  # type: ignore[arg-type]


def _code(cat: Catalog, params: Mapping[str, Any]) -> list[dict[str, str]] | None:
    digest = params.get("digest")
    if not isinstance(digest, str):
        raise ValueError(f"parameter 'digest' is {digest!r}, not a code digest")
    found = cat.code(digest)
    return None if found is None else list(found)


READS: dict[str, Callable[[Catalog, Mapping[str, Any]], Any]] = {
    "versions": lambda cat, p: to_data(cat.versions()),
    "version_stats": lambda cat, p: to_data(cat.version_stats(_int(p, "limit", optional=True))),
    "runs": lambda cat, p: [report_to_dict(r) for r in cat.runs(_ints(p, "versions"))],
    "run": _run,
    "code": _code,
    "requirements_of": lambda cat, p: cat.requirements_of(_strs(p, "identities")),
    "artifacts": lambda cat, p: [_artifact(a) for a in cat.artifacts()],
    "artifacts_for": lambda cat, p: {
        s: _artifact(a) for s, a in cat.artifacts_for(_strs(p, "signatures")).items()
    },
    "running_versions": lambda cat, p: cat.running_versions(),
    "leased": lambda cat, p: sorted(cat.leased()),
}
"""The catalog's read queries the API answers, by name: ``(catalog, params) -> plain data``."""


def answer(store: str, method: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The answer to one catalog read, in this thread: ``{"data": ...}``, or ``{"error":
    message, "missing": bool}`` for an unknown method or bad parameters (``missing``: a version
    that is not in the catalog)."""
    if method == "info":
        return {"data": {"store": public_location(store)}}
    query = READS.get(method)
    if query is None:
        return _error(f"no catalog read {method!r}; expected one of {['info', *READS]}")
    if params is not None and not isinstance(params, Mapping):
        return _error(f"parameters {params!r} are not a mapping")
    try:
        return {"data": query(reader(store), params or {})}
    except KeyError as e:
        return _error(e.args[0] if e.args else str(e), missing=True)
    except (ValueError, HelixError) as e:
        return _error(str(e))
    except sqlite3.Error as e:  # a damaged or locked catalog: the caller says so, in one line
        logger.warning("helix could not answer the catalog read %s: %s", method, e)
        return _error(f"the scheduler cannot read its catalog: {e}")


def _error(message: str, *, missing: bool = False) -> dict[str, Any]:
    return {"error": message, "missing": missing}


# -- scheduler handlers -------------------------------------------------------------------------


def install_handlers(scheduler: Scheduler, plugin: Any) -> None:
    """Add ``helix_catalog`` and ``helix_pickle_key`` to ``scheduler``'s handlers; they answer
    for the plugin registered as ``helix`` at call time (``plugin`` until there is one)."""

    def store() -> str:
        return str(scheduler.plugins.get("helix", plugin).store)

    async def helix_catalog(method: str = "", params: Mapping[str, Any] | None = None) -> dict:
        return await asyncio.to_thread(answer, store(), method, params)

    async def helix_pickle_key() -> dict[str, Any]:
        from ._keys import stored_key

        where = store()
        try:
            key = await asyncio.to_thread(stored_key, where)
        except HelixError as e:
            logger.warning("helix cannot hand the pickle key to a worker: %s", e)
            return {"store": where, "error": str(e)}
        return {"store": where, "key": key}

    scheduler.handlers.update(
        {"helix_catalog": helix_catalog, "helix_pickle_key": helix_pickle_key}
    )


# -- worker side --------------------------------------------------------------------------------


async def adopt_key(worker: Worker, store: str) -> bool:
    """Ask the scheduler of ``worker`` for the pickle key of ``store`` and use it in this
    process (:func:`~helix_dask._keys.provide_key`); False, with a WARNING, when it cannot be
    had: the worker then reads the key file on its own machine."""
    from ._keys import provide_key

    try:
        got = await worker.scheduler.helix_pickle_key()
    except OSError as e:
        got = {"store": store, "error": str(e)}
    if not isinstance(got, dict):  # no such handler: a scheduler without helix's
        got = {"store": store, "error": "the scheduler has no helix_pickle_key handler"}
    if got.get("store") != store:
        return False  # the plugin was replaced meanwhile; its worker twin asks again
    if "key" not in got:
        logger.warning(
            "helix could not get the pickle key from the scheduler (%s); this worker uses the "
            "key file on its own machine, and pickles it writes load only where that key is",
            got.get("error"),
        )
        return False
    provide_key(store, got["key"])
    return True
