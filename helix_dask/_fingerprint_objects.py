"""Fingerprint rules for values no type registers (enum members, dataclasses, objects with
``__dask_tokenize__``, plain project objects) and the pieces rules share: attributes by sorted
name, slot names, integers as bytes, a class's qualified name."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from helix_dask._fingerprint import Hasher


def _int_bytes(n: int) -> bytes:
    return n.to_bytes(n.bit_length() // 8 + 1, "little", signed=True)


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', obj.__name__)}"


def _attributes(obj: object, names: Iterable[str], h: Hasher) -> None:
    """Write attributes by sorted name; an unset slot is told apart from every value."""
    names = sorted(set(names))
    h.field(_int_bytes(len(names)))
    for name in names:
        h.field(name.encode())
        try:
            value = getattr(obj, name)
        except AttributeError:
            h.tag("unset")
            continue
        h.nested(value, f".{name}")


def _slot_names(cls: type) -> list[str]:
    names = []
    for klass in cls.__mro__:
        slots = vars(klass).get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot in ("__dict__", "__weakref__"):
                continue
            private = slot.startswith("__") and not slot.endswith("__")
            names.append(f"_{klass.__name__.lstrip('_')}{slot}" if private else slot)
    return names


def _project_object(obj: object, h: Hasher) -> None:
    """An instance of a project class: its state (the class's code is written by dispatch)."""
    h.tag("object")
    h.field(_qualified(type(obj)).encode())
    _attributes(obj, [*getattr(obj, "__dict__", ()), *_slot_names(type(obj))], h)


def _enum_member(obj: enum.Enum, h: Hasher) -> None:
    # The value counts too: code compares and serializes members by value.
    h.tag("enum")
    h.field(f"{type(obj).__module__}.{type(obj).__qualname__}.{obj.name}".encode())
    h.nested(obj._value_, ".value")


def _dataclass_instance(obj: Any, h: Hasher) -> None:
    h.tag("dataclass")
    h.field(_qualified(type(obj)).encode())
    fields = dataclasses.fields(obj)
    for f in fields:
        h.field(f.name.encode())
        h.nested(getattr(obj, f.name), f".{f.name}")
    # Attributes set outside the fields (in __post_init__ or later) are state as well.
    named = {f.name for f in fields}
    _attributes(obj, [k for k in getattr(obj, "__dict__", ()) if k not in named], h)


def _dask_tokenize(obj: Any, h: Hasher) -> None:
    h.tag("dask_tokenize")
    h.field(_qualified(type(obj)).encode())
    h.nested(obj.__dask_tokenize__(), ".__dask_tokenize__()")
