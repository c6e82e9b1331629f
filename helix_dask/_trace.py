"""Verified dependency traces: the code a node's computation actually ran, recorded where it
runs.

Signatures come from static analysis of the task's source (``_code``), which cannot see code
reached only at run time (a method of an argument object, a function looked up by name, a
library called through an argument). While a worker computes a node whose code has not been
traced yet, :class:`NodeCall` records every Python code object that runs; the project functions
and classes and the third-party packages among them that the signature does not already cover
become the node's *requirements*: dependency id -> digest, computed where it ran.

Before a stored result is reused, the client's current digests of the requirements must be
equal (build systems with dynamic dependencies verify their caches the same way: Shake's
verifying traces, Bazel). Requirements and parents' verified identities fold into the node's
*effective signature* (:func:`~helix_dask._requirements.effective_signature`), under which
its artifact is stored and looked up; for a node with no requirement and plain parents it is
the static signature.

Cost model: tracing slows pure-Python code while it runs (Python 3.11 has no cheap per-code
monitoring: the C profiler costs about one extra run's time on call-heavy code, a Python
profile function two to three), so a
task's code is traced the first time it computes and its requirement set is reused by later
computes of the same code; loads are never traced. The first time is per worker process
within a graph too: the many calls of one never-traced task in a graph (a search's fits) are
traced once where they run, and the others reuse what that trace found, as later graphs reuse
it from the catalog (:func:`~helix_dask._requirements.learn`). Code whose trace found project
code the signature misses is traced every time, in the same graph as in later ones.

This module records what a call runs and reads (:class:`NodeCall`) and hands it to the worker
plugin; :mod:`~helix_dask._requirements` settles it into requirements,
:mod:`~helix_dask._dependency_digests` digests them (library versions come from
:mod:`~helix_dask._distributions`), and :mod:`~helix_dask._code_versions` tells whether the
worker runs the code the client signed.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
import types
from collections.abc import Callable, Mapping
from typing import Any

from helix_dask._code_versions import _outdated
from helix_dask._env_reads import EnvReads
from helix_dask._file_reads import FileReads
from helix_dask._profile_trace import call_profiled, left_installed, switch
from helix_dask._requirements import (
    UNTRACEABLE,
    Requirements,
    Scopes,
    dependencies,
    learned,
    settle,
)

logger = logging.getLogger("helix_dask.signature")


TRACE_NEW = "new"
"""Annotation ``trace`` of a node whose code no trace recorded in the catalog has seen: traced
unless this process already traced the code (then what that trace found is reused)."""


_traces: dict[str, Scopes] = {}
"""Key -> dependencies of a traced node that finished in this process (:func:`take_trace`)."""
_ran: dict[str, dict[str, list[types.CodeType]]] = {}
"""Key -> the project code objects its traced call ran, per dependency id."""
_settled: dict[str, Requirements] = {}
"""Key -> what a helix node that finished on this worker required (taken by the plugin)."""
_traces_lock = threading.Lock()


_outdated_keys: dict[str, str] = {}
"""Key -> the project code this process runs in another version than the client signed."""


def take_outdated(key: str) -> str | None:
    """The name of code that ran here in another version than the client's, once."""
    with _traces_lock:
        return _outdated_keys.pop(key, None)


def take_trace(key: str) -> Scopes | None:
    """The dependency ids recorded while ``key`` ran in this process, once."""
    with _traces_lock:
        return _traces.pop(key, None)


class NodeCall:
    """The callable of a helix task in the graph: the user's function, traced when asked.

    The scheduler plugin asks (annotation ``trace``) for nodes whose code was never traced.
    Outside a worker (``scheduler="sync"``, threads without distributed) it is a plain call.
    """

    __slots__ = ("__name__", "code", "func", "key")

    def __init__(
        self, func: Callable[..., Any], key: str, code: Mapping[str, str] | None = None
    ) -> None:
        self.func = func
        self.key = key
        self.code = code or {}
        """``module.qualname`` -> bytecode digest of the project code the client signed: a
        worker whose loaded modules differ (a long-lived worker holding an old module) says so,
        and its result is never stored."""
        self.__name__ = getattr(func, "__name__", "task")

    def __reduce__(self):
        return NodeCall, (self.func, self.key, self.code)

    def __repr__(self) -> str:
        return f"NodeCall({self.key!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from .worker_plugin import wait_for_room  # imported by then wherever a worker runs

        wait_for_room(self.key)  # write back-pressure: the worker's writes come first
        ann = _annotation(self.key)
        if ann is None:  # not a helix node of a worker here: a plain call
            return self.func(*args, **kwargs)
        if self.code and (old := _outdated(self.func, self.code)):
            with _traces_lock:
                _outdated_keys[self.key] = old
            return self.func(*args, **kwargs)  # never stored: nothing to digest
        want, code = ann.get("trace"), str(ann.get("code") or "")
        reads: Scopes = {}
        found = learned(code) if want == TRACE_NEW else None
        if not want and "deps" not in ann:  # nothing will be stored: nothing to record
            result = self.func(*args, **kwargs)
        elif not want or found is not None:
            # Not traced (earlier traces of the code found libraries only), but the data files
            # and environment variables this call reads are still recorded (cheap: the calls
            # that read them are few): another call of the code may take another branch.
            with FileReads(args, kwargs) as files, EnvReads() as env:
                result = self.func(*args, **kwargs)
            reads = {**files.dependencies(), **env.dependencies()}
            if found is not None:
                _keep_trace(self.key, {**{dep: {} for dep in found}, **reads})
        else:
            result = self.traced(args, kwargs)
        with _traces_lock:
            trace, ran = _traces.pop(self.key, None), _ran.pop(self.key, {})
        settled = settle(self.key, ann, trace, ran, reads)
        if want or "deps" in ann:  # it may be stored: what it is now is what must be written
            t0 = time.perf_counter()
            digest = result_digest(result)
            seconds = settled.seconds + time.perf_counter() - t0
            settled = settled._replace(result=digest, seconds=seconds)
        with _traces_lock:
            _settled[self.key] = settled
        return result

    def traced(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Call the function and keep the dependencies it ran (:func:`take_trace`): the C
        profiler records every code object that runs (:mod:`helix_dask._profile_trace`), or,
        when the thread already has a profile function, a Python one chained to it; the files
        it reads are recorded too (:mod:`helix_dask._file_reads`).

        A C profiler already active in this thread (``cProfile``) cannot be chained: the call
        runs untraced and its result is marked :data:`UNTRACEABLE` (never stored)."""
        previous = sys.getprofile()
        if previous in left_installed and switch(previous.disable):  # a failed removal's
            previous = sys.getprofile()
        previous = getattr(previous, "helix_inert", previous)  # one a failed removal left
        if previous is not None and not callable(previous):
            result = self.func(*args, **kwargs)
            _keep_trace(self.key, {UNTRACEABLE: {}})
            return result
        if previous is None:  # the thread has no profiler: the C profiler records, faster
            with FileReads(args, kwargs) as files, EnvReads() as env:
                result, ran = call_profiled(self.func, args, kwargs, _IMPORT_CODE)
            if ran is None:
                _keep_trace(self.key, {UNTRACEABLE: {}})
            else:
                codes: dict[str, list[types.CodeType]] = {}
                deps = dependencies(ran, codes)
                reads = {**files.dependencies(), **env.dependencies()}
                _keep_trace(self.key, {**deps, **reads}, codes)
            return result
        seen: dict[types.CodeType, Mapping[str, Any]] = {}
        imports: list[types.FrameType] = []  # imports running: what they run depends on the
        # process. Only "call" events read ``f_code``: with an audit hook installed (see
        # _file_reads) every read of it is an audit event, a Python call.

        stopped = False  # set once the call returned: a recorder left installed records nothing

        def record(frame: types.FrameType, event: str, arg: Any) -> None:
            if stopped:
                pass
            elif event == "call":
                code = frame.f_code
                if code is _IMPORT_CODE:
                    imports.append(frame)
                elif not imports:
                    seen[code] = frame.f_globals
            elif event == "return" and imports and frame is imports[-1]:
                imports.pop()
            if previous is not None:
                previous(frame, event, arg)

        with FileReads(args, kwargs) as files, EnvReads() as env:
            if not _set_profile(record):
                result = self.func(*args, **kwargs)
                _keep_trace(self.key, {UNTRACEABLE: {}})
                return result
            try:
                result = self.func(*args, **kwargs)
            finally:
                stopped = True
                restored = _set_profile(previous) or _set_profile(previous)
        if not restored:
            record.helix_inert = previous  # type: ignore[attr-defined]
            logger.warning(
                "helix could not remove its trace recorder from this thread (another profile "
                "function kept being installed); it stays, inert, until the next traced call"
            )
            _keep_trace(self.key, {UNTRACEABLE: {}})
            return result
        codes: dict[str, list[types.CodeType]] = {}
        reads = {**files.dependencies(), **env.dependencies()}
        _keep_trace(self.key, {**dependencies(seen, codes), **reads}, codes)
        return result


def result_digest(value: Any) -> str | None:
    """The content digest of a result, or None when it has none (no fingerprint rule, a lazy
    collection). A result is written after its task returned, while others hold it (the
    client of an in-process cluster, a task downstream): modified in place meanwhile, it
    would be stored as what the task computed."""
    from dask import is_dask_collection

    from helix_dask._fingerprint import fingerprint_value

    if is_dask_collection(value):
        return None
    try:
        return fingerprint_value(value)
    except Exception:  # no rule for it: unchecked, as before
        return None


def _keep_trace(
    key: str, deps: Scopes, codes: dict[str, list[types.CodeType]] | None = None
) -> None:
    """Keep what ``key``'s call ran until :func:`take_trace` asks for it."""
    with _traces_lock:
        _traces[key] = deps
        if codes:
            _ran[key] = codes


def _set_profile(func: Callable[..., Any] | None) -> bool:
    """``sys.setprofile(func)``; False if it kept being refused (see :func:`switch`)."""
    return switch(lambda: sys.setprofile(func))


def _annotation(key: str) -> dict[str, Any] | None:
    """The helix annotation of the task ``key`` running on this worker, or None (not in a
    worker: ``scheduler="sync"``, threads without distributed)."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    ts = worker.state.tasks.get(key)
    ann = (ts.annotations or {}).get("helix") if ts is not None else None
    return ann or None


def take_requirements(key: str) -> Requirements | None:
    """What the node ``key`` that finished on this worker required, once (None: its call
    did not run here as a helix node)."""
    with _traces_lock:
        return _settled.pop(key, None)


_IMPORT_CODE = importlib._bootstrap._find_and_load.__code__  # type: ignore[attr-defined]
"""An import's first execution of a module: code it runs there is not the task's (a second
process that imported the module already would not run it)."""
