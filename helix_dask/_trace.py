"""Verified dependency traces: the code a node's computation actually ran.

Signatures come from static analysis of the task's source (``_code``), which cannot see code
reached only at run time (a method of an argument object, a function looked up by name, a
library called through an argument). While a worker computes a node whose code has not been
traced yet, :class:`NodeCall` records every Python code object that runs; the project functions
and classes and the third-party packages among them that the signature does not already cover
become the node's *requirements*: dependency id -> digest, computed where it ran.

Before a stored result is reused, the client's current digests of the requirements must be
equal (build systems with dynamic dependencies verify their caches the same way: Shake's
verifying traces, Bazel). Requirements and parents' verified identities fold into the node's
*effective signature* (:func:`effective_signature`), under which its artifact is stored and
looked up; for a node with no requirement and plain parents it is the static signature.

Cost model: tracing slows pure-Python code while it runs (Python 3.11 has no cheap per-code
monitoring: the C profiler costs about one extra run's time on call-heavy code, a Python
profile function two to three), so a
task's code is traced the first time it computes and its requirement set is reused by later
computes of the same code; loads are never traced. The first time is per worker process
within a graph too: the many calls of one never-traced task in a graph (a search's fits) are
traced once where they run, and the others reuse what that trace found, as later graphs reuse
it from the catalog (:func:`learn`). Code whose trace found project code the signature misses
is traced every time, in the same graph as in later ones.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import os
import platform
import sys
import threading
import time
import types
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, NamedTuple

from helix_dask._env_reads import ENV, EnvReads, env_digest
from helix_dask._file_reads import (
    CWD,
    FILE,
    LISTING,
    STAT,
    FileReads,
    cwd_digest,
    file_digest,
    listing_digest,
    stat_digest,
)
from helix_dask._fingerprint import Hasher, digest_of_strings
from helix_dask._memo_reads import recalled
from helix_dask._profile_trace import call_profiled, left_installed, switch

logger = logging.getLogger("helix_dask.signature")

DIST = "dist:"
"""Prefix of a library dependency id: ``dist:<distribution name>``, its digest the version."""


UNTRACEABLE = "untraceable:"
"""Stands in a trace that could not be taken (a C profiler held the thread): never stored."""

TRACE_NEW = "new"
"""Annotation ``trace`` of a node whose code no trace recorded in the catalog has seen: traced
unless this process already traced the code (then what that trace found is reused)."""

Scopes = dict[str, Mapping[str, Any]]
"""Dependency id -> the globals its code ran with (to resolve it where it ran)."""

_traces: dict[str, Scopes] = {}
"""Key -> dependencies of a traced node that finished in this process (:func:`take_trace`)."""
_ran: dict[str, dict[str, list[types.CodeType]]] = {}
"""Key -> the project code objects its traced call ran, per dependency id."""
_settled: dict[str, Requirements] = {}
"""Key -> what a helix node that finished on this worker required (taken by the plugin)."""
_traces_lock = threading.Lock()


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
    written must still be that (see :func:`result_digest`)."""


class CodeReplaced(RuntimeError):
    """A dependency's definition was replaced (its module reloaded) while the node ran."""


_outdated_keys: dict[str, str] = {}
"""Key -> the project code this process runs in another version than the client signed."""


def take_outdated(key: str) -> str | None:
    """The name of code that ran here in another version than the client's, once."""
    with _traces_lock:
        return _outdated_keys.pop(key, None)


CONSTANT = "="
"""Prefix of a module-level value in :func:`code_versions` (``=module.NAME``)."""


def code_versions(
    func: Callable[..., Any], names: Iterable[str], constants: Iterable[str] = ()
) -> dict[str, str]:
    """Digests of the task function and of the project functions and classes ``names`` (as
    the signature's sources name them): their bytecode and the state that is no bytecode
    (defaults, closure cells, function attributes, class attributes), and of the module-level
    values ``constants`` (``module.NAME``) they read, for :class:`NodeCall` to compare: a
    worker that imported a module before it was edited holds its old values too."""
    out = {}
    inner = getattr(func, "__code__", None)
    if isinstance(inner, types.CodeType):
        out[""] = _object_bytecode(func) or bytecode_digest(inner)
    for name in names:
        obj = _resolve(name, None) if "<" not in name else None
        digest = _object_bytecode(obj)
        if digest is not None:
            out[name] = digest
    scope = getattr(func, "__globals__", None)
    for name in constants:
        found = _constant(name, scope)
        if found is not _MISSING:
            out[CONSTANT + name] = _state_digest(found)
    return out


def _outdated(func: Callable[..., Any], expected: Mapping[str, str]) -> str | None:
    """The first signed code or value that differs here from the client's, or None."""
    for name, digest in expected.items():
        if name == "":
            mine = _object_bytecode(func)
            if mine is None and isinstance(getattr(func, "__code__", None), types.CodeType):
                mine = bytecode_digest(func.__code__)
            name = getattr(func, "__qualname__", "task")
        elif name.startswith(CONSTANT):
            name = name[len(CONSTANT) :]
            scope = getattr(func, "__globals__", None)
            for found in _constants_here(name, scope):
                if _state_digest(found) != digest:
                    return name
            continue
        else:
            module = name.rpartition(".")[0]
            if module.partition(".")[0] not in sys.modules and module not in sys.modules:
                continue  # not loaded here: it will be imported fresh from its source
            mine = _object_bytecode(_resolve(name, None))
        if mine is not None and mine != digest:
            return name
    return None


def _constants_here(name: str, scope: Mapping[str, Any] | None) -> list[Any]:
    """The values ``module.NAME`` has here: in the task's globals (a function pickled by
    value brings the names it reads along) and in the loaded module, which the module's other
    functions read."""
    module, _, attr = name.rpartition(".")
    found = []
    if scope is not None and scope.get("__name__") == module and attr in scope:
        found.append(scope[attr])
    loaded = sys.modules.get(module)
    if loaded is not None and hasattr(loaded, attr) and vars(loaded) is not scope:
        found.append(getattr(loaded, attr))
    return found


def _constant(name: str, scope: Mapping[str, Any] | None) -> Any:
    """The value ``module.NAME`` names on the client: in ``scope`` (the task's globals) when
    that is its module, else in its module (imported if need be)."""
    module, _, attr = name.rpartition(".")
    if scope is not None and scope.get("__name__") == module:
        return scope.get(attr, _MISSING)
    found = sys.modules.get(module)
    if found is None:
        try:
            found = importlib.import_module(module)
        except ImportError:
            return _MISSING
    return getattr(found, attr, _MISSING)


def _state_digest(value: Any) -> str:
    """A value's fingerprint, or what stands for one that has none (compared by type).
    Functions and classes in it count by bytecode and name: cheap enough for every call,
    and those the signature reached are compared on their own."""
    from helix_dask._fingerprint import fingerprint_value

    try:
        return fingerprint_value(value, substitute=_code_by_name)
    except Exception:  # no rule (the signature untracked it): its type at least
        return _hexdigest("opaque", type(value).__module__, type(value).__qualname__)


def _code_by_name(value: Any) -> str | None:
    if isinstance(value, types.FunctionType):
        return _hexdigest("function", value.__qualname__, bytecode_digest(value.__code__))
    if isinstance(value, types.ModuleType):
        return _hexdigest("module", value.__name__)
    if isinstance(value, type):
        return _hexdigest("class", value.__module__, value.__qualname__)
    return None


def _object_bytecode(obj: Any, depth: int = 0) -> str | None:
    if not isinstance(obj, types.FunctionType | type) and depth < 8:
        # A wrapper that is no function (lru_cache, a decorator class): the code it wraps.
        wrapped = getattr(obj, "__wrapped__", None) if callable(obj) else None
        if wrapped is not None and wrapped is not obj:
            inner = _object_bytecode(wrapped, depth + 1)
            return None if inner is None else _hexdigest("wrapped", inner)
        return None
    if isinstance(obj, types.FunctionType):
        cells = tuple(_cell(c) for c in obj.__closure__ or ())
        attrs = {k: v for k, v in vars(obj).items() if not k.startswith("__")}
        state = (obj.__defaults__, obj.__kwdefaults__, cells, attrs)
        return _hexdigest("function", bytecode_digest(obj.__code__), _state_digest(state))
    if isinstance(obj, type):
        parts = []
        for attr, value in sorted(vars(obj).items()):
            value = getattr(value, "__func__", value)
            if isinstance(value, types.FunctionType):
                parts.append(f"{attr}={bytecode_digest(value.__code__)}")
            elif not (attr.startswith("__") and attr.endswith("__")):
                parts.append(f"{attr}:{_state_digest(value)}")
        return _hexdigest("class", *parts)
    return None


def _cell(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:
        return _MISSING


@functools.lru_cache(maxsize=16384)
def bytecode_digest(code: types.CodeType) -> str:
    """A digest of what a code object does, not where it is: instructions, names and
    constants (nested code recursively), without line numbers, file names or docstrings."""
    h = Hasher()
    h.tag("bytecode")
    h.field(code.co_code)
    h.field(" ".join((*code.co_names, "|", *code.co_varnames, "|", *code.co_freevars)).encode())
    consts = code.co_consts
    if consts and not code.co_name.startswith("<"):
        consts = consts[1:]  # a function's first constant: its docstring (or None)
    for const in consts:
        if isinstance(const, types.CodeType):
            h.field(bytecode_digest(const).encode())
        elif isinstance(const, frozenset):  # its repr's order follows the process's hash seed
            h.field(repr(sorted(map(repr, const))).encode())
        else:
            h.field(repr(const).encode())
    return h.hexdigest()


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


# ---------------------------------------------------------------- dependency ids


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

_IMPORT_CODE = importlib._bootstrap._find_and_load.__code__  # type: ignore[attr-defined]
"""An import's first execution of a module: code it runs there is not the task's (a second
process that imported the module already would not run it)."""


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


# ---------------------------------------------------------------- digests


def dependency_digest(
    dep: str,
    scope: Mapping[str, Any] | None = None,
    ran: Iterable[types.CodeType] | None = None,
) -> str:
    """The current digest of one dependency: a distribution's version, or the code
    fingerprint of a project function/class (everything it reaches), resolved in ``scope``
    (the globals it ran with) or else by importing its module. ``ran``: code objects of it
    that ran; :class:`CodeReplaced` if the definition found now holds other code objects
    of the same names (its module was reloaded since)."""
    if dep.startswith(DIST):
        return _distribution_version(dep[len(DIST) :])
    if dep.startswith(FILE):
        return file_digest(dep[len(FILE) :])
    if dep.startswith(LISTING):
        return listing_digest(dep[len(LISTING) :])
    if dep.startswith(STAT):
        return stat_digest(dep[len(STAT) :])
    if dep.startswith(ENV):
        return env_digest(dep[len(ENV) :])
    if dep == CWD:
        return cwd_digest()
    obj = _resolve(dep, scope)
    if obj is None:
        return _hexdigest("missing", dep)
    if isinstance(obj, _WholeModule):
        return _module_digest(obj.namespace)
    if ran and _replaced(obj, ran):
        raise CodeReplaced(dep)
    from helix_dask._code import code_fingerprint

    return code_fingerprint(obj).digest


def _replaced(obj: Any, ran: Iterable[types.CodeType]) -> bool:
    """Whether a code object that ran is not among ``obj``'s, though one of the same name is
    (a definition whose name reaches no code of that name, an opaque wrapper, is unknown)."""
    reachable: dict[str, list[types.CodeType]] = {}

    def walk(code: types.CodeType) -> None:
        reachable.setdefault(code.co_qualname, []).append(code)
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                walk(const)

    roots = [obj] if not isinstance(obj, type) else list(vars(obj).values())
    for root in roots:
        if isinstance(root, property):
            parts = [root.fget, root.fset, root.fdel]
        else:
            parts = [root]
        for part in parts:
            for _ in range(8):  # a wrapper's wrapped function (functools.wraps), a few deep
                if isinstance(part, staticmethod | classmethod | types.MethodType):
                    part = part.__func__
                if isinstance(part, types.FunctionType):
                    walk(part.__code__)
                own = getattr(part, "__dict__", None)  # no __getattr__ of arbitrary objects
                part = own.get("__wrapped__") if isinstance(own, dict) else None
                if part is None:
                    break
    for code in ran:
        same = reachable.get(code.co_qualname)
        if same and not any(c is code for c in same):
            return True
    return False


def _distribution_version(dist: str) -> str:
    """The installed version of a distribution (the Python version for ``python``).

    Finding a distribution scans ``sys.path`` and parsing its metadata takes milliseconds, and
    it is asked for every node computed or sent, so a version is kept while nothing it was
    found from changed: ``sys.path`` up to the directory that holds it, those directories
    (an install into any of them changes its modification time) and the metadata file
    itself (path, size, modification time: an upgrade in place)."""
    if dist == "python":
        return platform.python_version()
    held = _versions.get(dist)
    if held is not None and _still(held[0]):
        return held[1]
    try:
        found = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
    where = _where_found(found)
    version = found.version
    if where is not None:
        _versions[dist] = (where, version)
    return version


_versions: dict[str, tuple[_Where, str]] = {}
"""Distribution name -> (what it was found from, the version read there)."""


class _Where(NamedTuple):
    path: tuple[str, ...]
    """``sys.path`` up to and including the entry the distribution was found in."""
    dirs: tuple[tuple[int, int] | None, ...]
    """Modification time and inode of each of those entries (None: not a directory)."""
    metadata: tuple[object, ...]
    """The metadata file's stamp (:func:`_metadata_stamp`)."""


def _dir_stamp(entry: str) -> tuple[int, int] | None:
    try:
        st = os.stat(entry or ".")
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino)


def _where_found(found: importlib.metadata.Distribution) -> _Where | None:
    """What ``found`` was found from; None when that is not a plain directory on ``sys.path``
    (then it is looked up every time)."""
    stamp = _metadata_stamp(found)
    if stamp is None:
        return None
    parent = os.path.dirname(os.path.abspath(str(stamp[0])))
    path = tuple(sys.path)
    for i, entry in enumerate(path):
        if os.path.abspath(entry or ".") == parent:
            return _Where(path[: i + 1], tuple(_dir_stamp(e) for e in path[: i + 1]), stamp)
    return None


def _still(where: _Where) -> bool:
    """Whether a lookup now would find what ``where`` describes."""
    n = len(where.path)
    if tuple(sys.path[:n]) != where.path:
        return False
    if any(_dir_stamp(e) != s for e, s in zip(where.path, where.dirs, strict=True)):
        return False
    return where.metadata == _file_stamp(str(where.metadata[0]), str(where.metadata[1]))


def _metadata_stamp(found: importlib.metadata.Distribution) -> tuple[object, ...] | None:
    """Path, size and modification time of a distribution's metadata file; None when it
    does not come from files on disk (then it is read every time)."""
    path = getattr(found, "_path", None)
    if path is None:
        return None
    for name in ("METADATA", "PKG-INFO"):
        if (stamp := _file_stamp(os.fspath(path), name)) is not None:
            return stamp
    return None


def _file_stamp(directory: str, name: str) -> tuple[object, ...] | None:
    """(directory, name, size, modification time, inode) of a file; None when it is gone."""
    try:
        st = os.stat(os.path.join(directory, name))
    except OSError:
        return None
    return (directory, name, st.st_size, st.st_mtime_ns, st.st_ino)


def _resolve(dep: str, scope: Mapping[str, Any] | None) -> Any:
    """The definition to fingerprint for ``module.qualname``: nested code counts as its
    outermost named definition, a module-level lambda or comprehension as the whole module."""
    candidates: list[tuple[str, str]] = []
    outer = dep.partition(".<locals>")[0]
    parts = outer.split(".")
    if parts[-1].startswith("<"):  # "<lambda>", "<genexpr>": no name to look up
        parts[-1] = "*"
    for i in range(len(parts) - 1, 0, -1):
        candidates.append((".".join(parts[:i]), ".".join(parts[i:])))
    for module_name, qualname in candidates:
        namespace: Any
        if scope is not None and scope.get("__name__") == module_name:
            namespace = _Namespace(scope)
        else:
            namespace = sys.modules.get(module_name)
            if namespace is None:
                try:
                    namespace = importlib.import_module(module_name)
                except ImportError:
                    continue
        if qualname == "*":
            return _WholeModule(namespace)
        obj = namespace
        for attr in qualname.split("."):
            obj = getattr(obj, attr, _MISSING)
            if obj is _MISSING:
                break
        if obj is not _MISSING and (callable(obj) or isinstance(obj, _WholeModule)):
            return obj
    return None


_MISSING = object()


class _WholeModule:
    """``module.*``: code of the module that has no name of its own (a module-level lambda)."""

    def __init__(self, namespace: Any) -> None:
        self.namespace = namespace


class _Namespace:
    """Attribute access over a globals dict (a function pickled by value has no module)."""

    def __init__(self, scope: Mapping[str, Any]) -> None:
        self._scope = scope

    def __getattr__(self, name: str) -> Any:
        try:
            return self._scope[name]
        except KeyError:
            raise AttributeError(name) from None


def _module_digest(namespace: Any) -> str:
    """Every project function and class a module defines, fingerprinted together."""
    from helix_dask._code import code_fingerprint

    scope = namespace._scope if isinstance(namespace, _Namespace) else vars(namespace)
    name = str(scope.get("__name__"))
    members = sorted(
        (k, v)
        for k, v in scope.items()
        if isinstance(v, type | types.FunctionType) and getattr(v, "__module__", "") == name
    )
    return _hexdigest("module", name, *(f"{k}={code_fingerprint(v).digest}" for k, v in members))


def _hexdigest(kind: str, *parts: str) -> str:
    return digest_of_strings(kind, *parts)


def requirement_digests(
    deps: Iterable[str], scopes: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, str]:
    """``dep -> digest`` for each dependency, in the order given."""
    scopes = scopes or {}
    return {d: dependency_digest(d, scopes.get(d)) for d in deps}


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
