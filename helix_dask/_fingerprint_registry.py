"""Which rule fingerprints a type: the registry of rules (``register``, ``register_lazy`` for
optional libraries), each type resolved once along its MRO to a rule and to where the type
comes from (project code or a distribution's version), and the hooks through which
:mod:`helix_dask._code` supplies code digests."""

from __future__ import annotations

import dataclasses
import enum
import importlib
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from helix_dask._errors import HelixSignatureError
from helix_dask._fingerprint_objects import (
    _dask_tokenize,
    _dataclass_instance,
    _enum_member,
    _project_object,
    _slot_names,
)

if TYPE_CHECKING:
    from helix_dask._fingerprint import Hasher

Handler = Callable[[Any, "Hasher"], None]
CodeIdentity = Callable[[object], str]
"""Code digest of a class or function met inside a value ("" for built-ins)."""
_H = TypeVar("_H", bound=Handler)

_REGISTRY: dict[type, Handler] = {}
_LAZY: dict[str, list[Callable[[], None]]] = {}
_RESOLVED: dict[type, tuple[Handler, type, object] | None] = {}
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


_HOOKS: list[tuple[Callable[[], CodeIdentity], Callable[[type], str | None]]] = []


def install_code_hooks(
    *, standalone: Callable[[], CodeIdentity], origin: Callable[[type], str | None]
) -> None:
    """Let value fingerprints include code: called once by :mod:`helix_dask._code`.

    ``standalone()`` builds a :data:`CodeIdentity` for one top-level fingerprint;
    ``origin(cls)`` is ``None`` for a project-local class (its code counts), else the text
    that stands for its provenance: ``"scikit-learn==1.5.0"``, or ``""`` for built-ins.
    """
    with _LOCK:
        _HOOKS[:] = [(standalone, origin)]
        _RESOLVED.clear()


def _hooks() -> tuple[Callable[[], CodeIdentity], Callable[[type], str | None]]:
    if not _HOOKS:
        importlib.import_module("helix_dask._code")  # installs the hooks; imports this module
    return _HOOKS[0]


def _standalone_code_identity() -> CodeIdentity:
    return _hooks()[0]()


_LOCAL = object()
"""Origin of a project-local class: its code digest is written, computed per call."""


def _origin(cls: type) -> object:
    found = _hooks()[1](cls)
    return _LOCAL if found is None else found


def _resolve(cls: type) -> tuple[Handler, type, object] | None:
    """Find the rule for ``cls`` and where ``cls`` comes from.

    Rules: enum, registry along the MRO, dataclass, dask token, then plain project objects.
    """
    found = _RESOLVED.get(cls, False)
    if found is not False:
        return found
    with _LOCK:
        for base in cls.__mro__:
            for loader in _LAZY.pop(base.__module__.partition(".")[0], ()):
                loader()
        origin = _origin(cls)
        handler: Handler | None = None
        base: type = cls
        if issubclass(cls, enum.Enum):
            handler = _enum_member
        else:
            for base in cls.__mro__:
                if base in _REGISTRY:
                    handler = _REGISTRY[base]
                    break
            else:
                base = cls
                if dataclasses.is_dataclass(cls):
                    handler = _dataclass_instance
                elif callable(getattr(cls, "__dask_tokenize__", None)):
                    handler = _dask_tokenize
                elif origin is _LOCAL and _plain_project_class(cls):
                    handler = _project_object
        result = None if handler is None else (handler, base, origin)
        _RESOLVED[cls] = result
    return result


def has_rule(cls: type) -> bool:
    """Whether values of type ``cls`` can be fingerprinted (their content may still fail)."""
    return _resolve(cls) is not None


def _plain_project_class(cls: type) -> bool:
    """Whether all of ``cls``'s state is its ``__dict__`` and slots: no base outside the
    project keeps state of its own (``abc``/``typing`` bases keep none)."""
    for base in cls.__mro__[1:]:
        if base is object or base.__module__ in ("abc", "typing"):
            continue
        if _origin(base) is not _LOCAL:
            return False
    return True


_SUBCLASS_STATE: dict[type, Callable[[Any], Iterable[str]]] = {}
"""Base type -> the names of the state a subclass adds, for bases whose instances keep a
``__dict__`` of their own (pandas' ``_metadata``)."""


def subclass_state(base: type) -> Callable[[Callable[[Any], Iterable[str]]], Any]:
    """Register how to find the attributes a subclass of ``base`` adds to its instances."""

    def decorator(func: Callable[[Any], Iterable[str]]) -> Callable[[Any], Iterable[str]]:
        _SUBCLASS_STATE[base] = func
        return func

    return decorator


def _subclass_state(obj: object, cls: type, base: type) -> list[str]:
    """Attributes an instance of ``cls`` keeps beyond what the rule for ``base`` writes: its
    slots below ``base`` and, when ``base`` instances have no ``__dict__``, its ``__dict__``."""
    names = [n for n in _slot_names(cls) if n not in set(_slot_names(base))]
    for klass in base.__mro__:
        if klass in _SUBCLASS_STATE:
            names.extend(_SUBCLASS_STATE[klass](obj))
            break
    else:
        if base.__dictoffset__ == 0:
            names.extend(getattr(obj, "__dict__", ()))
    return names


# Code that names these (a project registering its own rules) keeps the digest it had when they
# were defined in the value fingerprint module.
register.__module__ = register_lazy.__module__ = install_code_hooks.__module__ = (
    "helix_dask._fingerprint"
)
has_rule.__module__ = "helix_dask._fingerprint"
