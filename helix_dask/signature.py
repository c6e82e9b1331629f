"""Change-tracking signatures: what a task's result depends on, as stable hex digests.

A node's signature is a Merkle hash over its name, its code fingerprint, its argument
fingerprints and its parents' signatures. The code fingerprint covers the function's normalized
syntax tree (comments, formatting and docstrings do not count), every project-local helper and
class it reaches, the module constants it reads, its closure and defaults, and the versions of
the third-party packages it calls. All digests are ``xxh3_128`` hex strings, identical across
processes and sessions for identical inputs.

Cost model: syntax trees are parsed once per code object and cached; globals, constants and
files are re-resolved on every call, so a helper redefined in a notebook changes its callers.
File contents are re-read only when size, mtime, ctime or inode change.
"""

from __future__ import annotations

import ast
import builtins
import dis
import functools
import importlib.metadata
import inspect
import logging
import os
import platform
import site
import stat
import sys
import sysconfig
import textwrap
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import xxhash

from helix_dask._errors import HelixSignatureError
from helix_dask._fingerprint import (
    CannotFingerprint,
    Hasher,
    fingerprint_value,
    register,
    register_lazy,
)

__all__ = [
    "CannotFingerprint",
    "CodeFingerprint",
    "File",
    "Hasher",
    "argument_fingerprints",
    "code_fingerprint",
    "file_fingerprint",
    "fingerprint_value",
    "is_project_local",
    "node_signature",
    "register",
    "register_lazy",
]

logger = logging.getLogger(__name__)

_BLOCK_BYTES = 4 << 20
# A file changed within this window after it was last modified may share its timestamps with
# the next rewrite (timestamps are coarse), so its digest is not cached until it is older.
_RACY_WINDOW_NS = 2_000_000_000
_FILE_DIGESTS: dict[str, tuple[tuple[int, int, int, int], str]] = {}
_FILE_LOCK = threading.Lock()


def _digest(kind: str, *parts: str) -> str:
    h = Hasher()
    h.tag(kind)
    for part in parts:
        h.field(part.encode())
    return h.hexdigest()


# ---------------------------------------------------------------- files


class File(os.PathLike[str]):
    """A path whose *content* is an input of a task.

    The task receives the ``File`` itself, which is path-like: ``open(f)`` and
    ``pd.read_csv(f)`` work. Its fingerprint is the file's content digest (for a directory:
    the sorted relative file names and each file's content).

    Examples
    --------
    >>> f = File("data.csv")
    >>> f
    File('data.csv')
    >>> os.fspath(f)
    'data.csv'
    """

    __slots__ = ("path",)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        text = os.fspath(path)
        if not isinstance(text, str):
            raise HelixSignatureError(
                f"File() expects a text path, got {text!r}; decode it with os.fsdecode()"
            )
        self.path = text

    def __fspath__(self) -> str:
        return self.path

    def __repr__(self) -> str:
        return f"File({self.path!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, File):
            return NotImplemented
        return os.path.abspath(self.path) == os.path.abspath(other.path)

    def __hash__(self) -> int:
        return hash(os.path.abspath(self.path))

    def __reduce__(self) -> tuple[type[File], tuple[str]]:
        return (File, (self.path,))


def _hash_file_content(path: str) -> str:
    """Stream one file through ``xxh3_128`` in 4 MiB blocks."""
    state = xxhash.xxh3_128()
    buffer = bytearray(_BLOCK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb") as f:
        while n := f.readinto(buffer):
            state.update(view[:n])
    return state.hexdigest()


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def _regular_file_digest(path: str, st: os.stat_result) -> str:
    """Content digest of one file, from the stat cache when size/mtime/ctime/inode match."""
    key = _stat_key(st)
    with _FILE_LOCK:
        cached = _FILE_DIGESTS.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    for _attempt in range(3):
        started = time.time_ns()
        digest = _hash_file_content(path)
        after = _stat_key(os.stat(path))
        if after == key:
            break
        key = after  # written while we read it: read again
    else:
        raise HelixSignatureError(
            f"file {path!r} kept changing while it was being read; "
            "wait until the program writing it has finished"
        )
    if max(key[1], key[2]) < started - _RACY_WINDOW_NS:
        with _FILE_LOCK:
            _FILE_DIGESTS[path] = (key, digest)
    return digest


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """Return the content digest of a file, or of a directory tree.

    Parameters
    ----------
    path
        A file (hashed in 4 MiB blocks) or a directory (sorted relative file names plus each
        file's content digest).

    Raises
    ------
    HelixSignatureError
        If the path does not exist.

    Examples
    --------
    >>> file_fingerprint("data.csv")  # doctest: +SKIP
    '6c1f0e...'
    """
    text = os.fspath(path)
    absolute = os.path.abspath(text)
    try:
        st = os.stat(absolute)
    except FileNotFoundError as exc:
        raise HelixSignatureError(
            f"file {text!r} does not exist; create it or fix the path"
        ) from exc
    if not stat.S_ISDIR(st.st_mode):
        return _regular_file_digest(absolute, st)
    names = sorted(
        os.path.relpath(os.path.join(parent, name), absolute).replace(os.sep, "/")
        for parent, _dirs, files in os.walk(absolute)
        for name in files
    )
    h = Hasher()
    h.tag("directory")
    for name in names:
        full = os.path.join(absolute, name)
        h.field(name.encode())
        h.field(_regular_file_digest(full, os.stat(full)).encode())
    return h.hexdigest()


@register(File)
def _file_value(obj: File, h: Hasher) -> None:
    h.tag("File")
    h.field(file_fingerprint(obj.path).encode())


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


@functools.cache
def _package_versions(top: str) -> tuple[tuple[str, str], ...]:
    """Map a top-level import name to ``(distribution, version)`` pairs."""
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return (("python", platform.python_version()),)
    found = []
    for dist in sorted(set(_distributions().get(top, ()))):
        try:
            found.append((dist, importlib.metadata.version(dist)))
        except importlib.metadata.PackageNotFoundError:
            found.append((dist, "unknown"))
    if found:
        return tuple(found)
    version = getattr(sys.modules.get(top), "__version__", None)
    logger.debug("no installed distribution provides %r; recording version %r", top, version)
    return ((top, "unknown" if version is None else str(version)),)


# ---------------------------------------------------------------- normalized code


@dataclass(frozen=True)
class _Normalized:
    dump: str  # what the digest covers
    text: str  # normalized source, for diffs
    chains: tuple[tuple[str, ...], ...]  # attribute chains over a name: ("utils", "helper")
    names: tuple[str, ...]  # names the code reads


def _code_tree(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_tree(const)


@functools.lru_cache(maxsize=4096)
def _global_names(code: types.CodeType) -> tuple[str, ...]:
    found = {
        ins.argval
        for c in _code_tree(code)
        for ins in dis.get_instructions(c)
        if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME")
    }
    return tuple(sorted(found))


@functools.lru_cache(maxsize=4096)
def _local_imports(code: types.CodeType) -> tuple[tuple[str, int, tuple[str, ...]], ...]:
    """``(module, level, names)`` of imports inside the function body."""
    found = set()
    for c in _code_tree(code):
        consts: list[Any] = []
        for ins in dis.get_instructions(c):
            if ins.opname == "IMPORT_NAME" and len(consts) == 2:
                level, fromlist = consts
                names = tuple(n for n in fromlist or () if n != "*")
                found.add((ins.argval, level, names))
            consts = [*consts[-1:], ins.argval] if ins.opname == "LOAD_CONST" else []
    return tuple(sorted(found))


def _bytecode_chains(code: types.CodeType) -> tuple[tuple[str, ...], ...]:
    chains: set[tuple[str, ...]] = set()
    for c in _code_tree(code):
        chain: list[str] = []
        for ins in dis.get_instructions(c):
            if ins.opname in ("LOAD_ATTR", "LOAD_METHOD") and chain:
                chain.append(ins.argval)
                continue
            if len(chain) > 1:
                chains.add(tuple(chain))
            chain = [ins.argval] if ins.opname == "LOAD_GLOBAL" else []
    return tuple(sorted(chains))


def _write_code(code: types.CodeType, h: Hasher) -> None:
    h.tag("code")
    h.field(code.co_code)
    h.field(f"{code.co_argcount},{code.co_posonlyargcount},{code.co_kwonlyargcount}".encode())
    for group in (code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars):
        h.field("\x00".join(group).encode())
    consts = code.co_consts
    if consts and not code.co_name.startswith("<"):
        consts = consts[1:]  # CPython puts a def's docstring (or None) first
    for const in consts:
        if isinstance(const, types.CodeType):
            _write_code(const, h)
        else:
            h.field(fingerprint_value(const).encode())


def _parse(source: str) -> list[ast.stmt] | None:
    """Parse a snippet from ``inspect.getsource``; ``None`` if it does not stand alone."""
    try:
        return ast.parse(textwrap.dedent(source)).body
    except SyntaxError:
        pass  # e.g. a multi-line string less indented than the def: try inside a block
    try:
        block = ast.parse("if 1:\n" + source).body[0]
    except (SyntaxError, IndexError):
        return None
    return block.body if isinstance(block, ast.If) else None


def _strip_docstrings(node: ast.AST) -> None:
    for n in ast.walk(node):
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Module):
            first = n.body[0] if n.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                n.body = n.body[1:] or [ast.Pass()]


def _attribute_chains(node: ast.AST) -> tuple[tuple[str, ...], ...]:
    attributes = [n for n in ast.walk(node) if isinstance(n, ast.Attribute)]
    inner = {id(n.value) for n in attributes if isinstance(n.value, ast.Attribute)}
    chains = set()
    for n in attributes:
        if id(n) in inner:
            continue  # part of a longer chain
        parts: list[str] = []
        current: ast.expr = n
        while isinstance(current, ast.Attribute):
            parts.append(current.attr)
            current = current.value
        if isinstance(current, ast.Name):
            chains.add((current.id, *reversed(parts)))
    return tuple(sorted(chains))


def _lambda_arg_names(args: ast.arguments) -> tuple[str, ...]:
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return tuple(names)


def _function_node(code: types.CodeType) -> tuple[ast.AST | None, str]:
    """The function's own syntax tree, or ``None`` and why not."""
    try:
        source = inspect.getsource(code)
    except (OSError, TypeError) as exc:
        return None, f"no source ({exc})"
    body = _parse(source)
    if not body:
        return None, "its source lines do not parse on their own"
    if code.co_name == "<lambda>":
        flags = code.co_flags
        count = code.co_argcount + code.co_kwonlyargcount
        count += bool(flags & inspect.CO_VARARGS) + bool(flags & inspect.CO_VARKEYWORDS)
        wanted = code.co_varnames[:count]
        found = [
            n
            for stmt in body
            for n in ast.walk(stmt)
            if isinstance(n, ast.Lambda) and _lambda_arg_names(n.args) == wanted
        ]
        if len(found) == 1:
            return found[0], ""
        return None, f"{len(found)} lambdas with these arguments on its source lines"
    first = body[0]
    if isinstance(first, ast.FunctionDef | ast.AsyncFunctionDef) and first.name == code.co_name:
        return first, ""
    return None, "its source lines do not start with its definition"


@functools.lru_cache(maxsize=4096)
def _normalized_function(
    filename: str, qualname: str, code: types.CodeType, drop_decorators: bool
) -> _Normalized:
    """Normalized syntax tree of one code object (filename/qualname keep keys apart)."""
    names = _global_names(code)
    node, why = _function_node(code)
    if node is None:
        # Deliberate, documented fallback: exec'd or REPL code has no source to read.
        logger.debug("fingerprinting %s by its bytecode: %s", qualname, why)
        h = Hasher()
        _write_code(code, h)
        digest = h.hexdigest()
        text = f"# source unavailable ({why}); bytecode fingerprint {digest}"
        return _Normalized(f"bytecode:{digest}", text, _bytecode_chains(code), names)
    if drop_decorators and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        node.decorator_list = []
    _strip_docstrings(node)
    dump = ast.dump(node, annotate_fields=False, include_attributes=False)
    return _Normalized(dump, ast.unparse(node), _attribute_chains(node), names)


_CLASS_CACHE: weakref.WeakKeyDictionary[type, _Normalized | None] = weakref.WeakKeyDictionary()
_CLASS_LOCK = threading.Lock()


def _normalized_class(cls: type) -> _Normalized | None:
    with _CLASS_LOCK:
        if cls in _CLASS_CACHE:
            return _CLASS_CACHE[cls]
    result = None
    try:
        body = _parse(inspect.getsource(cls))
    except (OSError, TypeError) as exc:
        body = None
        logger.debug("class %s has no source (%s); fingerprinting its members", cls, exc)
    node = body[0] if body else None
    if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
        _strip_docstrings(node)
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        dump = ast.dump(node, annotate_fields=False, include_attributes=False)
        result = _Normalized(dump, ast.unparse(node), _attribute_chains(node), tuple(sorted(names)))
    with _CLASS_LOCK:
        _CLASS_CACHE[cls] = result
    return result


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
        self, h: Hasher, norm: _Normalized, scope: Mapping[str, Any], module: str, owner: str
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
        for module_name, level, names in _local_imports(code):
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
        norm = _normalized_function(code.co_filename, code.co_qualname, code, root)
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
        norm = _normalized_class(cls)
        if norm is None:
            self._class_members(h, cls, name)
            return self._leave(cls, h.hexdigest())
        self.sources.setdefault(name, norm.text)
        h.field(norm.dump.encode())
        module = sys.modules.get(cls.__module__)
        scope = vars(module) if module is not None else {}
        # Class bodies bind names of their own (parameters, locals); keep only module globals.
        names = tuple(n for n in norm.names if n in scope)
        self._references(h, _Normalized("", "", norm.chains, names), scope, cls.__module__, name)
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


# ---------------------------------------------------------------- node signatures


def node_signature(*, name: str, code: str, args: Mapping[str, str], parents: Sequence[str]) -> str:
    """Merkle hash over a task's name, code digest, argument fingerprints and parents.

    Examples
    --------
    >>> a = node_signature(name="load", code="c0de", args={"n": "01"}, parents=[])
    >>> b = node_signature(name="fit", code="c0de", args={}, parents=[a])
    >>> a != b
    True
    """
    parts = [("name", name), ("code", code)]
    parts += [(f"args[{k!r}]", v) for k, v in args.items()]
    parts += [(f"parents[{i}]", p) for i, p in enumerate(parents)]
    for where, value in parts:
        if not isinstance(value, str):
            raise HelixSignatureError(
                f"node_signature() got {type(value).__name__!r} for {where} of {name!r}; "
                "pass hex digest strings"
            )
    h = Hasher()
    h.tag("node")
    h.field(name.encode())
    h.field(code.encode())
    h.field(str(len(args)).encode())
    for key in sorted(args):
        h.field(key.encode())
        h.field(args[key].encode())
    h.field(str(len(parents)).encode())
    for parent in parents:
        h.field(parent.encode())
    return h.hexdigest()


def argument_fingerprints(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    task_name: str,
    is_node: Callable[[object], str | None],
) -> dict[str, str]:
    """Fingerprint each argument of a call, by parameter name.

    Parameters
    ----------
    func, args, kwargs
        The task function and the call's arguments (bound with ``inspect.signature``).
    task_name
        Used in error messages.
    is_node
        Returns an upstream node's signature for lazy node values (also nested in containers),
        which then stands in for the value's content; ``None`` for other values.

    Raises
    ------
    HelixSignatureError
        If the arguments do not match the signature, or an argument cannot be fingerprinted.

    Examples
    --------
    >>> def scale(x, factor=2):
    ...     return x * factor
    >>> sorted(argument_fingerprints(scale, (3,), {}, task_name="scale", is_node=lambda o: None))
    ['x']
    """
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except TypeError as exc:
        raise HelixSignatureError(
            f"task {task_name!r} was called with arguments that do not match its "
            f"signature ({exc}); fix the call"
        ) from exc
    result = {}
    for name, value in bound.arguments.items():
        try:
            result[name] = fingerprint_value(value, path=name, substitute=is_node)
        except CannotFingerprint as exc:
            raise HelixSignatureError(
                f"argument {name!r} of task {task_name!r} is {exc.what}; pass a list/array/"
                "number/str/dict/dataclass/File instead, or mark the task deterministic=False"
            ) from exc
    return result
