"""Code fingerprints: the code a task runs, followed to everything it reaches.

Project-local code (see :mod:`helix_dask._origin`) is tracked by its normalized source,
recursively through the helpers, classes, module constants, closures, defaults and function
attributes it uses; libraries are tracked by the version of the distribution that provides them.
A class counts by its source and by its live members, so attributes assigned after the class
statement (``Thresholds.LEVEL = 9``) and methods replaced in place count. A project module used
as a value (``getattr(models, name)``) counts with everything defined in it. A helper
redefined in a notebook changes its callers: a function's last fingerprint is reused only while
everything its walk read is unchanged (:mod:`helix_dask._guards`).

This module also lends value fingerprints the code of the classes and functions met inside
values (:func:`helix_dask._fingerprint.install_code_hooks`).
"""

from __future__ import annotations

import builtins
import collections
import dataclasses
import enum
import functools
import logging
import sys
import threading
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from helix_dask._errors import HelixSignatureError
from helix_dask._fingerprint import (
    CannotFingerprint,
    CodeIdentity,
    Hasher,
    digest_of_strings,
    fingerprint_value,
    has_rule,
    install_code_hooks,
)
from helix_dask._guards import MISSING, Guards
from helix_dask._origin import (
    class_origin,
    import_project_module,
    is_project_local,
    module_origin_is_project,
    package_versions,
)
from helix_dask._origin import is_local_object as _is_local_object
from helix_dask._syntax import Normalized, local_imports, normalized_class, normalized_function

__all__ = ["CodeFingerprint", "code_fingerprint", "is_project_local"]

# Records keep the public module's name, which is what users filter on.
logger = logging.getLogger("helix_dask.signature")

# These names are public in helix_dask.signature. A code digest names the library objects a task
# calls by module ("helix_dask.signature.code_fingerprint"), and so do pickles: keep that module.
_PUBLIC_MODULE = "helix_dask.signature"


def _digest(kind: str, *parts: str) -> str:
    return digest_of_strings(kind, *parts)


# ---------------------------------------------------------------- code fingerprints


@dataclass(frozen=True)
class CodeFingerprint:
    """The code a task runs, as one digest plus the parts that explain a change.

    Attributes
    ----------
    digest
        Hex digest over the normalized code, everything it reaches and package versions.
    sources
        ``module.qualname`` -> normalized source of each project-local function/class included.
    constants
        ``module.NAME`` -> value fingerprint of each module-level constant read.
    packages
        Distribution (or top-level package) name -> version; ``python`` for the stdlib.
    """

    digest: str
    sources: Mapping[str, str]
    constants: Mapping[str, str]
    packages: Mapping[str, str]

    def __hash__(self) -> int:
        return hash(self.digest)


class _CodeWalker:
    """One traversal of the functions, classes and values a piece of code reaches."""

    def __init__(self, untracked: frozenset[str]) -> None:
        self.untracked = untracked
        self.sources: dict[str, str] = {}
        self.constants: dict[str, str] = {}
        self.packages: dict[str, str] = {}
        # id() keys only detect cycles and reuse work within this call; never hashed.
        self._memo: dict[int, str] = {}
        self._active: set[int] = set()
        self._alive: list[object] = []
        self.guards = Guards()  # what this walk read, to tell whether its result still holds

    def record_package(self, module_name: str) -> None:
        top = module_name.partition(".")[0]
        if top != "helix_dask":  # the library itself: its objects count by name
            self.packages.update(package_versions(top))

    def _enter(self, obj: object, kind: str, name: str) -> str | None:
        key = id(obj)
        if key in self._memo:
            return self._memo[key]
        if key in self._active:
            return _digest("cycle", kind, name)
        self._active.add(key)
        return None

    def _leave(self, obj: object, digest: str) -> str:
        self._active.discard(id(obj))
        self._memo[id(obj)] = digest
        self._alive.append(obj)
        return digest

    def identity(self, obj: object) -> str:
        """Code digest of a class, function or module met inside a value."""
        if isinstance(obj, type):
            if _is_local_object(obj):
                return self.class_digest(obj)
            if obj.__module__ == "builtins":
                return ""
            self.record_package(obj.__module__)
            return _digest("external", obj.__module__, obj.__qualname__)
        name = _callable_name(obj)
        return self.object_digest(obj, name, name) or ""

    def object_digest(self, obj: object, where: str, owner: str) -> str | None:
        """Digest of a module, class or callable; ``None`` for plain values."""
        if isinstance(obj, types.ModuleType):
            if is_project_local(obj):
                return self.module_digest(obj, owner)
            self.record_package(obj.__name__)
            return _digest("module", obj.__name__)
        if _is_singledispatch(obj):
            return self.singledispatch_digest(obj, where, owner)
        if isinstance(obj, type | types.FunctionType) and _is_local_object(obj):
            return self.class_digest(obj) if isinstance(obj, type) else self.function_digest(obj)
        if isinstance(obj, types.MethodType):
            func = self.object_digest(obj.__func__, f"{where}.__func__", owner) or ""
            what = f"the object bound to {where!r}"
            bound = self.value_digest(obj.__self__, f"{where}.__self__", owner, what)
            return _digest("method", func, bound)
        if isinstance(obj, functools.partial):
            func = self.object_digest(obj.func, f"{where}.func", owner) or ""
            what = f"an argument of partial {where!r}"
            bound = self.value_digest((obj.args, obj.keywords), f"{where}.args", owner, what)
            return _digest("partial", func, bound)
        if not callable(obj) or isinstance(obj, type | types.FunctionType):
            return self._external(obj)
        wrapped = self.guards.attr(obj, "__wrapped__")
        if wrapped is not MISSING and wrapped is not None:
            return self._wrapper_digest(obj, wrapped, where, owner)
        if not isinstance(obj, types.BuiltinFunctionType) and has_rule(type(obj)):
            # A callable object with state (np.vectorize, a project class with __call__).
            what = f"the callable {where!r}"
            return _digest("callable", self.value_digest(obj, where, owner, what))
        return self._external(obj)

    def _external(self, obj: object) -> str | None:
        """Library code: named by module and name, its distribution's version recorded."""
        if not callable(obj) or _is_local_object(obj):
            return None
        module = getattr(obj, "__module__", None) or type(obj).__module__
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        if isinstance(module, str) and isinstance(name, str):
            self.record_package(module)
            return _digest("external", module, name)
        return None

    def _wrapper_digest(self, obj: object, wrapped: object, where: str, owner: str) -> str:
        """A wrapper made with ``functools.update_wrapper``: the wrapped code plus the wrapper
        (a project decorator class by its code and state, a library one by version)."""
        inner = self.object_digest(wrapped, f"{where}.__wrapped__", owner)
        if inner is None:
            what = f"the function wrapped by {where!r}"
            inner = self.value_digest(wrapped, f"{where}.__wrapped__", owner, what)
        cls = self.guards.attr(obj, "__class__")
        if cls is _LRU_WRAPPER:
            _memo_follows(obj, inner)
        if cls.__module__.partition(".")[0] == "helix_dask":
            return _digest("wrapped", inner)  # a helix task: its own code is the function's
        if _is_local_object(cls):
            what = f"the decorator object {where!r}"
            return _digest("wrapped", inner, self.value_digest(obj, where, owner, what))
        self.record_package(cls.__module__)
        return _digest("wrapped", inner, f"{cls.__module__}.{cls.__qualname__}")

    def singledispatch_digest(self, func: Any, where: str, owner: str) -> str:
        """A ``functools.singledispatch`` function: the default and every registered one."""
        self.guards.namespace(func)
        self.guards.mapping(func.registry)
        parts = [self.object_digest(func.__wrapped__, f"{where}.__wrapped__", owner) or ""]
        registered = sorted(func.registry.items(), key=lambda kv: _callable_name(kv[0]))
        for cls, impl in registered:
            if impl is func.__wrapped__:
                continue
            parts += [_callable_name(cls), self.identity(cls)]
            parts.append(self.object_digest(impl, f"{where}.registry", owner) or "")
        return _digest("singledispatch", *parts)

    def module_digest(self, module: types.ModuleType, owner: str) -> str:
        """A project module used as a value: everything defined in it, by name."""
        name = module.__name__
        known = self._enter(module, "module", name)
        if known is not None:
            return known
        self.guards.namespace(module)
        h = Hasher()
        h.tag("module")
        h.field(name.encode())
        for attr, value in sorted(vars(module).items()):
            qualified = f"{name}.{attr}"
            if (attr.startswith("__") and attr.endswith("__")) or self._skip(attr, qualified):
                continue
            if isinstance(value, types.ModuleType) and not value.__name__.startswith(name + "."):
                continue  # an imported module: followed where the code uses it
            h.field(attr.encode())
            h.field(self.reference_digest(value, qualified, owner, attr).encode())
        return self._leave(module, h.hexdigest())

    def value_digest(
        self, obj: object, where: str, owner: str, what: str, untrack: str = "", *, watch=MISSING
    ) -> str:
        """Fingerprint of a value; ``watch`` is what may change in place (default: ``obj``)."""
        self.guards.value(obj if watch is MISSING else watch)

        def substitute(value: object) -> str | None:
            # Functions, classes and modules have value rules that ask self.identity; other
            # callables (library callables without a rule) are named here.
            if value is obj or not callable(value) or isinstance(value, type):
                return None
            if isinstance(value, types.FunctionType) and not _is_singledispatch(value):
                return None
            return self.object_digest(value, where, owner)

        try:
            return fingerprint_value(obj, path=where, substitute=substitute, code=self.identity)
        except CannotFingerprint as exc:
            fix = "pass it as an argument"
            if untrack:
                fix += f", or list it in untracked=({untrack!r},)"
            raise HelixSignatureError(f"{what} used by {owner!r} is {exc.what}; {fix}") from exc

    def reference_digest(self, obj: object, qualified: str, owner: str, untrack: str) -> str:
        """Digest of a global: code by source, libraries by version, constants by value."""
        found = self.object_digest(obj, qualified, owner)
        if found is not None:
            return found
        what = f"global {qualified!r}"
        value = self.value_digest(obj, qualified, owner, what, untrack)
        self.constants[qualified] = value
        return _digest("constant", value)

    def _skip(self, name: str, qualified: str) -> bool:
        return name in self.untracked or qualified in self.untracked

    def _chain_digest(self, module: types.ModuleType, attrs: Sequence[str], owner: str) -> str:
        """Follow ``module.a.b`` through project-local modules to the object it names."""
        obj: object = module
        path = [module.__name__]
        for attr in attrs:
            if not isinstance(obj, types.ModuleType):
                break
            if not is_project_local(obj):
                return self.object_digest(obj, ".".join(path), owner) or ""
            value = self.guards.attr(obj, attr)
            if value is MISSING:
                # A submodule not imported yet (also in a namespace package): the code
                # imports it by then, or fails; its code counts either way.
                found = import_project_module(".".join([*path, attr]), owner)
                if found is None:
                    logger.debug("%s: %s has no attribute %r yet", owner, ".".join(path), attr)
                    self.guards.unknown()  # a file may appear
                    return _digest("missing", *path, attr)
                obj = found
            else:
                obj = value
            path.append(attr)
        qualified = ".".join(path)
        if self._skip(path[-1], qualified):
            return _digest("untracked", qualified)
        return self.reference_digest(obj, qualified, owner, path[-1])

    def _references(
        self, h: Hasher, norm: Normalized, scope: Mapping[str, Any], module: str, owner: str
    ) -> None:
        chains: dict[str, list[tuple[str, ...]]] = {}
        for chain in norm.chains:
            chains.setdefault(chain[0], []).append(chain)
        for name in norm.names:
            qualified = f"{module}.{name}"
            if self._skip(name, qualified):
                continue
            obj = self.guards.item(scope, name)
            if obj is MISSING:
                if self.guards.attr(builtins, name) is MISSING:
                    h.tag("unresolved")
                    h.field(name.encode())
                elif name in _NAMESPACE_READERS:
                    h.field(self._namespace_digest(name, module, owner).encode())
                continue
            h.field(name.encode())
            if isinstance(obj, types.ModuleType) and name in chains and not is_project_local(obj):
                # Plain data a library module holds is process state (``sys.argv``): its
                # value counts, as a constant of the project's does.
                for chain in chains[name]:
                    value = self._library_data(obj, chain[1:])
                    if value is not MISSING:
                        h.field(".".join(chain).encode())
                        what = f"the value of {'.'.join(chain)!r}"
                        h.field(self.value_digest(value, ".".join(chain), owner, what).encode())
            elif (
                isinstance(obj, types.ModuleType)
                and is_project_local(obj)
                and name in chains
                and name not in norm.bare
            ):
                for chain in chains[name]:
                    h.field(".".join(chain).encode())
                    h.field(self._chain_digest(obj, chain[1:], owner).encode())
                continue
            h.field(self.reference_digest(obj, qualified, owner, name).encode())

    def _namespace_digest(self, reader: str, module: str, owner: str) -> str:
        """Code that calls ``globals()``, ``vars()``, ``eval`` or ``exec`` may read any name
        of its module, chosen at run time: the whole module counts (as a module used as a
        value does)."""
        found = self.guards.item(sys.modules, module)
        if isinstance(found, types.ModuleType) and is_project_local(found):
            return _digest("namespace", reader, self.module_digest(found, owner))
        self.guards.unknown()
        return _digest("namespace", reader, module)

    def _library_data(self, module: types.ModuleType, attrs: Sequence[str]) -> object:
        """The plain data (strings, numbers, and lists, tuples and dicts of them) that
        ``module.a.b`` names through library modules, or MISSING."""
        obj: object = module
        for attr in attrs:
            if not isinstance(obj, types.ModuleType):
                break
            obj = self.guards.attr(obj, attr)
            if obj is MISSING:
                return MISSING
        return obj if _plain_data(obj) else MISSING

    def _imports(
        self, h: Hasher, code: types.CodeType, func: types.FunctionType, owner: str
    ) -> None:
        imports = local_imports(code)
        if not imports:
            return
        package = self.guards.item(func.__globals__, "__package__")
        package = package if isinstance(package, str) else ""
        for module_name, level, names in imports:
            base = package.rsplit(".", level - 1)[0] if level else ""
            absolute = ".".join(p for p in (base, module_name) if p)
            h.field(f"import {absolute}".encode())
            module = self.guards.item(sys.modules, absolute)
            if module is MISSING or module is None:
                module = import_project_module(absolute, owner)
            if module is None:
                # A library not imported yet: its version counts, without importing it.
                if module_origin_is_project(absolute) is False:
                    self.record_package(absolute)
                    h.tag("library")
                else:
                    logger.debug("%s imports %s, which cannot be found", owner, absolute)
                    self.guards.unknown()  # it may be written later
                    h.tag("not found")
                continue
            if not names:
                h.field((self.object_digest(module, absolute, owner) or "").encode())
            for name in names:
                qualified = f"{absolute}.{name}"
                if self._skip(name, qualified):
                    continue
                obj = self.guards.attr(module, name)
                if obj is MISSING:
                    obj = self.guards.item(sys.modules, qualified)
                    if obj is MISSING or obj is None:
                        obj = import_project_module(qualified, owner)
                    if obj is None:
                        self.guards.unknown()  # found or not on the file system
                        h.field(_digest("missing", qualified).encode())
                        continue
                h.field(self.reference_digest(obj, qualified, owner, name).encode())

    def function_digest(self, func: types.FunctionType, *, root: bool = False) -> str:
        name = f"{func.__module__}.{func.__qualname__}"
        known = self._enter(func, "function", name)
        if known is not None:
            return known
        self.guards.function(func)
        code = func.__code__
        norm = normalized_function(code.co_filename, code.co_qualname, code, root)
        self.sources.setdefault(name, norm.text)
        h = Hasher()
        h.tag("function")
        h.field(norm.dump.encode())
        self._references(h, norm, func.__globals__, func.__module__, name)
        self._imports(h, code, func, name)
        for var, cell in zip(code.co_freevars, func.__closure__ or (), strict=True):
            if self._skip(var, f"{name}.{var}"):
                continue
            h.field(var.encode())
            try:
                value = cell.cell_contents
            except ValueError:
                h.tag("empty cell")
                continue
            what = f"closure variable {var!r}"
            found = self.object_digest(value, var, name)
            h.field((found or self.value_digest(value, var, name, what, var)).encode())
        defaults = (func.__defaults__, func.__kwdefaults__)
        changing = (func.__defaults__, tuple((func.__kwdefaults__ or {}).values()))
        what = "a default value"
        h.field(self.value_digest(defaults, "defaults", name, what, watch=changing).encode())
        # Attributes set on the function (helper.factor = 7) are state its code may read.
        for attr in sorted(vars(func)):
            if (attr.startswith("__") and attr != "__wrapped__") or self._skip(attr, attr):
                continue
            h.field(attr.encode())
            h.field(self._member_digest(vars(func)[attr], f"{name}.{attr}", name, attr).encode())
        return self._leave(func, h.hexdigest())

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

    def _member_digest(self, value: object, where: str, owner: str, untrack: str) -> str:
        if isinstance(value, staticmethod | classmethod):
            kind, value = type(value).__name__, value.__func__
        elif isinstance(value, property):
            parts = (value.fget, value.fset, value.fdel)
            return _digest(
                "property", *(self._member_digest(p, where, owner, untrack) for p in parts)
            )
        elif isinstance(value, functools.cached_property):
            kind, value = "cached_property", value.func
        elif isinstance(value, functools.singledispatchmethod):
            kind, value = "singledispatchmethod", value.dispatcher
        elif isinstance(value, types.MemberDescriptorType | types.GetSetDescriptorType):
            return _digest("descriptor", value.__name__)
        elif isinstance(value, _TUPLEGETTER):
            return _digest("tuplegetter", repr(value.__reduce__()[1]))
        else:
            kind = ""
        found = self.object_digest(value, where, owner)
        if found is None and hasattr(type(value), "__get__") and not has_rule(type(value)):
            # A library descriptor (sklearn's set_fit_request): made from the class's own
            # definitions, it counts by its type and package version.
            if class_origin(type(value)) is not None:
                self.record_package(type(value).__module__)
                return _digest("descriptor", kind, _callable_name(type(value)))
        if found is None:
            what = f"class attribute {where!r}" if untrack else where
            found = self.value_digest(value, where, owner, what, untrack)
        return _digest("member", kind, found)


_LRU_WRAPPER = type(functools.lru_cache(lambda: None))

_memos: collections.OrderedDict[int, tuple[object, str]] = collections.OrderedDict()
"""id of a ``functools.lru_cache``/``cache`` wrapper -> (it, the digest of the code it wraps
when last fingerprinted)."""
_memos_lock = threading.Lock()


def _memo_follows(wrapper: Any, inner: str) -> None:
    """Empty a memoizing wrapper whose code or state changed since it was last fingerprinted
    (a constant it reads set anew): what it holds is what the old code returned, which a
    fresh process would not; it fills again with what the current code returns."""
    with _memos_lock:
        known = _memos.get(id(wrapper))
        _memos[id(wrapper)] = (wrapper, inner)
        _memos.move_to_end(id(wrapper))
        while len(_memos) > _CACHE_SIZE:
            _memos.popitem(last=False)
    if known is not None and known[0] is wrapper and known[1] != inner:
        logger.info("helix emptied the cache of %s: the code it wraps changed", wrapper)
        wrapper.cache_clear()


_PLAIN = (str, bytes, int, float, bool, type(None))


def _plain_data(value: object, depth: int = 0) -> bool:
    """Whether ``value`` is plain data: built-in scalars and containers of them."""
    if type(value) in _PLAIN:
        return True
    if depth > 2 or type(value) not in (list, tuple, dict) or len(value) > 10_000:  # type: ignore[arg-type]
        return False
    items = value.items() if isinstance(value, dict) else enumerate(value)  # type: ignore[union-attr]
    return all(_plain_data(k, depth + 1) and _plain_data(v, depth + 1) for k, v in items)


_NAMESPACE_READERS = frozenset({"globals", "vars", "eval", "exec"})
"""Built-ins through which code reads its module's names by a computed name."""

_CLASS_MACHINERY = frozenset(
    {
        "__dict__", "__weakref__", "__module__", "__doc__", "__qualname__", "__annotations__",
        "__orig_bases__", "__parameters__", "_abc_impl", "__dataclass_fields__",
        "__dataclass_params__", "__static_attributes__", "__firstlineno__", "__slotnames__",
    }
)  # fmt: skip
"""Class attributes that Python, abc, typing, dataclasses or copyreg keep (``__slotnames__``
is cached on the class by its first pickling): covered otherwise."""

_TUPLEGETTER = type(collections.namedtuple("_Probe", "field").field)


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


def _is_singledispatch(obj: object) -> bool:
    return (
        isinstance(obj, types.FunctionType)
        and isinstance(getattr(obj, "registry", None), Mapping)
        and callable(getattr(obj, "dispatch", None))
        and getattr(obj, "__wrapped__", None) is not None
    )


def _callable_name(func: object) -> str:
    module = getattr(func, "__module__", None) or type(func).__module__
    name = getattr(func, "__qualname__", None) or type(func).__qualname__
    return f"{module}.{name}"


def code_fingerprint(func: Callable[..., Any], *, untracked: Iterable[str] = ()) -> CodeFingerprint:
    """Fingerprint the code ``func`` runs, including the project-local code it reaches.

    Parameters
    ----------
    func
        A function, lambda, nested function, ``functools.partial``, bound method or callable
        instance.
    untracked
        Global (``NAME`` or ``module.NAME``) or closure variable names to leave out, e.g. a
        lock or a cache the result does not depend on.

    Raises
    ------
    HelixSignatureError
        If a global, closure variable or default value cannot be fingerprinted.

    Examples
    --------
    >>> def double(x):
    ...     "Docstrings and comments do not count."
    ...     return 2 * x
    >>> len(code_fingerprint(double).digest)
    32
    """
    if isinstance(untracked, str):
        raise HelixSignatureError(
            f"untracked must be a collection of names, got the string {untracked!r}; "
            f"write untracked=({untracked!r},)"
        )
    untracked = frozenset(untracked)
    cacheable = type(func) is types.FunctionType
    if cacheable:
        with _CACHE_LOCK:
            cached = _CACHE.get((id(func), untracked))
        if cached is not None and cached[0] is func and cached[2].hold():
            with _CACHE_LOCK:
                if (id(func), untracked) in _CACHE:
                    _CACHE.move_to_end((id(func), untracked))
            return cached[1]
    walker = _CodeWalker(untracked)
    fingerprint = _walk(walker, func)
    if cacheable and not walker.guards.volatile:
        with _CACHE_LOCK:
            _CACHE[(id(func), untracked)] = (func, fingerprint, walker.guards)
            _CACHE.move_to_end((id(func), untracked))
            while len(_CACHE) > _CACHE_SIZE:
                _CACHE.popitem(last=False)
    return fingerprint


_CACHE: collections.OrderedDict[
    tuple[int, frozenset[str]], tuple[types.FunctionType, CodeFingerprint, Guards]
] = collections.OrderedDict()
"""(id of a function, untracked) -> the function (held, so the id stays its own), its last
fingerprint and what that walk read: reused while the guards hold."""
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 1024


def _walk(walker: _CodeWalker, func: Callable[..., Any]) -> CodeFingerprint:
    name = _callable_name(func)
    if (
        isinstance(func, types.FunctionType)
        and _is_local_object(func)
        and not _is_singledispatch(func)
    ):
        root = walker.function_digest(func, root=True)
    else:
        if isinstance(func, types.FunctionType):
            walker.guards.function(func)  # whether it is local, and its names
        found = walker.object_digest(func, name, name)
        if found is None and not callable(func):
            raise HelixSignatureError(
                f"code_fingerprint() expects a callable, got {type(func).__name__!r}; "
                "pass the function itself"
            )
        if found is None:  # a callable instance: its class's code plus its state
            code = walker.object_digest(type(func), name, name) or ""
            found = _digest("instance", code, walker.value_digest(func, name, name, name))
        root = found
    return CodeFingerprint(
        digest=_with_packages(root, walker.packages),
        sources=dict(sorted(walker.sources.items())),
        constants=dict(sorted(walker.constants.items())),
        packages=dict(sorted(walker.packages.items())),
    )


def _with_packages(root: str, packages: Mapping[str, str]) -> str:
    h = Hasher()
    h.tag("code")
    h.field(root.encode())
    for dist, version in sorted(packages.items()):
        h.field(dist.encode())
        h.field(version.encode())
    return h.hexdigest()


def _standalone_identity() -> CodeIdentity:
    """Code digests for one value fingerprint: each class or function with the versions of
    the packages it reaches, computed once per value."""
    memo: dict[int, str] = {}
    alive: list[object] = []  # keeps memo keys valid for the lifetime of this closure

    def identity(obj: object) -> str:
        key = id(obj)
        if key not in memo:
            walker = _CodeWalker(frozenset())
            root = walker.identity(obj)
            memo[key] = _with_packages(root, walker.packages) if root else ""
            alive.append(obj)
        return memo[key]

    return identity


install_code_hooks(standalone=_standalone_identity, origin=class_origin)

CodeFingerprint.__module__ = code_fingerprint.__module__ = is_project_local.__module__ = (
    _PUBLIC_MODULE
)
