"""Fingerprint rules for built-in and standard-library values.

Registered before the first lookup (every class has ``object``, a built-in, in its MRO).
Functions, classes and modules count by their code digest, which :mod:`helix_dask._code`
computes (:meth:`Hasher.code_of`).
"""

from __future__ import annotations

import collections
import datetime
import decimal
import functools
import logging
import pathlib
import re
import types
from typing import Any

from helix_dask._fingerprint import Hasher, _simple, register
from helix_dask._fingerprint_objects import _attributes, _int_bytes, _qualified

_simple("None", lambda o: b"", type(None))
_simple("Ellipsis", lambda o: b"", type(Ellipsis))
_simple("bool", lambda o: b"1" if o else b"0", bool)
_simple("int", lambda o: _int_bytes(int(o)), int)
# repr() is exact, keeps -0.0 apart from 0.0 and maps every NaN payload to "nan".
_simple("float", float.__repr__, float)
_simple("complex", lambda o: f"{o.real!r},{o.imag!r}", complex)
_simple("str", lambda o: o, str)
_simple("bytes", bytes, bytes)
_simple("bytearray", bytes, bytearray)
_simple("memoryview", lambda o: f"{o.format}{o.shape}".encode() + o.tobytes(), memoryview)
_simple("range", lambda o: f"{o.start},{o.stop},{o.step}", range)
_simple("datetime", lambda o: f"{o.isoformat()}|{o.tzinfo}|{o.fold}", datetime.datetime)
_simple("time", lambda o: f"{o.isoformat()}|{o.tzinfo}|{o.fold}", datetime.time)
_simple("date", lambda o: o.isoformat(), datetime.date)
_simple("timedelta", lambda o: f"{o.days},{o.seconds},{o.microseconds}", datetime.timedelta)
_simple("tzinfo", str, datetime.tzinfo)
_simple("Decimal", str, decimal.Decimal)
_paths = (pathlib.PurePosixPath, pathlib.PureWindowsPath, pathlib.PosixPath, pathlib.WindowsPath)
_simple("path", str, pathlib.PurePath, pathlib.Path, *_paths)
# Loggers are configured outside the code; only their name is part of the value.
_simple("Logger", lambda o: o.name, logging.Logger)


@register(tuple, list)
def _sequence(obj: tuple[Any, ...] | list[Any], h: Hasher) -> None:
    h.tag("tuple" if isinstance(obj, tuple) else "list")
    h.field(_int_bytes(len(obj)))
    for i, item in enumerate(obj):
        h.nested(item, i)


@register(dict, types.MappingProxyType)
def _dict(obj: dict[Any, Any], h: Hasher) -> None:
    # Insertion order is observable (column order, iteration), so it counts.
    h.tag("dict")
    h.field(_int_bytes(len(obj)))
    for k, v in obj.items():
        h.nested(k, ".keys()")
        h.nested(v, (k,))


@register(collections.defaultdict)
def _defaultdict(obj: collections.defaultdict[Any, Any], h: Hasher) -> None:
    h.tag("defaultdict")
    h.nested(obj.default_factory, ".default_factory")
    _dict(obj, h)


@register(types.ModuleType)
def _module(obj: types.ModuleType, h: Hasher) -> None:
    # A project module counts with everything defined in it; a library one by version.
    h.tag("module")
    h.field(obj.__name__.encode())
    h.field(h.code_of(obj).encode())


@register(type)
def _type(obj: type, h: Hasher) -> None:
    # A class passed as a value is its code (project-local) or its package's version.
    h.tag("type")
    h.field(f"{obj.__module__}.{obj.__qualname__}".encode())
    h.field(h.code_of(obj).encode())


@register(types.SimpleNamespace)
def _namespace(obj: types.SimpleNamespace, h: Hasher) -> None:
    h.tag("namespace")
    h.field(_qualified(type(obj)).encode())
    _attributes(obj, vars(obj), h)


@register(set, frozenset)
def _set(obj: set[Any] | frozenset[Any], h: Hasher) -> None:
    h.tag("frozenset" if isinstance(obj, frozenset) else "set")
    digests = sorted(h.digest_of(item, ".<element>") for item in obj)
    h.field(_int_bytes(len(digests)))
    for digest in digests:
        h.field(digest.encode())


@register(slice)
def _slice(obj: slice, h: Hasher) -> None:
    h.tag("slice")
    h.nested(obj.start, ".start")
    h.nested(obj.stop, ".stop")
    h.nested(obj.step, ".step")


@register(re.Pattern)
def _pattern(obj: re.Pattern[Any], h: Hasher) -> None:
    h.tag("re.Pattern")
    h.nested(obj.pattern, ".pattern")
    h.field(_int_bytes(obj.flags))


@register(types.FunctionType)
def _function(obj: types.FunctionType, h: Hasher) -> None:
    h.tag("function")
    h.field(h.code_of(obj).encode())


@register(types.MethodType)
def _method(obj: types.MethodType, h: Hasher) -> None:
    h.tag("method")
    h.nested(obj.__func__, ".__func__")
    h.nested(obj.__self__, ".__self__")


@register(types.BuiltinFunctionType)
def _builtin(obj: types.BuiltinFunctionType, h: Hasher) -> None:
    h.tag("builtin")
    h.field(f"{obj.__module__}.{obj.__qualname__}".encode())
    owner = obj.__self__
    if owner is not None and not isinstance(owner, types.ModuleType):
        h.nested(owner, ".__self__")


@register(functools.partial)
def _partial(obj: functools.partial[Any], h: Hasher) -> None:
    h.tag("partial")
    h.nested(obj.func, ".func")
    h.nested(obj.args, ".args")
    h.nested(obj.keywords, ".keywords")
