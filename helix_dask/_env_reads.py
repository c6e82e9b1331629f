"""Environment variables a call's project code read.

A task whose code reads ``os.environ["MODE"]`` (or ``os.getenv``, ``os.environ.get``, ``in``)
computes something else when the variable changes, and neither its code nor its arguments
show it. Python raises no audit event for these reads, so while a node's call runs, reads of
``os.environ`` made by project code in the calling thread are recorded: ``os.environ`` gets a
subclass of its own class once per process (the same object, the same behaviour; one
thread-local check per read when nothing is recorded). The variables read become requirements
``env:<NAME>`` (digest: the value, or its absence), verified before reuse like files and code.

Reads made by libraries (a thread-count setting, a config directory) count no more than the
libraries' own code does: their versions stand for them.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import types
from collections.abc import Mapping
from typing import Any

from helix_dask import _task_threads
from helix_dask._fingerprint import digest_of_strings
from helix_dask._memo_reads import memo_frames, remember
from helix_dask._task_threads import guard

ENV = "env:"
"""Prefix of an environment variable the node's project code read: ``env:<NAME>``, its digest
the variable's value (or its absence) where it is verified."""


class _Recording(threading.local):
    reads: EnvReads | None = None


_recording = _Recording()
_install_lock = threading.Lock()
_ENVIRON_MODULES = frozenset({"os", "_collections_abc", "collections.abc"})
"""``os.getenv``, ``os.environ.get`` and ``in`` reach ``__getitem__`` through these (frozen
modules: their code names no file)."""


class _RecordingEnviron(os._Environ):  # type: ignore[name-defined,misc]
    """``os.environ``'s own class, with reads passed to the calling thread's recorder."""

    def __getitem__(self, key: Any) -> Any:
        reads = _recording.reads
        if (reads is not None or _task_threads.any_active("env")) and not guard.busy:
            guard.busy = True  # what recording itself reads is not recorded
            try:
                frame = sys._getframe(1)
                if reads is not None:
                    reads.read(key, frame)
                else:  # a thread working for a node's call?
                    for borrowed in _task_threads.borrowed("env", frame, _project_frame):
                        borrowed.read(key, frame)
            except Exception:  # a read is never failed by its recording
                pass
            finally:
                guard.busy = False
        return super().__getitem__(key)


def _install() -> None:
    """Give ``os.environ`` its recording class (once per process; the object stays)."""
    environ: Any = os.environ
    if type(environ) is _RecordingEnviron:
        return
    with _install_lock:
        if type(environ) is os._Environ:  # type: ignore[attr-defined]
            _task_threads.register("env", lambda: _recording.reads)
            environ.__class__ = _RecordingEnviron
        # Another replacement (a test's mock, a library's): left alone, nothing recorded.


class EnvReads:
    """The environment variables the project code of a call read, in the calling thread."""

    def __init__(self) -> None:
        self.names: dict[str, None] = {}
        self.seen: set[tuple[str, types.CodeType]] = set()
        """(variable, reading code) pairs recorded, with the memoized functions around them."""

    def __enter__(self) -> EnvReads:
        _install()
        self.outer = _recording.reads
        _recording.reads = self
        _task_threads.entered("env", self)
        return self

    def __exit__(self, *exc: object) -> None:
        _recording.reads = self.outer
        _task_threads.exited("env", self)

    def read(self, key: Any, frame: Any) -> None:
        """Record ``key`` if the first caller outside ``os.environ``'s code is the project's.
        Never raises: an exception here would fail the user's read."""
        try:
            if not isinstance(key, str):
                return
            frame = project_caller(frame, _ENVIRON_MODULES)
            if frame is not None and (key, frame.f_code) not in self.seen:
                self.seen.add((key, frame.f_code))  # a loop reading it walks no stack again
                self.names[key] = None
                # A memoized function's later calls will not read it again: it remembers.
                remember(memo_frames(frame), ENV + key)
        except Exception:  # a read is never failed by its recording
            pass

    def dependencies(self) -> dict[str, Mapping[str, Any]]:
        return {ENV + name: {} for name in self.names}


def project_caller(frame: Any, helpers: frozenset[str]) -> Any:
    """The first frame from ``frame`` up that is not in one of the ``helpers`` modules (the
    functions that read or test for their callers), when it is the project's code; else None."""
    while frame is not None and frame.f_globals.get("__name__") in helpers:
        frame = frame.f_back
    return frame if frame is not None and _project_frame(frame) else None


def _project_frame(frame: Any) -> bool:
    module = frame.f_globals.get("__name__")
    if isinstance(module, str) and module.partition(".")[0] == "helix_dask":
        return False
    return _project_file(frame.f_code.co_filename)


@functools.lru_cache(maxsize=4096)
def _project_file(filename: str) -> bool:
    from helix_dask._origin import _is_project_path

    return _is_project_path(filename)


def env_digest(name: str) -> str:
    """The digest of environment variable ``name`` here: its value, or its absence."""
    value = os.environ.get(name)
    if value is None:
        return digest_of_strings("env unset", name)
    return digest_of_strings("env", name, value)
