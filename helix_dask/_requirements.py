"""Requirements: what a computed node required beyond its static signature. The dependency
ids of the code its call ran, those its static fingerprint does not cover, digested where it
ran (:func:`settle`); what traces of a code found, reused by later calls in this process
(:func:`learn`); and the effective signature requirements and parents fold into."""

from __future__ import annotations

import functools
import logging
import sys
import time
import types
from collections.abc import Collection, Iterable, Mapping
from typing import Any, NamedTuple

from helix_dask._dependency_digests import CodeReplaced, dependency_digest
from helix_dask._distributions import DIST
from helix_dask._env_reads import ENV
from helix_dask._file_reads import CWD, FILE, LISTING, STAT
from helix_dask._fingerprint import Hasher
from helix_dask._memo_reads import recalled

logger = logging.getLogger("helix_dask.signature")


UNTRACEABLE = "untraceable:"
"""Stands in a trace that could not be taken (a C profiler held the thread): never stored."""


Scopes = dict[str, Mapping[str, Any]]
"""Dependency id -> the globals its code ran with (to resolve it where it ran)."""


class Requirements(NamedTuple):
    """What one computed node required beyond its static signature, digested in the task's
    thread as soon as its call returned (before its result reaches anyone, so an edit made
    after that cannot be recorded as what produced it)."""

    requires: dict[str, str] | None
    """Dependency id -> digest where it ran; None: unknown, so the result is never stored."""
    traced: list[str] | None
    """What its trace found beyond the static fingerprint; None: the call was not traced."""
    seconds: float
    """Time spent digesting, not part of the node's compute time."""
    result: str | None = None
    """Content digest of the result as the call returned it (None: it has none): what is
    written must still be that (see :func:`~helix_dask._trace.result_digest`)."""


def settle(
    key: str,
    ann: Mapping[str, Any],
    trace: Scopes | None,
    ran: Mapping[str, list[types.CodeType]] | None = None,
    reads: Scopes | None = None,
) -> Requirements:
    """What a node's call required beyond its static signature (annotation ``ann``), with
    digests taken now, in the thread that ran it: the dependencies its ``trace`` found
    (``ran``: their code objects, checked to be the definitions digested), or when it was
    not traced, those recorded for its code (annotation ``deps``) and the files and
    environment variables the call read (``reads``)."""
    t0 = time.perf_counter()
    if trace is not None and UNTRACEABLE in trace:
        return Requirements(None, None, 0.0)  # what it ran is unknown: never stored
    if trace is None:
        deps: Mapping[str, Mapping[str, Any] | None] = {
            **dict.fromkeys(ann.get("deps") or ()),
            **(reads or {}),
        }
    else:
        deps = uncovered(ann, trace)
        learn(str(ann.get("code") or ""), deps)  # before the next call of this code starts
    traced = None if trace is None else list(deps)
    # What memoized functions it reaches read when their cache was filled (a call answered
    # from the cache reads nothing itself).
    reaches = [*(ann.get("sources") or ()), *(trace or ()), *(ann.get("deps") or ())]
    deps = {**recalled(reaches), **deps}
    if not deps:
        return Requirements({}, traced, time.perf_counter() - t0)
    ran = ran or {}
    try:
        requires = {d: dependency_digest(d, s, ran.get(d)) for d, s in deps.items()}
    except CodeReplaced as e:
        logger.warning(
            "helix: %s was redefined (its module reloaded) while %s ran; its result is not stored",
            e,
            key,
        )
        return Requirements(None, traced, time.perf_counter() - t0)
    except Exception:  # a dependency that cannot be digested: never stored
        logger.warning("helix could not digest what %s required", key, exc_info=True)
        return Requirements(None, traced, time.perf_counter() - t0)
    return Requirements(requires, traced, time.perf_counter() - t0)


def uncovered(ann: Mapping[str, Any], trace: Scopes) -> Scopes:
    """What a trace found that the node's static code fingerprint does not cover."""
    sources = {*(ann.get("sources") or {}), *(ann.get("covers") or ())}
    packages = ann.get("packages") or {}
    return {d: s for d, s in trace.items() if not covered(d, sources, packages)}


_found: dict[str, frozenset[str]] = {}
"""Code digest -> the libraries (``dist:...``) the traces of it in this process found beyond
its static fingerprint, for code whose traces found nothing else."""
_dynamic: set[str] = set()
"""Code digests whose traces in this process found project code or files: traced every time."""
_LEARNED_CODES = 4096
"""At most this many codes' findings are kept (a process runs few distinct task codes)."""


def learn(code: str, traced: Iterable[str]) -> None:
    """What a trace of ``code`` found that its static fingerprint misses (``traced``), as the
    catalog merges it: later calls of the code in this process that the scheduler asks to
    trace as new code reuse it when it is libraries only (:data:`TRACE_NEW`)."""
    if not code or code in _dynamic:
        return
    deps = frozenset(traced)
    if any(not d.startswith(DIST) for d in deps):
        _dynamic.add(code)
        _found.pop(code, None)
        return
    if code not in _found and len(_found) >= _LEARNED_CODES:
        _found.pop(next(iter(_found)))
    _found[code] = _found.get(code, frozenset()) | deps


def learned(code: str) -> frozenset[str] | None:
    """The libraries traces of ``code`` in this process found, or None: trace it."""
    if not code or code in _dynamic:
        return None
    return _found.get(code)


def dependencies(
    seen: Mapping[types.CodeType, Mapping[str, Any]],
    codes: dict[str, list[types.CodeType]] | None = None,
) -> Scopes:
    """Dependency ids of the code objects that ran: ``module.qualname`` of each project
    function, method or class body, ``dist:<distribution>`` for each installed distribution
    (``dist:python`` for the standard library) whose code ran. ``codes``, when given, gets
    the code objects that ran of each project dependency."""
    from helix_dask._origin import _is_project_path, is_project_local
    from helix_dask._origin import package_versions as _package_versions

    found: Scopes = {}
    libraries: set[str] = set()
    for code, scope in seen.items():
        module = scope.get("__name__")
        if not isinstance(module, str):
            name = code.co_filename
            if not scope and not name.startswith("<") and _is_project_path(name):
                found[UNTRACEABLE] = {}  # project code of no module found: what it is is unknown
            continue
        if module.partition(".")[0] in _IGNORED_PACKAGES:
            continue
        loaded = sys.modules.get(module)
        if loaded is None:
            if code.co_filename.startswith("<") or not _is_project_path(code.co_filename):
                continue  # generated code (namedtuple, dataclass methods): its maker counts
            project = True
        else:
            project = is_project_local(loaded)
        if not project:
            libraries.add(module.partition(".")[0])
        elif code.co_name != "<module>":  # an import ran a module body: values reach us
            dep = f"{module}.{code.co_qualname}"  # through functions
            found.setdefault(dep, scope)
            if codes is not None:
                codes.setdefault(dep, []).append(code)
    for top in libraries:
        for dist, _ in _package_versions(top):
            found.setdefault(DIST + dist, {})
    return dict(sorted(found.items()))


_IGNORED_PACKAGES = frozenset(
    {
        "helix_dask",
        "distributed",
        "tornado",
        "dask",
        "threading",
        "concurrent",
        "importlib",
        "importlib_metadata",
        "zipp",
    }
)
"""Packages a worker runs around every task (scheduling, not the task's result), and package
metadata lookups, which run once per process and then come from a cache."""


def covered(dep: str, sources: Iterable[str], packages: Iterable[str]) -> bool:
    """Whether the static code fingerprint already covers ``dep``: a prefix of it was walked,
    or its distribution's version was recorded."""
    if dep.startswith(DIST):
        return dep[len(DIST) :] in _as_set(packages)
    if dep.startswith((FILE, LISTING, STAT, ENV, CWD)):
        return False
    names = _as_set(sources)
    parts = dep.split(".")
    return any(".".join(parts[:i]) in names for i in range(1, len(parts) + 1))


def _as_set(values: Iterable[str]) -> Collection[str]:
    return values if isinstance(values, (set, frozenset, dict)) else set(values)


@functools.lru_cache(maxsize=65536)
def _combine(
    signature: str, requires: tuple[tuple[str, str], ...], parents: tuple[str, ...]
) -> str:
    h = Hasher()
    h.tag("effective")
    h.field(signature.encode())
    for dep, digest in requires:
        h.field(dep.encode())
        h.field(digest.encode())
    h.field(b"parents")
    for p in parents:
        h.field(p.encode())
    return h.hexdigest()


def effective_signature(
    signature: str,
    requires: Mapping[str, str],
    parents: Iterable[tuple[str, str]],
) -> str:
    """The identity a node's artifact is stored and looked up under.

    ``parents`` pairs each parent's static signature with its effective one. A node that
    requires nothing beyond its static signature and whose parents are plain keeps its static
    signature, so graphs without run-time dependencies are stored exactly as before.
    """
    parents = tuple(parents)
    if not requires and all(s == e for s, e in parents):
        return signature
    return _combine(signature, tuple(sorted(requires.items())), tuple(e for _, e in parents))
