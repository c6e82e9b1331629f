"""The decorator: ``@hx.task`` turns a function into a factory of lazy, signed Dask nodes."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import inspect
import logging
import re
import reprlib
import sys
import threading
import types
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypeVar, overload

import dask
from dask._task_spec import Task, TaskRef, parse_input
from dask.core import flatten
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from ._binding import Binder, binder_for
from ._code_versions import code_versions
from ._errors import HelixConfigError, HelixSignatureError
from ._trace import NodeCall
from ._wire import ANNOTATION, NodeMeta, with_message
from .signature import (
    CodeFingerprint,
    code_fingerprint,
    fingerprint_arguments,
    fingerprint_value,
    node_signature,
)

logger = logging.getLogger("helix_dask")

P = ParamSpec("P")
R = TypeVar("R")


class HelixNode(Delayed):
    """A lazy call of a helix task: a Dask collection (like ``dask.delayed``) with a signature.

    ``.compute()``, ``dask.compute``, ``client.compute``, ``.persist()`` and ``.visualize()``
    work as for any delayed value; the key reads ``<task name>-<signature>``.
    """

    __slots__ = ("_meta", "_watch")

    def __init__(
        self,
        key: str,
        dsk: HighLevelGraph,
        meta: NodeMeta,
        watch: _Watch | None = None,
        nout: int | None = None,
    ) -> None:
        super().__init__(key, dsk, nout)
        self._meta = meta
        self._watch = watch

    def __getitem__(self, index: object) -> HelixNode:
        """``node[i]`` / ``node["key"]``: a helix node of its own, reused like any other."""
        return _item(self, index, hx_name=f"{self._label()}[{index!r}]")

    def __getattr__(self, attr: str) -> HelixNode:
        """``node.attr``: a helix node of its own (names starting with ``_`` are not proxied)."""
        if attr.startswith("_") or attr in _NOT_PROXIED:
            raise AttributeError(f"Attribute {attr} not found")
        return _attribute(self, attr, hx_name=f"{self._label()}.{attr}")

    def _label(self) -> str:
        return self._meta.label or self._meta.name

    @property
    def signature(self) -> str:
        """The Merkle signature over code, arguments and upstream signatures."""
        return self._meta.signature

    @property
    def meta(self) -> NodeMeta:
        return self._meta

    @property
    def dask(self) -> HighLevelGraph:
        """The graph; when ``helix.message`` is set now (around a compute), it is what the
        version records, not the message set when the node was built."""
        message = dask.config.get("helix.message", "")
        if not message or message == self._meta.message:
            return self._dask
        return with_message(self._dask, self.key, str(message))

    def __dask_postpersist__(self):  # type: ignore[override]
        return _rebuild, (self._meta,)

    def __dask_postcompute__(self):  # type: ignore[override]
        """Called by every compute and persist, before the graph is sent: refuse a graph whose
        arguments or globals changed since its nodes were signed, and hand the scheduler the
        client's current digests of the run-time dependencies its stored results require."""
        if self._watch is not None:
            _check_unchanged(self._watch)
        if self.key not in _submission.keys:
            _send_requirement_digests(self)
        return super().__dask_postcompute__()

    @staticmethod
    def __dask_optimize__(dsk: HighLevelGraph, keys: Any, **kwargs: Any) -> HighLevelGraph:
        """Cull only: fusing would merge helix nodes and hide them from the plan."""
        return dsk.cull(set(flatten(keys)))

    def __repr__(self) -> str:
        return f"HelixNode({self.key!r})"

    def __reduce__(self):  # type: ignore[override]
        return HelixNode, (self.key, self.dask, self._meta, None, self._length)


_NOT_PROXIED = frozenset({"expr"})
"""Attributes Dask probes on every collection: never turned into nodes."""


@dataclass(frozen=True, slots=True, eq=False)
class _Watch:
    """What a node was signed from that may still change before it is computed: the task's
    code and the mutable argument values, with their fingerprints at signing time."""

    key: str
    task: HelixTask
    code: str
    values: tuple[tuple[str, object, str], ...]
    parents: tuple[_Watch, ...]


_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), range)
_ATOMS = frozenset(_IMMUTABLE)
"""Exact types of arguments that hold no node, no collection and no code."""


def _watches(root: _Watch) -> Iterator[_Watch]:
    seen: set[int] = set()
    stack = [root]
    while stack:
        w = stack.pop()
        if id(w) in seen:
            continue
        seen.add(id(w))
        yield w
        stack.extend(w.parents)


def _check_unchanged(root: _Watch) -> None:
    """Raise if an argument or a global changed between building a node and computing it:
    its result would be stored under a signature that did not produce it."""
    codes: dict[int, str] = {}
    values: dict[int, str] = {}  # one fingerprint per object, however many nodes it feeds
    for w in _watches(root):
        for name, value, before in w.values:
            now = values.get(id(value))
            if now is None:
                now = values[id(value)] = fingerprint_value(
                    value, path=name, substitute=_node_signature
                )
            if now != before:
                raise HelixSignatureError(
                    f"argument {name!r} of node {w.key!r} was modified after the node was "
                    "built; helix signs arguments when a task is called, so build the node "
                    "after the change, or pass a copy"
                )
        task = w.task
        if not w.code:
            continue  # not deterministic: never signed by its code
        if id(task) not in codes:
            codes[id(task)] = code_fingerprint(task.func, untracked=task.untracked).digest
        if codes[id(task)] != w.code:
            raise HelixSignatureError(
                f"the code or a global read by task {task.name!r} (node {w.key!r}) changed "
                "after the node was built; build the node again after the change"
            )


def _node_signature(obj: object) -> str | None:
    return obj.signature if isinstance(obj, HelixNode) else None


Known = Callable[[object], "str | None"]
"""The fingerprint a caller has just computed for an argument value (with upstream nodes
substituted by their signatures, as :func:`_node_signature` does), or None."""

_KNOWN: contextvars.ContextVar[Known | None] = contextvars.ContextVar("helix_known", default=None)


@contextlib.contextmanager
def known_fingerprints(known: Known) -> Iterator[None]:
    """Sign the nodes built inside with the argument fingerprints ``known`` returns, instead
    of computing them again. Only for a caller that fingerprinted those very objects in the
    same synchronous build: a value changed since is caught when the node is computed."""
    token = _KNOWN.set(known)
    try:
        yield
    finally:
        _KNOWN.reset(token)


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


def _rebuild(dsk: Any, meta: NodeMeta, *, rename: Mapping | None = None) -> HelixNode:
    """A node over a persisted graph: its values are held, so nothing is left to watch."""
    key = f"{meta.name}-{meta.signature}"
    if not isinstance(dsk, HighLevelGraph):
        dsk = HighLevelGraph.from_collections(key, dsk, dependencies=())
    return HelixNode(key, dsk, meta)


class HelixTask(Generic[P]):
    """A function decorated with :func:`task`; calling it returns a :class:`HelixNode`."""

    def __init__(
        self,
        func: Callable[P, Any],
        *,
        name: str | None = None,
        deterministic: bool = True,
        materialize: bool | None = None,
        metrics: bool = False,
        untracked: Iterable[str] = (),
        nout: int | None = None,
    ) -> None:
        if not callable(func):
            raise HelixConfigError(f"@hx.task expects a function, got {type(func).__name__}")
        self.func = func
        self.name = name or getattr(func, "__name__", type(func).__name__)
        if not self.name or "-" in self.name:
            raise HelixConfigError(
                f"task name {self.name!r} must be non-empty and contain no '-'; pass name=..."
            )
        self.deterministic = deterministic
        self.materialize = materialize
        self.metrics = metrics
        self.untracked = tuple(untracked)
        if not (nout is None or (type(nout) is int and nout >= 0)):
            raise HelixConfigError(f"nout must be None or an int >= 0, got {nout!r}")
        self.nout = nout
        self._versions: dict[str, dict[str, str]] = {}
        self._binder: tuple[tuple[object, ...], Binder] | None = None
        functools.update_wrapper(self, func)  # sets __wrapped__, so signatures follow the source

    def _bind(self, args: tuple, kwargs: dict) -> tuple[dict[str, Any], frozenset[str]]:
        """The call's arguments by parameter name, defaults applied (f(x) and f(x, C=1.0)
        with default C=1.0 run the same), and the names the call passed."""
        self._binder = binder_for(self.func, self._binder)
        try:
            if self._binder is None:
                return Binder(inspect.signature(self.func)).bind(args, kwargs)
            return self._binder[1].bind(args, kwargs)
        except TypeError as exc:
            raise HelixSignatureError(
                f"task {self.name!r} was called with arguments that do not match its "
                f"signature ({exc}); fix the call"
            ) from exc

    def _code_versions(self, fingerprint: CodeFingerprint) -> dict[str, str]:
        """Bytecode digests of the code this task's signature covers, computed once per code
        digest: the worker compares them with the code it has loaded."""
        found = self._versions.get(fingerprint.digest)
        if found is None:
            found = code_versions(self.func, fingerprint.sources, fingerprint.constants)
            self._versions = {fingerprint.digest: found}  # only the current code's
        return found

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        """A task defined as a method: the instance is its first argument (and is signed)."""
        if instance is None:
            return self
        return functools.partial(self.__call__, instance)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> HelixNode:
        label = str(kwargs.pop("hx_name", None) or kwargs.pop("dask_key_name", None) or "")
        kwargs.pop("dask_key_name", None)
        parents: dict[str, HelixNode] = {}
        nested = 0

        def ref(obj: object) -> object:
            """Replace nested helix nodes by references, through the containers that
            ``dask.delayed`` traverses; reject other Dask collections."""
            nonlocal nested
            if type(obj) in _ATOMS:
                return obj
            if isinstance(obj, HelixNode):
                parents[obj.key] = obj
                nested += 1
                return TaskRef(obj.key)
            if dask.is_dask_collection(obj):
                raise HelixSignatureError(
                    f"an argument of task {self.name!r} is a Dask collection "
                    f"({type(obj).__name__}) that is not a helix task; decorate its producer "
                    "with @hx.task or compute it first"
                )
            before = nested
            typ = type(obj)
            if typ in (list, tuple, set, frozenset):
                out: object = typ(ref(o) for o in obj)  # type: ignore[call-arg]
            elif typ is dict:
                out = {k: ref(v) for k, v in obj.items()}  # type: ignore[attr-defined]
            elif isinstance(obj, tuple) and hasattr(typ, "_fields"):  # a NamedTuple
                items = [ref(o) for o in obj]
                out = Task(None, _construct, typ, parse_input(items), parse_input({}))
            elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
                values = {
                    f.name: ref(getattr(obj, f.name))
                    for f in dataclasses.fields(obj)
                    if f.init and hasattr(obj, f.name)
                }
                out = Task(None, _replace, obj, parse_input(values)) if nested > before else obj
            else:
                return obj
            return out if nested > before else obj

        targs = [ref(a) for a in args]
        tkwargs = {k: ref(v) for k, v in kwargs.items()}
        fingerprint = code_fingerprint(self.func, untracked=self.untracked)
        try:
            arguments, passed = self._bind(args, kwargs)
        except (HelixSignatureError, ValueError):
            if self.deterministic:
                raise
            arguments, passed = {}, frozenset()  # not signed: Dask reports the call
        if self.deterministic:
            code = fingerprint.digest
            argfp = fingerprint_arguments(
                arguments, task_name=self.name, is_node=_node_signature, known=_KNOWN.get()
            )
            parent_sigs = [p.signature for p in parents.values()]
            sig = node_signature(name=self.name, code=code, args=argfp, parents=parent_sigs)
        else:
            code, argfp, sig = "", {}, uuid.uuid4().hex
        key = f"{self.name}-{sig}"
        watch = _Watch(
            key,
            self,
            code,
            _mutable_values(arguments, passed, argfp),
            tuple(p._watch for p in parents.values() if p._watch is not None),
        )
        meta = NodeMeta(
            name=self.name,
            signature=sig,
            code=code,
            args=argfp,
            parents=tuple(parents),
            deterministic=self.deterministic,
            materialize=self.materialize,
            metrics=self.metrics,
            arg_values=_argument_values(arguments, argfp),
            sources=fingerprint.sources,  # shared by every node of this code: never mutated
            packages=fingerprint.packages,
            message=str(dask.config.get("helix.message", "") or ""),
            label=label,
            covers=_covered_by_arguments(args, kwargs) if self.deterministic else (),
        )
        spec = Task(
            key,
            NodeCall(self.func, key, self._code_versions(fingerprint)),
            *[parse_input(a) for a in targs],
            **{k: parse_input(v) for k, v in tkwargs.items()},
        )
        # What dask.annotate(...) would give the layer, without entering a context per node.
        layer = MaterializedLayer(
            {key: spec}, annotations={**dask.get_annotations(), ANNOTATION: meta.to_annotation()}
        )
        hlg = HighLevelGraph.from_collections(key, layer, dependencies=list(parents.values()))
        return HelixNode(key, hlg, meta, watch, self.nout)

    def __repr__(self) -> str:
        return f"<helix task {self.name!r}>"


def _covered_by_arguments(args: tuple, kwargs: dict) -> tuple[str, ...]:
    """Project classes (with their bases) and functions whose code the argument fingerprints
    include: a trace that runs their methods finds nothing new there."""
    if all(type(v) in _ATOMS or isinstance(v, HelixNode) for v in (*args, *kwargs.values())):
        return ()
    from ._origin import is_local_object

    found: set[str] = set()
    seen: set[int] = set()

    def visit(value: object, depth: int) -> None:
        if depth > 3 or id(value) in seen or isinstance(value, (*_IMMUTABLE, HelixNode)):
            return
        seen.add(id(value))
        if isinstance(value, type | types.FunctionType):
            if is_local_object(value):
                found.add(f"{value.__module__}.{value.__qualname__}")
            if isinstance(value, type):
                for base in value.__mro__[1:]:
                    visit(base, depth)
            return
        if isinstance(value, functools.partial):
            visit(value.func, depth)
            return
        cls = type(value)
        if isinstance(value, list | tuple | set | frozenset) and len(value) <= 1000:
            for item in value:
                visit(item, depth + 1)
        elif isinstance(value, dict) and len(value) <= 1000:
            for item in value.values():
                visit(item, depth + 1)
        elif is_local_object(cls):
            visit(cls, depth)
            for item in getattr(value, "__dict__", {}).values():
                visit(item, depth + 1)

    for value in (*args, *kwargs.values()):
        visit(value, 0)
    return tuple(sorted(found))


def _construct(typ: type, items: list, kwargs: dict) -> object:
    """Rebuild a NamedTuple whose fields held helix nodes, with their values."""
    return typ(*items, **kwargs)


def _replace(obj: object, values: dict) -> object:
    """A copy of the dataclass ``obj`` whose fields that held helix nodes hold their values."""
    return dataclasses.replace(obj, **values)  # type: ignore[type-var]


def _mutable_values(
    arguments: Mapping[str, object], passed: frozenset[str], fingerprints: Mapping[str, str]
) -> tuple[tuple[str, object, str], ...]:
    """The arguments passed whose content could change before compute, with their
    fingerprints."""
    if not fingerprints:
        return ()
    return tuple(
        (name, value, fingerprints[name])
        for name, value in arguments.items()
        if name in passed
        and name in fingerprints
        and not isinstance(value, (*_IMMUTABLE, HelixNode))
    )


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlist = _REPR.maxdict = 6


_SECRET = re.compile(
    r"pass(word|wd|phrase)|secret|token|api_?key|access_?key|private_?key|credential|cookie"
    r"|authorization|(^|_)(auth|pwd|key)$",
    re.IGNORECASE,
)
"""Argument names whose values are never written to the catalog (``helix.redact``)."""

REDACTED = "<redacted>"


def redacted(name: str) -> bool:
    """Whether the value of argument ``name`` is left out of the catalog and the API:
    ``helix.redact`` is ``secrets`` (default: names like ``api_key``, ``password``,
    ``token``), ``all`` or ``none``."""
    return _redacted(str(dask.config.get("helix.redact", "secrets")), name)


@functools.lru_cache(maxsize=4096)
def _redacted(mode: str, name: str) -> bool:
    if mode == "all":
        return True
    return mode != "none" and _SECRET.search(name) is not None


def _argument_values(
    arguments: Mapping[str, object], fingerprints: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A short readable form of each bound argument: ``<task>`` for upstream nodes; values of
    arguments whose names look like secrets are redacted. ``fingerprints`` (the arguments'
    signing fingerprints) let an estimator's text be reused for an equal estimator."""
    mode = str(dask.config.get("helix.redact", "secrets"))
    out = {}
    for name, value in arguments.items():
        if _redacted(mode, name) and not isinstance(value, HelixNode):
            out[name] = REDACTED
        elif fingerprints and name in fingerprints and _is_estimator(value):
            out[name] = _estimator_text(value, fingerprints[name])
        else:
            out[name] = _shown(value)
    return out


_ESTIMATOR_TEXTS: dict[tuple[str, bool], str] = {}
_ESTIMATOR_TEXTS_MAX = 4096


def _estimator_text(value: Any, fingerprint: str) -> str:
    """``_shown(value)`` for an estimator, pretty-printed once per fingerprint: its class
    (code or version) and parameters, which are all its text shows."""
    import sklearn

    key = (fingerprint, bool(sklearn.get_config()["print_changed_only"]))
    text = _ESTIMATOR_TEXTS.get(key)
    if text is None:
        if len(_ESTIMATOR_TEXTS) >= _ESTIMATOR_TEXTS_MAX:
            _ESTIMATOR_TEXTS.clear()
        text = _ESTIMATOR_TEXTS[key] = _shown(value)
    return text


_ESTIMATOR_REPR_CHARS = 20_000
"""Longer scikit-learn estimator reprs are shortened like other values (80 characters)."""


def _shown(value: Any) -> str:
    """``<task>`` for an upstream node, also inside a list or tuple of them; an estimator's
    full repr (so ``helix diff`` can name its changed parameters); a short repr otherwise."""
    if isinstance(value, HelixNode):
        return f"<{value.meta.name}>"
    if type(value) in (list, tuple) and _holds_node(value):
        inner = ", ".join(_shown(v) for v in value)
        return f"[{inner}]" if type(value) is list else f"({inner}{',' if len(value) == 1 else ''})"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{type(value).__name__}(shape={tuple(value.shape)}, dtype={value.dtype})"
    if _is_estimator(value):
        try:
            text = value.__repr__(N_CHAR_MAX=_ESTIMATOR_REPR_CHARS)
        except TypeError:  # a project estimator's own __repr__ takes no limit
            text = ""
        if 0 < len(text) <= _ESTIMATOR_REPR_CHARS:
            return text
    return _REPR.repr(value)


def _holds_node(value: Any) -> bool:
    if isinstance(value, HelixNode):
        return True
    return type(value) in (list, tuple) and any(_holds_node(v) for v in value)


def _is_estimator(value: Any) -> bool:
    sklearn = sys.modules.get("sklearn.base")
    return sklearn is not None and isinstance(value, sklearn.BaseEstimator)


@overload
def task(func: Callable[P, R], /) -> HelixTask[P]: ...


@overload
def task(
    *,
    name: str | None = None,
    deterministic: bool = True,
    materialize: bool | None = None,
    metrics: bool = False,
    untracked: Iterable[str] = (),
    nout: int | None = None,
) -> Callable[[Callable[P, R]], HelixTask[P]]: ...


def task(
    func: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    deterministic: bool = True,
    materialize: bool | None = None,
    metrics: bool = False,
    untracked: Iterable[str] = (),
    nout: int | None = None,
) -> HelixTask[P] | Callable[[Callable[P, R]], HelixTask[P]]:
    """Make ``func`` a helix task: calls build lazy nodes that helix can load, prune or store.

    Parameters
    ----------
    func
        The function. Used bare (``@hx.task``) or with options (``@hx.task(name=...)``).
    name
        Task name shown in keys, the dashboard and the catalog (default: the function name).
    deterministic
        ``False`` for tasks whose result may differ between runs with the same inputs (random
        without a seed, reading a clock or a service): they always compute and are never reused.
    materialize
        ``True`` always stores the result, ``False`` never does; ``None`` (default) lets the
        materialization policy decide. The storage budget holds either way.
    metrics
        ``True`` when the task returns a dict of numbers to compare across versions
        (``helix metrics``, ``Catalog.metrics()``).
    untracked
        Names of globals the function uses that must not count in its signature (a logger, a
        connection), listed explicitly so nothing is ignored silently.
    nout
        The number of items the function returns, so a call can be unpacked
        (``X_train, X_test = split(data)``), as with ``dask.delayed``. Each item is a helix
        node (as are ``node[i]``, ``node["key"]`` and ``node.attr``).

    A call takes ``hx_name="..."`` (or ``dask_key_name=``) to name it in tables and DAGs,
    e.g. ``score(model, hx_name="logreg")``; the name does not change the signature.

    Examples
    --------
    >>> import helix_dask as hx
    >>> @hx.task
    ... def featurize(x, bins=10):
    ...     return [v // bins for v in x]
    >>> node = featurize([1, 25, 40], bins=20)
    >>> node.compute()
    [0, 1, 2]
    """
    options = dict(name=name, deterministic=deterministic, materialize=materialize, metrics=metrics)

    def wrap(f: Callable[P, R]) -> HelixTask[P]:
        return HelixTask(f, untracked=untracked, nout=nout, **options)  # type: ignore[arg-type]

    return wrap(func) if func is not None else wrap


def _get_item(obj: Any, index: Any) -> Any:
    return obj[index]


def _get_attribute(obj: Any, attr: str) -> Any:
    return getattr(obj, attr)


_item = HelixTask(_get_item, name="getitem")
_attribute = HelixTask(_get_attribute, name="getattr")
