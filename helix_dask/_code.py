"""Code fingerprints: the code a task runs, followed to everything it reaches.

Project-local code (``__main__`` and modules outside the standard library and site-packages)
is tracked by its normalized source, recursively through the helpers, classes, module
constants, closures and defaults it uses; libraries are tracked by the version of the
distribution that provides them. Globals are re-resolved on every call, so a helper redefined
in a notebook changes its callers.
"""

from __future__ import annotations

import builtins
import functools
import importlib.metadata
import logging
import os
import platform
import site
import sys
import sysconfig
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helix_dask._errors import HelixSignatureError
from helix_dask._fingerprint import CannotFingerprint, Hasher, fingerprint_value
from helix_dask._syntax import Normalized, local_imports, normalized_class, normalized_function

__all__ = ["CodeFingerprint", "code_fingerprint", "is_project_local"]

# Records keep the public module's name, which is what users filter on.
logger = logging.getLogger("helix_dask.signature")

# These names are public in helix_dask.signature. A code digest names the library objects a task
# calls by module ("helix_dask.signature.code_fingerprint"), and so do pickles: keep that module.
_PUBLIC_MODULE = "helix_dask.signature"


def _digest(kind: str, *parts: str) -> str:
    h = Hasher()
    h.tag(kind)
    for part in parts:
        h.field(part.encode())
    return h.hexdigest()


# ---------------------------------------------------------------- where code comes from


@functools.cache
def _library_roots() -> tuple[str, ...]:
    """Directories holding the standard library and installed packages."""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        roots.update(os.path.join(prefix, lib) for lib in ("lib", "lib64", "Lib"))
    if hasattr(site, "getsitepackages"):  # missing in some old virtualenv site.py copies
        roots.update(site.getsitepackages())
    roots.add(site.getusersitepackages())
    return tuple(sorted(os.path.realpath(root) for root in roots))


@functools.lru_cache(maxsize=8192)
def _is_project_path(filename: str) -> bool:
    if filename.startswith("<frozen"):
        return False
    if filename.startswith("<"):
        return True  # "<stdin>", "<string>", REPL input: the user's own code
    real = os.path.realpath(filename)
    return not any(real == root or real.startswith(root + os.sep) for root in _library_roots())


def is_project_local(module: types.ModuleType) -> bool:
    """Tell whether ``module`` is the user's code (tracked by source) or a library.

    ``__main__`` is project-local; built-in modules, ``helix_dask`` itself and modules under a
    standard-library or site-packages directory are not.

    Examples
    --------
    >>> import json
    >>> is_project_local(json)
    False
    """
    name = module.__name__
    if name == "__main__":
        return True
    if name.partition(".")[0] == "helix_dask" or name in sys.builtin_module_names:
        return False
    filename = getattr(module, "__file__", None)
    return bool(filename) and _is_project_path(filename)


def _is_local_object(obj: Any) -> bool:
    """Tell whether a function or class was defined in project-local code."""
    module_name = getattr(obj, "__module__", None)
    if isinstance(module_name, str):
        if module_name.partition(".")[0] == "helix_dask":
            return False
        module = sys.modules.get(module_name)
        if module is not None:
            return is_project_local(module)
    members = vars(obj).values() if isinstance(obj, type) else (obj,)
    for member in members:
        code = getattr(member, "__code__", None)
        if isinstance(code, types.CodeType):
            return _is_project_path(code.co_filename)
    # A named module that is no longer loaded: origin unknown, so track it rather than
    # risk a stale result.
    return isinstance(module_name, str)


@functools.cache
def _distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def _provides(meta: Path, top: str) -> bool:
    """Whether the ``*.dist-info`` / ``*.egg-info`` directory ``meta`` provides import name
    ``top``: by its ``top_level.txt`` if it has one, else by the ``.py`` files its file list
    names (the rule of :func:`importlib.metadata.packages_distributions`)."""
    declared = meta / "top_level.txt"
    if declared.is_file() and (names := declared.read_text(errors="replace").split()):
        return top in names
    for listing in ("RECORD", "installed-files.txt", "SOURCES.txt"):
        if not (meta / listing).is_file():
            continue
        text = (meta / listing).read_text(errors="replace")
        if f"{top}/" not in text and f"{top}.py" not in text:
            return False
        for line in text.splitlines():
            path = line.split(",", 1)[0].strip()
            if path.endswith(".py") and not path.startswith(("..", "/")):
                head, _, rest = path.partition("/")
                if (head if rest else head[: -len(".py")]) == top:
                    return True
        return False
    return False


def _metadata_name(meta: Path) -> str | None:
    for listing in ("METADATA", "PKG-INFO"):
        if (meta / listing).is_file():
            for line in (meta / listing).read_text(errors="replace").splitlines():
                if line.lower().startswith("name:"):
                    return line.split(":", 1)[1].strip()
                if not line.strip():
                    break
    return None


def _site_distributions(top: str) -> list[str] | None:
    """Names of the distributions in the directory the loaded module ``top`` was imported from
    that provide it; None when that cannot be told this way (namespace or unloaded package).

    Reads only that directory's metadata, where ``packages_distributions()`` reads the file lists
    of every installed distribution (about a second in a data-science environment).
    """
    file = getattr(sys.modules.get(top), "__file__", None)
    if not isinstance(file, str):
        return None
    where = Path(file).parent
    if Path(file).stem == "__init__":
        where = where.parent
    try:
        metas = [e for e in where.iterdir() if e.suffix in (".dist-info", ".egg-info")]
    except OSError:
        return None
    found = [
        name
        for meta in metas
        if meta.is_dir() and _provides(meta, top) and (name := _metadata_name(meta))
    ]
    return found or None


@functools.cache
def _package_versions(top: str) -> tuple[tuple[str, str], ...]:
    """Map a top-level import name to ``(distribution, version)`` pairs."""
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return (("python", platform.python_version()),)
    found = []
    providers = _site_distributions(top)
    if providers is None:
        providers = _distributions().get(top, [])
    for dist in sorted(set(providers)):
        try:
            found.append((dist, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            found.append((dist, "unknown"))
    if found:
        return tuple(found)
    version = getattr(sys.modules.get(top), "__version__", None)
    logger.debug("no installed distribution provides %r; recording version %r", top, version)
    return ((top, "unknown" if version is None else str(version)),)


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

    def record_package(self, module_name: str) -> None:
        self.packages.update(_package_versions(module_name.partition(".")[0]))

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

    def object_digest(self, obj: object, where: str, owner: str) -> str | None:
        """Digest of a module, class or callable; ``None`` for plain values."""
        if isinstance(obj, types.ModuleType):
            if not is_project_local(obj):
                self.record_package(obj.__name__)
            return _digest("module", obj.__name__)
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
        wrapped = getattr(obj, "__wrapped__", None) if callable(obj) else None
        if isinstance(wrapped, types.FunctionType) and _is_local_object(wrapped):
            return _digest("wrapped", self.function_digest(wrapped))  # e.g. helix task objects
        if callable(obj) and not _is_local_object(obj):
            module = getattr(obj, "__module__", None) or type(obj).__module__
            name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
            if isinstance(module, str) and isinstance(name, str):
                self.record_package(module)
                return _digest("external", module, name)
        return None

    def value_digest(
        self, obj: object, where: str, owner: str, what: str, untrack: str = ""
    ) -> str:
        def substitute(value: object) -> str | None:
            if callable(value) or isinstance(value, types.ModuleType):
                return self.object_digest(value, where, owner)
            return None

        try:
            return fingerprint_value(obj, path=where, substitute=substitute)
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
            if not hasattr(obj, attr):
                logger.debug("%s: %s has no attribute %r yet", owner, ".".join(path), attr)
                return _digest("missing", *path, attr)
            obj = getattr(obj, attr)
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
            if name not in scope:
                if not hasattr(builtins, name):
                    h.tag("unresolved")
                    h.field(name.encode())
                continue
            obj = scope[name]
            h.field(name.encode())
            if isinstance(obj, types.ModuleType) and is_project_local(obj) and name in chains:
                for chain in chains[name]:
                    h.field(".".join(chain).encode())
                    h.field(self._chain_digest(obj, chain[1:], owner).encode())
                continue
            h.field(self.reference_digest(obj, qualified, owner, name).encode())

    def _imports(
        self, h: Hasher, code: types.CodeType, func: types.FunctionType, owner: str
    ) -> None:
        package = func.__globals__.get("__package__") or ""
        for module_name, level, names in local_imports(code):
            base = package.rsplit(".", level - 1)[0] if level else ""
            absolute = ".".join(p for p in (base, module_name) if p)
            module = sys.modules.get(absolute)
            h.field(f"import {absolute}".encode())
            if module is None:
                logger.debug("%s imports %s, which is not imported yet", func, absolute)
                h.tag("not imported")
                continue
            if not names:
                h.field((self.object_digest(module, absolute, owner) or "").encode())
            for name in names:
                qualified = f"{absolute}.{name}"
                if self._skip(name, qualified):
                    continue
                if not hasattr(module, name) and qualified not in sys.modules:
                    h.field(_digest("missing", qualified).encode())
                    continue
                obj = getattr(module, name) if hasattr(module, name) else sys.modules[qualified]
                h.field(self.reference_digest(obj, qualified, owner, name).encode())

    def function_digest(self, func: types.FunctionType, *, root: bool = False) -> str:
        name = f"{func.__module__}.{func.__qualname__}"
        known = self._enter(func, "function", name)
        if known is not None:
            return known
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
        h.field(self.value_digest(defaults, "defaults", name, "a default value").encode())
        return self._leave(func, h.hexdigest())

    def class_digest(self, cls: type) -> str:
        name = f"{cls.__module__}.{cls.__qualname__}"
        known = self._enter(cls, "class", name)
        if known is not None:
            return known
        h = Hasher()
        h.tag("class")
        norm = normalized_class(cls)
        if norm is None:
            self._class_members(h, cls, name)
            return self._leave(cls, h.hexdigest())
        self.sources.setdefault(name, norm.text)
        h.field(norm.dump.encode())
        module = sys.modules.get(cls.__module__)
        scope = vars(module) if module is not None else {}
        # Class bodies bind names of their own (parameters, locals); keep only module globals.
        names = tuple(n for n in norm.names if n in scope)
        self._references(h, Normalized("", "", norm.chains, names), scope, cls.__module__, name)
        return self._leave(cls, h.hexdigest())

    def _class_members(self, h: Hasher, cls: type, name: str) -> None:
        """Explicit fallback for classes without source: bases and members, sorted."""
        for base in cls.__bases__:
            h.field((self.object_digest(base, name, name) or "").encode())
        skip = {"__dict__", "__weakref__", "__module__", "__doc__", "__qualname__"}
        for attr in sorted(set(vars(cls)) - skip):
            value = vars(cls)[attr]
            if isinstance(value, staticmethod | classmethod):
                value = value.__func__
            elif isinstance(value, property):
                value = (value.fget, value.fset, value.fdel)
            where = f"{name}.{attr}"
            h.field(attr.encode())
            found = self.object_digest(value, where, name)
            h.field((found or self.value_digest(value, where, name, where)).encode())


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
    walker = _CodeWalker(frozenset(untracked))
    name = _callable_name(func)
    if isinstance(func, types.FunctionType) and _is_local_object(func):
        root = walker.function_digest(func, root=True)
    else:
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
    h = Hasher()
    h.tag("code")
    h.field(root.encode())
    for dist, version in sorted(walker.packages.items()):
        h.field(dist.encode())
        h.field(version.encode())
    return CodeFingerprint(
        digest=h.hexdigest(),
        sources=dict(sorted(walker.sources.items())),
        constants=dict(sorted(walker.constants.items())),
        packages=dict(sorted(walker.packages.items())),
    )


CodeFingerprint.__module__ = code_fingerprint.__module__ = is_project_local.__module__ = (
    _PUBLIC_MODULE
)
