"""Paths a call names rather than opens: ``hx.File`` arguments, strings naming existing files,
and the program and files of a command line a task runs.

A library reading a file in C (an image, HDF5 or Parquet reader) and a program a task starts
raise no ``open`` event in this process; the paths their callers named are what can be seen.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any


def _declared_files(values: Iterable[Any]) -> tuple[str, ...]:
    """Absolute paths of the ``hx.File`` arguments (also inside lists, tuples and dicts)."""
    from helix_dask._files import File

    out: list[str] = []
    todo = list(values)
    while todo:
        value = todo.pop()
        if isinstance(value, File):
            out.append(os.path.abspath(os.fspath(value)))
        elif isinstance(value, list | tuple | set | frozenset):
            todo.extend(value)
        elif isinstance(value, dict):
            todo.extend(value.values())
    return tuple(out)


_NAMED_LIMIT = 1000
"""Strings and containers looked at among a call's arguments for names of existing files."""


def _named_files(values: Iterable[Any]) -> dict[str, bool]:
    """Absolute paths of existing regular files named by string or path arguments (also in
    lists, tuples and dicts of at most :data:`_NAMED_LIMIT` items; ``hx.File`` arguments are
    fingerprinted by content instead), each with whether it was named relative to the working
    directory."""
    from helix_dask._files import File

    out: dict[str, bool] = {}
    todo, budget = list(values), _NAMED_LIMIT
    while todo and budget > 0:
        value = todo.pop()
        budget -= 1
        if isinstance(value, File):
            continue
        if isinstance(value, str | os.PathLike):
            try:
                name = os.fspath(value)
                if (
                    isinstance(name, str)
                    and 0 < len(name) <= 1024
                    and "\n" not in name
                    and os.path.isfile(name)
                ):
                    out[os.path.abspath(name)] = not os.path.isabs(name)
            except (OSError, ValueError, TypeError):
                pass
        elif isinstance(value, list | tuple) and len(value) <= _NAMED_LIMIT:
            todo.extend(value)
        elif isinstance(value, dict) and len(value) <= _NAMED_LIMIT:
            todo.extend(value.values())
    return out


def spawn_paths(executable: Any, argv: Any, cwd: Any) -> dict[str, bool]:
    """The program a command starts and the existing files its arguments name (a shell
    command's words too), as absolute paths, each with whether it was relative to the
    working directory."""
    import shlex
    import shutil

    def text(value: Any) -> str:
        return os.fsdecode(value) if isinstance(value, bytes | os.PathLike) else str(value)

    words = [text(a) for a in argv] if isinstance(argv, list | tuple) else [text(argv)]
    if len(words) == 1 or (len(words) >= 3 and words[1] == "-c"):  # a shell command line
        try:
            words = [*words[:-1], *shlex.split(words[-1])]
        except ValueError:
            words = [*words[:-1], *words[-1].split()]
    base = text(cwd) if cwd is not None else os.getcwd()
    out: dict[str, bool] = {}
    program = text(executable) if executable is not None else (words[0] if words else "")
    found = shutil.which(program) if program else None
    if found:
        out[os.path.abspath(found)] = False
    for word in words[:_NAMED_LIMIT]:
        if not word or len(word) > 1024 or word.startswith("-"):
            continue
        path = word if os.path.isabs(word) else os.path.join(base, word)
        try:
            if os.path.isfile(path):
                out.setdefault(os.path.abspath(path), not os.path.isabs(word))
        except (OSError, ValueError):
            pass
    return out
