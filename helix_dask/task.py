"""The decorator: ``@hx.task`` turns a function into a factory of lazy, signed Dask nodes."""

from __future__ import annotations

import functools
import reprlib
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, ParamSpec, TypeVar, overload

import dask
from dask._task_spec import Task, TaskRef, parse_input
from dask.core import flatten
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from ._errors import HelixConfigError, HelixSignatureError
from ._wire import ANNOTATION, NodeMeta, with_message
from .signature import argument_fingerprints, code_fingerprint, node_signature

P = ParamSpec("P")
R = TypeVar("R")


class HelixNode(Delayed):
    """A lazy call of a helix task: a Dask collection (like ``dask.delayed``) with a signature.

    ``.compute()``, ``dask.compute``, ``client.compute``, ``.persist()`` and ``.visualize()``
    work as for any delayed value; the key reads ``<task name>-<signature>``.
    """

    __slots__ = ("_meta",)

    def __init__(self, key: str, dsk: HighLevelGraph, meta: NodeMeta) -> None:
        super().__init__(key, dsk)
        self._meta = meta

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

    @staticmethod
    def __dask_optimize__(dsk: HighLevelGraph, keys: Any, **kwargs: Any) -> HighLevelGraph:
        """Cull only: fusing would merge helix nodes and hide them from the plan."""
        return dsk.cull(set(flatten(keys)))

    def __repr__(self) -> str:
        return f"HelixNode({self.key!r})"

    def __reduce__(self):  # type: ignore[override]
        return HelixNode, (self.key, self.dask, self._meta)


def _rebuild(dsk: Any, meta: NodeMeta, *, rename: Mapping | None = None) -> HelixNode:
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
        functools.update_wrapper(self, func)  # sets __wrapped__, so signatures follow the source

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> HelixNode:
        parents: dict[str, HelixNode] = {}

        def ref(obj: object) -> object:
            """Replace nested helix nodes by references; reject other Dask collections."""
            if isinstance(obj, HelixNode):
                parents[obj.key] = obj
                return TaskRef(obj.key)
            if dask.is_dask_collection(obj):
                raise HelixSignatureError(
                    f"an argument of task {self.name!r} is a Dask collection "
                    f"({type(obj).__name__}) that is not a helix task; decorate its producer "
                    "with @hx.task or compute it first"
                )
            if isinstance(obj, (list, tuple, set, frozenset)) and type(obj) in (
                list,
                tuple,
                set,
                frozenset,
            ):
                return type(obj)(ref(o) for o in obj)
            if type(obj) is dict:
                return {k: ref(v) for k, v in obj.items()}
            return obj

        targs = [ref(a) for a in args]
        tkwargs = {k: ref(v) for k, v in kwargs.items()}
        fingerprint = code_fingerprint(self.func, untracked=self.untracked)
        if self.deterministic:
            code = fingerprint.digest
            argfp = argument_fingerprints(
                self.func,
                args,
                kwargs,
                task_name=self.name,
                is_node=lambda o: o.signature if isinstance(o, HelixNode) else None,
            )
            parent_sigs = [p.signature for p in parents.values()]
            sig = node_signature(name=self.name, code=code, args=argfp, parents=parent_sigs)
        else:
            code, argfp, sig = "", {}, uuid.uuid4().hex
        key = f"{self.name}-{sig}"
        meta = NodeMeta(
            name=self.name,
            signature=sig,
            code=code,
            args=argfp,
            parents=tuple(parents),
            deterministic=self.deterministic,
            materialize=self.materialize,
            metrics=self.metrics,
            arg_values=_argument_values(self.func, args, kwargs),
            sources=dict(fingerprint.sources),
            packages=dict(fingerprint.packages),
            message=str(dask.config.get("helix.message", "") or ""),
        )
        spec = Task(
            key,
            self.func,
            *[parse_input(a) for a in targs],
            **{k: parse_input(v) for k, v in tkwargs.items()},
        )
        with dask.annotate(**{ANNOTATION: meta.to_annotation()}):
            hlg = HighLevelGraph.from_collections(
                key, {key: spec}, dependencies=list(parents.values())
            )
        return HelixNode(key, hlg, meta)

    def __repr__(self) -> str:
        return f"<helix task {self.name!r}>"


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlist = _REPR.maxdict = 6


def _argument_values(func: Callable[..., Any], args: tuple, kwargs: dict) -> dict[str, str]:
    """A short readable form of each bound argument: ``<task>`` for upstream nodes."""
    import inspect

    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except (TypeError, ValueError):
        return {}
    out = {}
    for name, value in bound.arguments.items():
        if isinstance(value, HelixNode):
            out[name] = f"<{value.meta.name}>"
        elif hasattr(value, "shape") and hasattr(value, "dtype"):
            out[name] = f"{type(value).__name__}(shape={tuple(value.shape)}, dtype={value.dtype})"
        else:
            out[name] = _REPR.repr(value)
    return out


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
        return HelixTask(f, untracked=untracked, **options)  # type: ignore[arg-type]

    return wrap(func) if func is not None else wrap
