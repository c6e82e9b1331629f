"""The decorator: ``@hx.task`` turns a function into a factory of lazy, signed Dask nodes.

A call binds its arguments, signs them with the task's code and its parents' signatures, and
returns a :class:`~helix_dask._node.HelixNode` over a one-task graph."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import inspect
import types
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, ParamSpec, TypeVar, overload

import dask
from dask._task_spec import Task, TaskRef, parse_input
from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

from ._argument_text import _argument_values
from ._binding import Binder, binder_for
from ._code_versions import code_versions
from ._errors import HelixConfigError, HelixSignatureError
from ._node import _ATOMS, _IMMUTABLE, HelixNode, _mutable_values, _node_signature, _Watch
from ._trace import NodeCall
from ._wire import ANNOTATION, NodeMeta
from .signature import (
    CodeFingerprint,
    code_fingerprint,
    fingerprint_arguments,
    node_signature,
)

P = ParamSpec("P")
R = TypeVar("R")


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
