"""Value fingerprints: a dispatch registry from types to stable ``xxh3_128`` digests.

A fingerprint depends only on an object's content, never on ``id()``, ``hash()``, memory
addresses, ``PYTHONHASHSEED`` or set/dict iteration order, so it is identical across processes
and sessions. Types without a registered rule raise :class:`CannotFingerprint`; there is no
silent fallback to ``repr()`` or ``pickle``.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import functools
import logging
import pathlib
import re
import threading
import types
from collections.abc import Callable
from typing import Any, TypeVar

import xxhash

from helix_dask._errors import HelixSignatureError

__all__ = [
    "CannotFingerprint",
    "Hasher",
    "fingerprint_value",
    "register",
    "register_lazy",
]

logger = logging.getLogger(__name__)

Handler = Callable[[Any, "Hasher"], None]
Substitute = Callable[[object], "str | None"]
_H = TypeVar("_H", bound=Handler)

_TAG = b"\x01"
_FIELD = b"\x02"
_CHUNK_BYTES = 4 << 20
# Atoms cannot contain themselves, so they skip the self-reference bookkeeping.
_ATOMS = (type(None), bool, int, float, complex, str, bytes)


class CannotFingerprint(HelixSignatureError):
    """A value (possibly nested in a container) that has no fingerprint rule.

    Callers catch it and re-raise a :class:`HelixSignatureError` that names the task, argument
    or global; :attr:`what` is the phrase to embed ("a value of type 'generator' at x[0]").
    """

    def __init__(self, reason: str, *, type_name: str = "", path: str = "value") -> None:
        self.reason = reason
        self.type_name = type_name
        self.path = path
        super().__init__(
            f"value of type {type_name!r} at {path} cannot be fingerprinted: {reason}; "
            "register a rule with helix_dask.signature.register(...) or pass another value"
        )

    @property
    def what(self) -> str:
        """Describe the offending value for an error message."""
        return f"a value of type {self.type_name!r} at {self.path} ({self.reason})"


def _type_name(cls: type) -> str:
    """Return ``qualname`` for builtins and ``module.qualname`` otherwise."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _render_path(path: tuple[Any, ...] | str) -> str:
    """Turn the linked path ``(parent, step)`` into text such as ``args[0]['x']``."""
    steps: list[str] = []
    node: Any = path
    while isinstance(node, tuple):
        node, step = node
        if isinstance(step, int):
            steps.append(f"[{step}]")
        elif isinstance(step, tuple):
            key = repr(step[0])
            steps.append(f"[{key if len(key) <= 40 else key[:37] + '...'}]")
        else:
            steps.append(step)
    return str(node) + "".join(reversed(steps))


class Hasher:
    """Incremental ``xxh3_128`` hasher used by fingerprint rules.

    Rules write structure with :meth:`tag` (type tags) and :meth:`field` (length-prefixed
    data), raw bulk data with :meth:`update`, and recurse with :meth:`nested` (inline) or
    :meth:`digest_of` (a separate digest, for sorting set elements or dict keys).

    Examples
    --------
    >>> h = Hasher()
    >>> h.tag("point")
    >>> h.field(b"1,2")
    >>> len(h.hexdigest())
    32
    """

    __slots__ = ("_active", "_path", "_state", "_substitute")

    def __init__(self) -> None:
        self._state = xxhash.xxh3_128()
        self._path: tuple[Any, ...] | str = "value"
        self._substitute: Substitute | None = None
        self._active: set[int] = set()

    def update(self, b: bytes | bytearray | memoryview) -> None:
        """Write raw bytes (no framing: the caller must tag and length-prefix around it)."""
        self._state.update(b)

    def tag(self, s: str) -> None:
        """Write a type tag with a length prefix, so different structures never collide."""
        self._state.update(self._tag_bytes(s))

    @staticmethod
    def _tag_bytes(s: str) -> bytes:
        data = s.encode()
        return _TAG + len(data).to_bytes(8, "little") + data

    def field(self, b: bytes) -> None:
        """Write one length-prefixed piece of data."""
        if len(b) <= 4096:  # one call is cheaper than two for the many small fields
            self._state.update(_FIELD + len(b).to_bytes(8, "little") + b)
        else:
            self._state.update(_FIELD + len(b).to_bytes(8, "little"))
            self._state.update(b)

    def hexdigest(self) -> str:
        """Return the 32-character hex digest of everything written so far."""
        return self._state.hexdigest()

    @property
    def path(self) -> str:
        """Where the value being hashed sits inside the top-level value, e.g. ``x[0]['k']``."""
        return _render_path(self._path)

    def nested(self, obj: object, step: int | str | tuple[object]) -> None:
        """Fingerprint ``obj`` inline; ``step`` is an index, a key as ``(key,)``, or ``.attr``."""
        outer = self._path
        self._path = (outer, step)
        try:
            _dispatch(obj, self)
        finally:
            self._path = outer

    def digest_of(self, obj: object, step: int | str | tuple[object]) -> str:
        """Fingerprint ``obj`` into a separate digest that shares this hasher's context."""
        child = Hasher()
        child._path = (self._path, step)
        child._substitute = self._substitute
        child._active = self._active
        _dispatch(obj, child)
        return child.hexdigest()

    def fail(self, obj: object, reason: str) -> CannotFingerprint:
        """Build the error for ``obj`` at the current path (the caller raises it)."""
        return CannotFingerprint(reason, type_name=_type_name(type(obj)), path=self.path)


_REGISTRY: dict[type, Handler] = {}
_LAZY: dict[str, list[Callable[[], None]]] = {}
_RESOLVED: dict[type, tuple[Handler, type] | None] = {}
_LOCK = threading.RLock()


def register(*types_: type) -> Callable[[_H], _H]:
    """Register a fingerprint rule for ``types_`` (and their subclasses, via the MRO).

    Examples
    --------
    >>> class Point:
    ...     def __init__(self, x, y):
    ...         self.x, self.y = x, y
    >>> @register(Point)
    ... def _(obj, h):
    ...     h.tag("Point")
    ...     h.nested(obj.x, ".x")
    ...     h.nested(obj.y, ".y")
    >>> fingerprint_value(Point(1, 2)) == fingerprint_value(Point(1, 2))
    True
    """
    for cls in types_:
        if not isinstance(cls, type):
            raise HelixSignatureError(
                f"register() expects classes, got {cls!r} of type {type(cls).__name__!r}; "
                "pass the class itself, e.g. register(MyType)"
            )

    def decorator(func: _H) -> _H:
        with _LOCK:
            for cls in types_:
                _REGISTRY[cls] = func
            _RESOLVED.clear()
        return func

    return decorator


def register_lazy(toplevel_module: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    """Run the decorated function once, when a value from ``toplevel_module`` is first seen.

    Used for optional libraries (pandas, scikit-learn) so they are imported only when the
    user's values come from them.

    Examples
    --------
    >>> @register_lazy("mylib")
    ... def _register_mylib():
    ...     import mylib
    ...
    ...     register(mylib.Thing)(lambda obj, h: h.tag("mylib.Thing"))
    """

    def decorator(func: Callable[[], None]) -> Callable[[], None]:
        with _LOCK:
            _LAZY.setdefault(toplevel_module, []).append(func)
            _RESOLVED.clear()
        return func

    return decorator


def _resolve(cls: type) -> tuple[Handler, type] | None:
    """Find the rule for ``cls``: enum, registry along the MRO, dataclass, dask token."""
    found = _RESOLVED.get(cls, False)
    if found is not False:
        return found
    with _LOCK:
        for base in cls.__mro__:
            for loader in _LAZY.pop(base.__module__.partition(".")[0], ()):
                loader()
        result: tuple[Handler, type] | None = None
        if issubclass(cls, enum.Enum):
            result = (_enum_member, cls)
        else:
            for base in cls.__mro__:
                if base in _REGISTRY:
                    result = (_REGISTRY[base], base)
                    break
            else:
                if dataclasses.is_dataclass(cls):
                    result = (_dataclass_instance, cls)
                elif callable(getattr(cls, "__dask_tokenize__", None)):
                    result = (_dask_tokenize, cls)
        _RESOLVED[cls] = result
    return result


def _dispatch(obj: object, h: Hasher) -> None:
    """Write the fingerprint of ``obj`` into ``h``."""
    if h._substitute is not None:
        replacement = h._substitute(obj)
        if replacement is not None:
            h.tag("substitute")
            h.field(replacement.encode())
            return
    cls = type(obj)
    found = _resolve(cls)
    if found is None:
        raise h.fail(obj, "no fingerprint rule is registered for this type")
    handler, base = found
    if base is not cls:
        # A subclass (namedtuple, IntEnum, np.float64) must not collide with its base.
        h.tag(f"{cls.__module__}.{cls.__qualname__}")
    if isinstance(obj, _ATOMS):
        handler(obj, h)
        return
    key = id(obj)  # only guards against self-reference; never part of the digest
    if key in h._active:
        raise h.fail(obj, "the value contains itself")
    h._active.add(key)
    try:
        handler(obj, h)
    finally:
        h._active.discard(key)


def fingerprint_value(
    obj: object, *, path: str = "value", substitute: Substitute | None = None
) -> str:
    """Return a stable 32-character hex fingerprint of ``obj``'s content.

    Parameters
    ----------
    obj
        Any value with a registered rule (built-ins, numpy, pandas, scikit-learn, dataclasses,
        enums, files, functions ...).
    path
        Name of the value in error messages (``"args"`` gives ``args[0]['x']``).
    substitute
        Called on every (nested) value; a returned string replaces that value's content.
        Used to let upstream lazy nodes contribute their signature.

    Raises
    ------
    CannotFingerprint
        If ``obj`` or something inside it has no rule; the message names type and path.

    Examples
    --------
    >>> fingerprint_value({"b": 1, "a": [1.0]}) == fingerprint_value({"a": [1.0], "b": 1})
    True
    """
    h = Hasher()
    h._path = path
    h._substitute = substitute
    _dispatch(obj, h)
    return h.hexdigest()


def _int_bytes(n: int) -> bytes:
    return n.to_bytes(n.bit_length() // 8 + 1, "little", signed=True)


def _qualified(obj: Any) -> str:
    return f"{getattr(obj, '__module__', None)}.{getattr(obj, '__qualname__', obj.__name__)}"


def _simple(tag: str, encode: Callable[[Any], bytes | str], *types_: type) -> None:
    """Register a rule that writes ``tag`` and one field, ``encode(obj)``."""

    header = Hasher._tag_bytes(tag)

    def rule(obj: Any, h: Hasher) -> None:
        data = encode(obj)
        if not isinstance(data, bytes):
            data = data.encode("utf-8", "surrogatepass")
        h._state.update(header + _FIELD + len(data).to_bytes(8, "little") + data)

    register(*types_)(rule)


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
_simple("type", lambda o: f"{o.__module__}.{o.__qualname__}", type)
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
    h.tag("dict")
    pairs = sorted((h.digest_of(k, ".keys()"), h.digest_of(v, (k,))) for k, v in obj.items())
    h.field(_int_bytes(len(pairs)))
    for key_digest, value_digest in pairs:
        h.field(key_digest.encode())
        h.field(value_digest.encode())


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


def _enum_member(obj: enum.Enum, h: Hasher) -> None:
    h.tag("enum")
    h.field(f"{type(obj).__module__}.{type(obj).__qualname__}.{obj.name}".encode())


def _dataclass_instance(obj: Any, h: Hasher) -> None:
    h.tag("dataclass")
    h.field(_qualified(type(obj)).encode())
    for f in dataclasses.fields(obj):
        h.field(f.name.encode())
        h.nested(getattr(obj, f.name), f".{f.name}")


def _dask_tokenize(obj: Any, h: Hasher) -> None:
    h.tag("dask_tokenize")
    h.field(_qualified(type(obj)).encode())
    h.nested(obj.__dask_tokenize__(), ".__dask_tokenize__()")


@register(types.FunctionType)
def _function(obj: types.FunctionType, h: Hasher) -> None:
    from helix_dask.signature import code_fingerprint  # signature imports this module

    h.tag("function")
    h.field(code_fingerprint(obj).digest.encode())


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


@register_lazy("numpy")
def _register_numpy() -> None:
    import numpy as np

    def dtype_text(dtype: np.dtype[Any]) -> bytes:
        # dtype.str keeps byte order and units ('<M8[ns]'); descr adds structured field names.
        return f"{dtype.str}|{dtype.descr if dtype.fields else ''}".encode()

    def contiguous_bytes(arr: np.ndarray[Any, Any], h: Hasher) -> None:
        h.field(_int_bytes(arr.nbytes))
        if arr.flags.c_contiguous:
            h.update(arr.reshape(-1).view(np.uint8))
            return
        # Copy at most ~4 MiB at a time; concatenated C-order chunks equal the C-order bytes.
        row_bytes = max(1, arr[:1].nbytes)
        rows = max(1, _CHUNK_BYTES // row_bytes)
        for start in range(0, arr.shape[0], rows):
            chunk = np.ascontiguousarray(arr[start : start + rows])
            h.update(chunk.reshape(-1).view(np.uint8))

    @register(np.ndarray)
    def _ndarray(obj: np.ndarray[Any, Any], h: Hasher) -> None:
        h.tag("ndarray")
        h.field(dtype_text(obj.dtype))
        h.field(repr(obj.shape).encode())
        if obj.dtype == object:
            object_elements(obj.ravel(), h)
        elif obj.dtype.hasobject:
            h.nested(obj.tolist(), ".tolist()")
        else:
            contiguous_bytes(obj, h)

    def object_elements(flat: np.ndarray[Any, Any], h: Hasher) -> None:
        items = flat.tolist()
        if all(type(x) is str for x in items):
            h.tag("str*")
            for x in items:
                h.field(x.encode("utf-8", "surrogatepass"))
            return
        for i, x in enumerate(items):
            h.nested(x, i)

    @register(np.ma.MaskedArray)
    def _masked(obj: np.ma.MaskedArray[Any, Any], h: Hasher) -> None:
        h.tag("MaskedArray")
        h.nested(obj.data, ".data")
        h.nested(np.ma.getmaskarray(obj), ".mask")
        h.nested(obj.fill_value, ".fill_value")

    @register(np.generic)
    def _scalar(obj: np.generic, h: Hasher) -> None:
        h.tag("numpy.scalar")
        h.field(dtype_text(obj.dtype))
        h.field(obj.tobytes())

    @register(np.dtype)
    def _dtype(obj: np.dtype[Any], h: Hasher) -> None:
        h.tag("numpy.dtype")
        h.field(dtype_text(obj))

    @register(np.ufunc, type(np.mean))
    def _numpy_function(obj: Any, h: Hasher) -> None:
        h.tag("numpy.function")
        h.field(f"{obj.__module__}.{obj.__name__}".encode())

    @register(np.random.RandomState)
    def _random_state(obj: np.random.RandomState, h: Hasher) -> None:
        h.tag("RandomState")
        h.nested(obj.get_state(legacy=False), ".get_state()")

    @register(np.random.Generator)
    def _generator(obj: np.random.Generator, h: Hasher) -> None:
        h.tag("Generator")
        h.nested(obj.bit_generator.state, ".bit_generator.state")


@register_lazy("pandas")
def _register_pandas() -> None:
    import numpy as np
    import pandas as pd

    def values(arr: Any, h: Hasher, step: str) -> None:
        """Hash a column/index array: its dtype, then its values (categoricals as codes)."""
        h.field(str(arr.dtype).encode())
        if isinstance(arr.dtype, pd.CategoricalDtype):
            h.nested(np.asarray(arr.codes), f"{step}.codes")
            h.nested(arr.categories, f"{step}.categories")
        elif isinstance(getattr(arr, "asi8", None), np.ndarray):
            h.nested(arr.asi8, f"{step}.asi8")  # datetimes/periods as int64; tz is in the dtype
        else:
            # numpy-backed data comes as a view; extension arrays with missing values or
            # strings become object arrays, hashed element-wise (NA and NaN have rules).
            h.nested(np.asarray(arr), step)

    @register(pd.Index)
    def _index(obj: pd.Index, h: Hasher) -> None:
        h.tag("pandas.Index")
        h.nested(list(obj.names), ".names")
        if isinstance(obj, pd.RangeIndex):
            h.nested(range(obj.start, obj.stop, obj.step), ".range")
        elif isinstance(obj, pd.MultiIndex):
            for i in range(obj.nlevels):
                values(obj.get_level_values(i).array, h, f".levels[{i}]")
        else:
            values(obj.array, h, ".values")

    @register(pd.Series)
    def _series(obj: pd.Series, h: Hasher) -> None:
        h.tag("pandas.Series")
        h.nested(obj.name, ".name")
        h.nested(obj.index, ".index")
        values(obj.array, h, ".values")

    @register(pd.DataFrame)
    def _frame(obj: pd.DataFrame, h: Hasher) -> None:
        h.tag("pandas.DataFrame")
        h.nested(obj.columns, ".columns")
        h.nested(obj.index, ".index")
        for i in range(obj.shape[1]):
            values(obj.iloc[:, i].array, h, f".iloc[:, {i}]")

    @register(pd.api.extensions.ExtensionArray)
    def _extension_array(obj: Any, h: Hasher) -> None:
        h.tag("pandas.ExtensionArray")
        values(obj, h, ".values")

    for cls in (pd.Timestamp, pd.Timedelta, pd.Period, pd.Interval):
        _simple(f"pandas.{cls.__name__}", repr, cls)  # exact: full precision, unit and tz
    _simple("pandas.NaT", lambda o: b"", type(pd.NaT))
    _simple("pandas.NA", lambda o: b"", type(pd.NA))


@register_lazy("sklearn")
def _register_sklearn() -> None:
    from sklearn.base import BaseEstimator
    from sklearn.tree._tree import Tree

    @register(BaseEstimator)
    def _estimator(obj: Any, h: Hasher) -> None:
        h.tag("sklearn.estimator")
        h.field(_qualified(type(obj)).encode())
        try:
            params = obj.get_params(deep=False)
        except AttributeError as exc:
            raise h.fail(obj, f"get_params() failed: {exc}") from exc
        h.nested(params, ".get_params()")
        fitted = sorted(k for k in vars(obj) if k.endswith("_") and not k.startswith("__"))
        for name in fitted:
            h.field(name.encode())
            h.nested(getattr(obj, name), f".{name}")

    @register(Tree)
    def _tree(obj: Any, h: Hasher) -> None:
        _cls, args, state = obj.__reduce__()
        h.tag("sklearn.Tree")
        h.nested(args, ".__reduce__()[1]")
        h.nested(state, ".__reduce__()[2]")
