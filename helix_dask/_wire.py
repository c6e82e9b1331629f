"""What crosses from the client to the scheduler and workers with every helix node: the
annotation key and :class:`NodeMeta`. Importing it pulls in no hashing code."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from dask.highlevelgraph import HighLevelGraph, MaterializedLayer

ANNOTATION = "helix"
"""The annotation key under which every helix node carries its :class:`NodeMeta`."""


@dataclass(frozen=True, slots=True)
class NodeMeta:
    """What the scheduler plugin needs to know about a node; travels as a Dask annotation."""

    name: str
    signature: str
    code: str
    args: Mapping[str, str]
    parents: tuple[str, ...]
    deterministic: bool
    materialize: bool | None
    metrics: bool = False
    arg_values: Mapping[str, str] = field(default_factory=dict)
    """Short, human-readable form of each argument (for diffs; never used for reuse)."""
    sources: Mapping[str, str] = field(default_factory=dict)
    """Normalized source of the function and every project helper it reaches (for diffs)."""
    packages: Mapping[str, str] = field(default_factory=dict)
    message: str = ""
    label: str = ""
    """A name the user gave this call (``hx_name=``), shown instead of the task name."""
    covers: tuple[str, ...] = ()
    """Project classes and functions whose code the argument fingerprints include."""

    def to_annotation(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in _FIELDS}
        d["parents"] = list(self.parents)
        d["covers"] = list(self.covers)
        return d

    @classmethod
    def from_annotation(cls, ann: Mapping[str, Any]) -> NodeMeta:
        known = _KNOWN
        d = {k: v for k, v in ann.items() if k in known}
        d["parents"] = tuple(d["parents"])
        d["covers"] = tuple(d.get("covers", ()))
        return cls(**d)


_FIELDS = tuple(f.name for f in fields(NodeMeta))
_KNOWN = frozenset(_FIELDS)
"""Read once: ``dataclasses.fields`` per node cost more than the rest of encoding or decoding
it."""


def with_message(graph: HighLevelGraph, key: str, message: str) -> HighLevelGraph:
    """``graph`` with ``message`` in the annotation of ``key``'s layer (a new graph; the
    layers are shared, only that one is copied)."""
    layer = graph.layers.get(key)
    ann = (layer.annotations or {}).get(ANNOTATION) if layer is not None else None
    if ann is None or not isinstance(layer, MaterializedLayer):
        return graph
    stamped = MaterializedLayer(
        layer.mapping, annotations={**layer.annotations, ANNOTATION: {**ann, "message": message}}
    )
    return HighLevelGraph({**graph.layers, key: stamped}, graph.dependencies)
