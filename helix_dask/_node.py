"""The node: :class:`HelixNode`, the Dask collection a task call returns, and what it checks
when it is computed (its arguments and code unchanged since it was signed) before its graph is
sent."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dask
from dask.core import flatten
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from ._errors import HelixSignatureError
from ._submit import _send_requirement_digests, _submission
from ._wire import NodeMeta, with_message
from .signature import code_fingerprint, fingerprint_value

if TYPE_CHECKING:
    from .task import HelixTask


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
        from .task import _item  # the decorator's module imports this one

        return _item(self, index, hx_name=f"{self._label()}[{index!r}]")

    def __getattr__(self, attr: str) -> HelixNode:
        """``node.attr``: a helix node of its own (names starting with ``_`` are not proxied)."""
        if attr.startswith("_") or attr in _NOT_PROXIED:
            raise AttributeError(f"Attribute {attr} not found")
        from .task import _attribute

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


# Code digests name library classes by module and name (a task that checks
# ``isinstance(x, HelixNode)``), and pickles find them there: keep the name it was made with.
HelixNode.__module__ = "helix_dask.task"


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


def _rebuild(dsk: Any, meta: NodeMeta, *, rename: Mapping | None = None) -> HelixNode:
    """A node over a persisted graph: its values are held, so nothing is left to watch."""
    key = f"{meta.name}-{meta.signature}"
    if not isinstance(dsk, HighLevelGraph):
        dsk = HighLevelGraph.from_collections(key, dsk, dependencies=())
    return HelixNode(key, dsk, meta)


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
