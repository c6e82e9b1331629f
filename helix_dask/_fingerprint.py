"""Value fingerprints: the hasher rules write into, and each value dispatched to its rule, as a
stable ``xxh3_128`` digest. Which rule a type gets is resolved in
:mod:`helix_dask._fingerprint_registry`; the rules for values no type registers are in
:mod:`helix_dask._fingerprint_objects`, those for libraries in ``_fingerprint_<library>.py``.

A fingerprint depends only on an object's content, never on ``id()``, ``hash()``, memory
addresses, ``PYTHONHASHSEED`` or set iteration order, so it is identical across processes and
sessions. Dicts count in insertion order, which is observable (a DataFrame built from a dict
takes its column order). Types without a registered rule raise :class:`CannotFingerprint`;
there is no silent fallback to ``repr()`` or ``pickle``.

An instance also carries where its class comes from: the class's code digest when the class is
project-local (so editing a method changes the fingerprint of its instances), the version of the
distribution that provides it otherwise (so upgrading scikit-learn changes an estimator's).
The code side lives in :mod:`helix_dask._code`, which installs itself with
:func:`install_code_hooks`; this module never imports it at module level.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any

import xxhash

from helix_dask._errors import HelixSignatureError
from helix_dask._fingerprint_objects import _attributes
from helix_dask._fingerprint_registry import (
    _LOCAL,
    CodeIdentity,
    _resolve,
    _standalone_code_identity,
    _subclass_state,
    has_rule,
    install_code_hooks,
    register,
    register_lazy,
)

__all__ = [
    "CannotFingerprint",
    "CodeIdentity",
    "Hasher",
    "fingerprint_value",
    "has_rule",
    "install_code_hooks",
    "register",
    "register_lazy",
]

logger = logging.getLogger(__name__)

Substitute = Callable[[object], "str | None"]

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

    __slots__ = ("_active", "_code", "_path", "_state", "_substitute")

    def __init__(self) -> None:
        self._state = xxhash.xxh3_128()
        self._path: tuple[Any, ...] | str = "value"
        self._substitute: Substitute | None = None
        self._code: CodeIdentity | None = None
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
        child._code = self._code
        child._active = self._active
        _dispatch(obj, child)
        return child.hexdigest()

    def code_of(self, obj: object) -> str:
        """Code digest of a class or function (its source and what it reaches, or its
        package's version); "" for built-ins."""
        if self._code is None:
            self._code = _standalone_code_identity()
        return self._code(obj)

    def fail(self, obj: object, reason: str) -> CannotFingerprint:
        """Build the error for ``obj`` at the current path (the caller raises it)."""
        return CannotFingerprint(reason, type_name=_type_name(type(obj)), path=self.path)


def digest_of_strings(kind: str, *parts: str) -> str:
    """The digest of a few strings under a kind tag (each part length-framed)."""
    h = Hasher()
    h.tag(kind)
    for part in parts:
        h.field(part.encode())
    return h.hexdigest()


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
    handler, base, origin = found
    if base is not cls:
        # A subclass (namedtuple, IntEnum, np.float64) must not collide with its base.
        h.tag(f"{cls.__module__}.{cls.__qualname__}")
    if origin is _LOCAL:
        h.tag("class code")
        h.field(h.code_of(cls).encode())
    elif origin:
        h.tag("package")
        h.field(str(origin).encode())
    extra = _subclass_state(obj, cls, base) if origin is _LOCAL and base is not cls else ()
    if isinstance(obj, _ATOMS) and not extra:
        handler(obj, h)
        return
    key = id(obj)  # only guards against self-reference; never part of the digest
    if key in h._active:
        raise h.fail(obj, "the value contains itself")
    h._active.add(key)
    try:
        handler(obj, h)
        if extra:
            # A project subclass of a type with a rule (dict, list, ndarray, DataFrame): the
            # base's rule sees the base's content only; what the subclass adds is state too.
            h.tag("subclass state")
            _attributes(obj, extra, h)
    finally:
        h._active.discard(key)


def fingerprint_value(
    obj: object,
    *,
    path: str = "value",
    substitute: Substitute | None = None,
    code: CodeIdentity | None = None,
) -> str:
    """Return a stable 32-character hex fingerprint of ``obj``'s content.

    Parameters
    ----------
    obj
        Any value with a registered rule (built-ins, numpy, pandas, scikit-learn, dataclasses,
        enums, files, functions, project objects ...).
    path
        Name of the value in error messages (``"args"`` gives ``args[0]['x']``).
    substitute
        Called on every (nested) value; a returned string replaces that value's content.
        Used to let upstream lazy nodes contribute their signature.
    code
        Code digests of the classes and functions met; by default each is fingerprinted on
        its own, with the versions of the packages it reaches.

    Raises
    ------
    CannotFingerprint
        If ``obj`` or something inside it has no rule; the message names type and path.

    Examples
    --------
    >>> fingerprint_value({"a": 1, "b": [1.0]}) == fingerprint_value({"a": 1, "b": [1.0]})
    True
    >>> fingerprint_value({"a": 1, "b": 2}) == fingerprint_value({"b": 2, "a": 1})
    False
    """
    if substitute is not None and (replacement := substitute(obj)) is not None:
        # What _dispatch writes for a substituted value, without a Hasher (an upstream node).
        data = replacement.encode()
        return xxhash.xxh3_128_hexdigest(
            _SUBSTITUTE + _FIELD + len(data).to_bytes(8, "little") + data
        )
    h = Hasher()
    h._path = path
    h._substitute = substitute
    h._code = code
    _dispatch(obj, h)
    return h.hexdigest()


_SUBSTITUTE = Hasher._tag_bytes("substitute")


def _simple(tag: str, encode: Callable[[Any], bytes | str], *types_: type) -> None:
    """Register a rule that writes ``tag`` and one field, ``encode(obj)``."""

    header = Hasher._tag_bytes(tag)

    def rule(obj: Any, h: Hasher) -> None:
        data = encode(obj)
        if not isinstance(data, bytes):
            data = data.encode("utf-8", "surrogatepass")
        h._state.update(header + _FIELD + len(data).to_bytes(8, "little") + data)

    register(*types_)(rule)


@register_lazy("argparse")
def _register_argparse() -> None:
    import argparse

    from helix_dask._fingerprint_builtins import _namespace

    register(argparse.Namespace)(_namespace)


def _library_rules(toplevel_module: str) -> Callable[[], None]:
    def load() -> None:
        importlib.import_module(f"helix_dask._fingerprint_{toplevel_module}")  # registers

    return load


# Every class has `object` in its MRO: the rules for built-in and standard-library types load
# before the first lookup.
for _library in ("builtins", "numpy", "pandas", "sklearn"):
    register_lazy(_library)(_library_rules(_library))
