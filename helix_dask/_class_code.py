"""Code digests of project classes: normalized source and the names it reads, bases,
metaclass, and the live class dictionary (members assigned after the class statement and
methods replaced in place count; what dataclasses, namedtuple and enum generate does not)."""

from __future__ import annotations

import dataclasses
import enum
import functools
import sys
import types

from helix_dask._code_references import _CodeReferences
from helix_dask._fingerprint import Hasher
from helix_dask._guards import MISSING
from helix_dask._syntax import normalized_class


class _ClassCode(_CodeReferences):
    """Digests of project classes."""

    def class_digest(self, cls: type) -> str:
        name = f"{cls.__module__}.{cls.__qualname__}"
        known = self._enter(cls, "class", name)
        if known is not None:
            return known
        guards = self.guards
        guards.namespace(cls)  # members, and __module__ / __qualname__
        guards.attr(cls, "__bases__")
        guards.attr(cls, "__class__")
        h = Hasher()
        h.tag("class")
        norm = normalized_class(cls)
        guards.result(functools.partial(normalized_class, cls), norm)  # its file's lines
        if norm is not None:
            self.sources.setdefault(name, norm.text)
            h.field(norm.dump.encode())
            module = guards.item(sys.modules, cls.__module__)
            scope = vars(module) if module is not MISSING and module is not None else {}
            names = tuple(n for n in norm.names if guards.item(scope, n) is not MISSING)
            self._references(h, dataclasses.replace(norm, names=names), scope, cls.__module__, name)
        else:
            h.tag("members only")
        for base in cls.__bases__:
            h.field((self.object_digest(base, name, name) or "").encode())
        if type(cls) is not type:
            h.field((self.object_digest(type(cls), name, name) or "").encode())
        self._class_members(h, cls, name)
        return self._leave(cls, h.hexdigest())

    def _class_members(self, h: Hasher, cls: type, name: str) -> None:
        """The live class dict, by sorted name: what runs, including attributes assigned
        after the class statement and methods replaced in place."""
        namespace = vars(cls)
        generated = dataclasses.is_dataclass(cls) or (
            issubclass(cls, tuple) and "_fields" in namespace
        )
        for attr in sorted(namespace):
            if attr in _CLASS_MACHINERY or self._skip(attr, f"{name}.{attr}"):
                continue
            if issubclass(cls, enum.Enum) and _is_sunder(attr):
                continue  # enum bookkeeping; the members themselves count
            value = namespace[attr]
            if generated and _generated_code(value):
                continue  # made by dataclass/namedtuple from the fields written below
            h.field(attr.encode())
            h.field(self._member_digest(value, f"{name}.{attr}", name, attr).encode())
        annotations = namespace.get("__annotations__", {})
        self.guards.mapping(annotations)
        for attr, annotation in annotations.items():
            text = annotation if isinstance(annotation, str) else repr(annotation)
            h.field(f"{attr}: {text}".encode())
        if "__dataclass_fields__" in namespace:
            self.guards.mapping(namespace["__dataclass_fields__"])
            h.field(repr(namespace.get("__dataclass_params__")).encode())
            for f in namespace["__dataclass_fields__"].values():
                flags = (f.name, f._field_type, f.init, f.repr, f.hash, f.compare, f.kw_only)
                h.field(repr(flags).encode())
                for part in (f.default, f.default_factory):
                    where = f"{name}.{f.name}"
                    missing = part is dataclasses.MISSING
                    h.field(
                        b"-" if missing else self._member_digest(part, where, name, "").encode()
                    )
                metadata = dict(f.metadata)
                watch = tuple(metadata.values())
                h.field(self.value_digest(metadata, where, name, where, watch=watch).encode())


_CLASS_MACHINERY = frozenset(
    {
        "__dict__", "__weakref__", "__module__", "__doc__", "__qualname__", "__annotations__",
        "__orig_bases__", "__parameters__", "_abc_impl", "__dataclass_fields__",
        "__dataclass_params__", "__static_attributes__", "__firstlineno__", "__slotnames__",
    }
)  # fmt: skip
"""Class attributes that Python, abc, typing, dataclasses or copyreg keep (``__slotnames__``
is cached on the class by its first pickling): covered otherwise."""


def _is_sunder(name: str) -> bool:
    return len(name) > 2 and name[0] == name[-1] == "_" and name[1] != "_" and name[-2] != "_"


def _generated_code(value: object) -> bool:
    """Whether ``value`` is a method that dataclasses or namedtuple wrote from the fields."""
    func = value.__func__ if isinstance(value, staticmethod | classmethod) else value
    code = getattr(func, "__code__", None)
    if not isinstance(code, types.CodeType) or code.co_filename != "<string>":
        return False
    made_by = str(getattr(func, "__globals__", {}).get("__name__", ""))
    return code.co_qualname.startswith("__create_fn__.") or made_by.startswith("namedtuple_")
