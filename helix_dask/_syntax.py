"""Normalized code: what in a function's or class's source counts as a change.

A definition is reduced to its syntax tree without comments, formatting, docstrings and (for
the task itself) decorators, plus the names and attribute chains it reads, which the code
walker follows. Code without readable source (``exec``, some REPLs) falls back, explicitly and
with a debug log line, to its bytecode.

Caches are keyed by what changes with the code: functions by their code object (replaced when a
notebook's autoreload swaps ``__code__``), classes by the current lines of their file as
:mod:`linecache` holds them (re-read when the file changes). A class is located in its file by
qualified name; when a file defines that name twice, the line numbers of the class's own
methods tell which definition ran.
"""

from __future__ import annotations

import ast
import dis
import functools
import inspect
import linecache
import logging
import re
import symtable
import sys
import textwrap
import threading
import types
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from helix_dask._fingerprint import Hasher, fingerprint_value

__all__ = [
    "Normalized",
    "bare_global_names",
    "local_imports",
    "normalized_class",
    "normalized_function",
]

# Records keep the public module's name, which is what users filter on.
logger = logging.getLogger("helix_dask.signature")


@dataclass(frozen=True)
class Normalized:
    """A definition reduced to what its digest covers, plus what the walker follows."""

    dump: str  # what the digest covers
    text: str  # normalized source, for diffs
    chains: tuple[tuple[str, ...], ...]  # attribute chains over a name: ("utils", "helper")
    names: tuple[str, ...]  # global names the code reads
    bare: tuple[str, ...] = ()  # of those, the ones also read as values, not only as `x.attr`


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
def local_imports(code: types.CodeType) -> tuple[tuple[str, int, tuple[str, ...]], ...]:
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


@functools.lru_cache(maxsize=4096)
def bare_global_names(code: types.CodeType) -> tuple[str, ...]:
    """Global names read other than as the head of an attribute access (``m`` in ``f(m)``)."""
    found = set()
    for c in _code_tree(code):
        pending = None
        for ins in dis.get_instructions(c):
            if pending is not None and ins.opname not in ("LOAD_ATTR", "LOAD_METHOD"):
                found.add(pending)
            pending = ins.argval if ins.opname in ("LOAD_GLOBAL", "LOAD_NAME") else None
        if pending is not None:
            found.add(pending)
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


def _bare_names(node: ast.AST) -> set[str]:
    """Names read as values: every ``Name`` load that is not the object of an attribute."""
    heads = {id(n.value) for n in ast.walk(node) if isinstance(n, ast.Attribute)}
    return {
        n.id
        for n in ast.walk(node)
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load) and id(n) not in heads
    }


def _lambda_arg_names(args: ast.arguments) -> tuple[str, ...]:
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return tuple(names)


_DEFINITION = re.compile(r"^(\s*def\s)|(\s*async\s+def\s)|(.*(?<!\w)lambda(:|\s))|^(\s*@)")
"""What :func:`inspect.findsource` looks for, walking up from a code object's first line."""


def _code_source(code: types.CodeType) -> str:
    """The source of a function's code object, as ``inspect.getsource(code)`` returns it.

    Reads the file through :mod:`linecache` directly: ``inspect`` first maps every loaded module
    to its file to find the code's module, about 0.2 s per process with a data-science stack.
    """
    filename = code.co_filename
    linecache.checkcache(filename)
    lines = linecache.getlines(filename)
    if not lines:  # e.g. a module imported from a zip: let inspect ask its loader
        return inspect.getsource(code)
    lnum = code.co_firstlineno - 1
    if lnum >= len(lines):
        raise OSError(f"line {code.co_firstlineno} is past the end of {filename}")
    while lnum > 0 and not _DEFINITION.match(lines[lnum]):
        lnum -= 1
    return "".join(inspect.getblock(lines[lnum:]))


def _function_node(code: types.CodeType) -> tuple[ast.AST | None, str]:
    """The function's own syntax tree, or ``None`` and why not."""
    try:
        source = _code_source(code)
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
def normalized_function(
    filename: str, qualname: str, code: types.CodeType, drop_decorators: bool
) -> Normalized:
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
        chains = _bytecode_chains(code)
        return Normalized(f"bytecode:{digest}", text, chains, names, bare_global_names(code))
    if drop_decorators and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        node.decorator_list = []
    _strip_docstrings(node)
    dump = ast.dump(node, annotate_fields=False, include_attributes=False)
    # The source is read from the file now, which may have been edited since the code object
    # was compiled (a module not reloaded): the code that runs counts too, so a result of the
    # old code is never signed as the new source's. Cosmetic edits change neither.
    h = Hasher()
    _write_code(code, h)
    dump = f"{dump}\nbytecode:{h.hexdigest()}"
    bare = tuple(sorted(_bare_names(node).intersection(names)))
    return Normalized(dump, ast.unparse(node), _attribute_chains(node), names, bare)


def _symtable_globals(source: str) -> set[str]:
    """Names read as globals anywhere in ``source``, with Python's own scoping rules:
    parameters, assignments, loop/with/except targets, comprehension variables, walrus
    targets and ``nonlocal`` names are local; ``global`` names are global."""
    found: set[str] = set()
    stack = [symtable.symtable(source, "<class>", "exec")]
    while stack:
        table = stack.pop()
        stack.extend(table.get_children())
        top = table.get_type() == "module"
        for sym in table.get_symbols():
            if sym.is_referenced() and sym.is_global() and not (top and sym.is_assigned()):
                found.add(sym.get_name())
    return found


class _FileIndex:
    """Class definitions of one file, by qualified name, for one version of its lines."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines  # held, so that an identity check tells this version apart
        self.classes: dict[str, list[ast.ClassDef]] = {}
        self.normalized: dict[int, Normalized] = {}
        try:
            tree = ast.parse("".join(lines))
        except (SyntaxError, ValueError):
            return
        self._visit(list(tree.body), "")

    def _visit(self, nodes: list[ast.AST], prefix: str) -> None:
        for node in nodes:
            if isinstance(node, ast.ClassDef):
                self.classes.setdefault(prefix + node.name, []).append(node)
                self._visit(node.body, f"{prefix}{node.name}.")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self._visit(node.body, f"{prefix}{node.name}.<locals>.")
            elif isinstance(node, ast.stmt | ast.excepthandler | ast.match_case):
                self._visit(list(ast.iter_child_nodes(node)), prefix)  # if/try/with/match


_FILE_INDEX: dict[str, _FileIndex] = {}
_CLASS_LOCK = threading.Lock()


def _own_code(cls: type) -> list[types.CodeType]:
    """Code objects of the functions defined in the class body itself."""
    found = []
    for value in vars(cls).values():
        if isinstance(value, staticmethod | classmethod):
            value = value.__func__
        elif isinstance(value, property):
            value = value.fget
        code = getattr(value, "__code__", None)
        if isinstance(code, types.CodeType) and code.co_qualname.startswith(cls.__qualname__ + "."):
            found.append(code)
    return found


def _class_file(cls: type, codes: list[types.CodeType]) -> str | None:
    for code in codes:
        return code.co_filename
    module = sys.modules.get(cls.__module__)
    filename = getattr(module, "__file__", None)
    return filename if isinstance(filename, str) else None


def _index(filename: str) -> _FileIndex:
    linecache.checkcache(filename)
    lines = linecache.getlines(filename)
    with _CLASS_LOCK:
        index = _FILE_INDEX.get(filename)
        if index is None or index.lines is not lines:
            index = _FILE_INDEX[filename] = _FileIndex(lines)
    return index


def _pick(cls: type, candidates: list[ast.ClassDef], codes: list[types.CodeType]) -> Any:
    """The definition that created ``cls``: the one whose lines hold all its methods."""
    lines = [c.co_firstlineno for c in codes]
    if not lines:
        return candidates[0] if len(candidates) == 1 else "no methods to tell them apart"
    fitting = [
        node
        for node in candidates
        if all(
            min([node.lineno, *(d.lineno for d in node.decorator_list)])
            <= line
            <= (node.end_lineno or node.lineno)
            for line in lines
        )
    ]
    if len(fitting) == 1:
        return fitting[0]
    return f"{len(fitting)} of {len(candidates)} definitions hold its methods"


def normalized_class(cls: type) -> Normalized | None:
    """Normalized source of the definition that created ``cls``; ``None`` (with a debug
    line) when it cannot be told, e.g. a class made by ``exec`` or an ambiguous file."""
    codes = _own_code(cls)
    filename = _class_file(cls, codes)
    if filename is None:
        logger.debug("class %s has no source file; fingerprinting its members", cls)
        return None
    index = _index(filename)
    candidates = index.classes.get(cls.__qualname__, [])
    node = _pick(cls, candidates, codes) if candidates else "no definition found"
    if not isinstance(node, ast.ClassDef):
        logger.debug("class %s in %s: %s; fingerprinting its members", cls, filename, node)
        return None
    with _CLASS_LOCK:
        found = index.normalized.get(id(node))
    if found is not None:
        return found
    tree = ast.parse(ast.unparse(node)).body[0]
    _strip_docstrings(tree)
    text = ast.unparse(tree)
    dump = ast.dump(tree, annotate_fields=False, include_attributes=False)
    names = tuple(sorted(_symtable_globals(text)))
    bare = tuple(sorted(_bare_names(tree).intersection(names)))
    found = Normalized(dump, text, _attribute_chains(tree), names, bare)
    with _CLASS_LOCK:
        index.normalized[id(node)] = found
    return found
