"""Where code comes from: the project (tracked by source) or a library (tracked by version).

Project-local code is ``__main__`` and modules outside the standard library and site-packages,
including namespace packages (folders without ``__init__.py``). A library is identified by the
distribution that provides its top-level package, read from the metadata next to the package
(loaded or not) rather than from a scan of every installed distribution.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import site
import sys
import sysconfig
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from helix_dask._distributions import NOT_INSTALLED, _distribution_version
from helix_dask._errors import HelixSignatureError

__all__ = [
    "class_origin",
    "import_project_module",
    "is_local_object",
    "is_project_local",
    "module_origin_is_project",
    "package_versions",
]

# Records keep the public module's name, which is what users filter on.
logger = logging.getLogger("helix_dask.signature")


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


def _is_library_name(name: str) -> bool:
    top = name.partition(".")[0]
    return top == "helix_dask" or name in sys.builtin_module_names


def is_project_local(module: types.ModuleType) -> bool:
    """Tell whether ``module`` is the user's code (tracked by source) or a library.

    ``__main__`` is project-local; built-in modules, ``helix_dask`` itself and modules under a
    standard-library or site-packages directory are not. A namespace package (no
    ``__init__.py``) is project-local when its folders are.

    Examples
    --------
    >>> import json
    >>> is_project_local(json)
    False
    """
    name = module.__name__
    if name == "__main__":
        return True
    if _is_library_name(name):
        return False
    filename = getattr(module, "__file__", None)
    if filename:
        return _is_project_path(filename)
    folders = list(getattr(module, "__path__", None) or ())
    return bool(folders) and all(_is_project_path(folder) for folder in folders)


def module_origin_is_project(name: str) -> bool | None:
    """Whether the module ``name``, imported or not, is project code; ``None`` if not found.

    Finding a submodule imports its parent packages, as the import itself would.
    """
    module = sys.modules.get(name)
    if module is not None:
        return is_project_local(module)
    if _is_library_name(name) or name in sys.stdlib_module_names:
        return False
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        logger.debug("cannot locate module %r: %s", name, exc)
        return None
    if spec is None:
        return None
    if spec.origin and spec.origin not in ("built-in", "frozen", "namespace"):
        return _is_project_path(spec.origin)
    folders = list(spec.submodule_search_locations or ())
    return bool(folders) and all(_is_project_path(folder) for folder in folders)


def import_project_module(name: str, owner: str) -> types.ModuleType | None:
    """Import the project module ``name`` if it exists and is not imported yet: identical
    code gives an identical digest whether or not something imported it before."""
    if name in sys.modules:
        return sys.modules[name]
    if module_origin_is_project(name) is not True:
        return None
    try:
        return importlib.import_module(name)
    except Exception as exc:  # the module's own code failed: say which, do not guess
        raise HelixSignatureError(
            f"{owner!r} imports project module {name!r}, which fails to import "
            f"({type(exc).__name__}: {exc}); fix the module or import it at the top of the file"
        ) from exc


def is_local_object(obj: Any) -> bool:
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


def _provided(meta: Path) -> frozenset[str]:
    """The import names the ``*.dist-info`` / ``*.egg-info`` directory ``meta`` provides: its
    ``top_level.txt`` if it has one, else the top-level names of the ``.py`` files its file list
    names (the rule of :func:`importlib.metadata.packages_distributions`)."""
    declared = meta / "top_level.txt"
    if declared.is_file() and (names := declared.read_text(errors="replace").split()):
        return frozenset(names)
    for listing in ("RECORD", "installed-files.txt", "SOURCES.txt"):
        if not (meta / listing).is_file():
            continue
        tops = set()
        for line in (meta / listing).read_text(errors="replace").splitlines():
            path = line.split(",", 1)[0].strip()
            if path.endswith(".py") and not path.startswith(("..", "/")):
                head, _, rest = path.partition("/")
                tops.add(head if rest else head[: -len(".py")])
        return frozenset(tops)
    return frozenset()


_PROVIDERS: dict[Path, tuple[int, dict[str, list[Path]]]] = {}
"""Site directory -> (its modification time, import name -> metadata directories there that
provide it)."""


def _providers(where: Path) -> dict[str, list[Path]] | None:
    """Import name -> the metadata directories in ``where`` that provide it, in directory order;
    read once while the directory is unchanged (installing or removing a distribution there
    changes its modification time). None when ``where`` cannot be read."""
    try:
        stamp = where.stat().st_mtime_ns
        held = _PROVIDERS.get(where)
        if held is not None and held[0] == stamp:
            return held[1]
        metas = [e for e in where.iterdir() if e.suffix in (".dist-info", ".egg-info")]
    except OSError:
        return None
    index: dict[str, list[Path]] = {}
    for meta in metas:
        if meta.is_dir():
            for top in _provided(meta):
                index.setdefault(top, []).append(meta)
    _PROVIDERS[where] = (stamp, index)
    return index


def _metadata_name(meta: Path) -> str | None:
    for listing in ("METADATA", "PKG-INFO"):
        if (meta / listing).is_file():
            for line in (meta / listing).read_text(errors="replace").splitlines():
                if line.lower().startswith("name:"):
                    return line.split(":", 1)[1].strip()
                if not line.strip():
                    break
    return None


def _install_dir(top: str) -> Path | None:
    """The directory the top-level package ``top`` is (or would be) imported from."""
    file = getattr(sys.modules.get(top), "__file__", None)
    if isinstance(file, str):
        where = Path(file).parent
        return where.parent if Path(file).stem == "__init__" else where
    if top in sys.modules:
        return None  # loaded without a file (namespace or built-in): ask the full scan
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: imports nothing
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen", "namespace"):
        return None
    origin = Path(spec.origin)
    return origin.parent.parent if spec.submodule_search_locations else origin.parent


def _site_distributions(top: str) -> list[str] | None:
    """Names of the distributions in the directory ``top`` is imported from that provide it;
    None when that cannot be told this way (namespace package, module not found).

    Reads only that directory's metadata, where ``packages_distributions()`` reads the file lists
    of every installed distribution (about a second in a data-science environment), and reads it
    once for every name looked up there (see :func:`_providers`).
    """
    where = _install_dir(top)
    if where is None:
        return None
    providers = _providers(where)
    if providers is None:
        return None
    found = [name for meta in providers.get(top, ()) if (name := _metadata_name(meta))]
    return found or None


@functools.cache
def package_versions(top: str) -> tuple[tuple[str, str], ...]:
    """Map a top-level import name to ``(distribution, version)`` pairs."""
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return (("python", platform.python_version()),)
    found = []
    providers = _site_distributions(top)
    if providers is None:
        providers = _distributions().get(top, [])
    for dist in sorted(set(providers)):
        version = _distribution_version(dist)  # with its installed files' digest, cached
        found.append((dist, "unknown" if version == NOT_INSTALLED else version))
    if found:
        return tuple(found)
    version = getattr(sys.modules.get(top), "__version__", None)
    logger.debug("no installed distribution provides %r; recording version %r", top, version)
    return ((top, "unknown" if version is None else str(version)),)


@functools.lru_cache(maxsize=4096)
def _library_origin(module_name: str) -> str:
    top = module_name.partition(".")[0]
    if top in ("builtins", "helix_dask") or top in sys.stdlib_module_names:
        return ""  # a value's meaning does not change with the Python version
    return ";".join(f"{dist}=={version}" for dist, version in package_versions(top))


def class_origin(cls: type) -> str | None:
    """``None`` for a project-local class (its code counts), else its package's version
    (``"scikit-learn==1.5.0"``), or ``""`` for built-in, standard-library and helix types."""
    module = cls.__module__ if isinstance(cls.__module__, str) else ""
    if module == "builtins":
        return ""
    if is_local_object(cls):
        return None
    return _library_origin(module)
