"""Data files a traced call read by path, and directories it listed.

A task that opens ``data/train.csv`` by a path string depends on that file's content, which no
signature of its arguments sees (``hx.File`` arguments are fingerprinted; plain strings are
not). While a node's call is traced, an audit hook (``sys.addaudithook``: one per process, a
flag check when nothing is recorded) passes the ``open``, ``os.listdir`` and ``os.scandir``
events of the calling thread to a :class:`FileReads`; the files read become requirements
``file:<absolute path>`` (digest: the content digest) and the directories listed
``listing:<absolute path>`` (digest: the names in it), verified before reuse like code.

A path the project's code only tests (``os.path.exists``, ``isfile``, ``getsize``,
``Path.is_dir``) raises no audit event: ``os.stat`` and ``os.lstat`` are replaced, once per
process, by stand-ins that pass the tested path to the recorder before calling the original
(one thread-local check per call when nothing is recorded). Tested paths that the call did not
also read become ``stat:<absolute path>`` (digest: missing, a directory, or a file's type,
size and modification time). So do the existing files the call's arguments name, and the
program and files of a command it runs (``_path_args``); a SQLite database it connects to is a
file it read. Digests are taken by ``_path_digests``.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import types
from collections.abc import Callable, Mapping
from typing import Any

from helix_dask import _task_threads
from helix_dask._env_reads import _project_frame, project_caller
from helix_dask._memo_reads import memo_frames, remember
from helix_dask._path_args import _declared_files, _named_files, spawn_paths
from helix_dask._task_threads import guard

FILE = "file:"
"""Prefix of a data file the node read by path: ``file:<absolute path>``, its digest the
file's content digest."""

LISTING = "listing:"
"""Prefix of a directory the node listed (``os.listdir``, ``os.scandir``, ``glob``): its digest
covers the names in it."""


STAT = "stat:"
"""Prefix of a path the node's project code only tested (``os.path.exists``, ``isfile``,
``getsize``, ``Path.is_dir``...) without reading it: ``stat:<absolute path>``, its digest
whether it exists, its type and, for a file, its size and modification time."""


CWD = "cwd:"
"""The working directory, a requirement of a node that read or listed a relative path: its
digest is the directory's path (the same relative path names another file elsewhere)."""


class _Recording(threading.local):
    files: FileReads | None = None


_recording = _Recording()
_audit_installed = False
_install_lock = threading.Lock()


def _audit(event: str, args: tuple[Any, ...]) -> None:
    """Audit hook (one per process, never removed): passes the file events of a traced call
    to its recorder. Never raises: an exception here would fail the user's ``open``."""
    if event not in _FILE_EVENTS:  # first: most events are others (``frame.f_code`` reads)
        return
    if guard.busy:
        return  # what recording itself does is not recorded
    guard.busy = True
    try:
        frame = sys._getframe(1)
        if _import_system(frame.f_code.co_filename):
            return  # looking for modules or distributions: versions stand for what it finds
        for files in _recorders(frame):
            if event == "open":
                files.opened(args[0], args[2] if len(args) > 2 else None, args[1], frame)
            elif event == "sqlite3.connect":  # SQLite opens the file itself: no "open" event
                if args[0] not in (":memory:", b":memory:", ""):
                    files.opened(args[0], None, "r", frame)
            elif event in ("os.listdir", "os.scandir"):
                files.listed(args[0], frame)
            elif event == "subprocess.Popen":
                files.spawned(args[0], args[1], args[2], frame)
            elif event == "os.system":
                files.spawned(None, args[0], None, frame)
    except Exception:  # a path that cannot be decoded is simply not recorded
        pass
    finally:
        guard.busy = False


def _recorders(frame: Any) -> list[FileReads] | tuple[FileReads, ...]:
    """The recorders a file event in this thread goes to: its own, or those of the calls it
    works for (``_task_threads``)."""
    files = _recording.files
    if files is not None:
        return (files,)
    return _task_threads.borrowed("files", frame, _project_frame)


_FILE_EVENTS = frozenset(
    {"open", "os.listdir", "os.scandir", "sqlite3.connect", "subprocess.Popen", "os.system"}
)
_SPAWN_MODULES = frozenset({"subprocess", "os", "asyncio.subprocess", "asyncio.base_events"})
"""Modules that start programs for their callers: the caller that counts is outside them."""

_PATH_MODULES = frozenset({"os", "genericpath", "posixpath", "ntpath", "pathlib"})
"""Modules whose functions test paths for their callers (``os.path.exists`` calls ``os.stat``):
the caller that counts is the first frame outside them."""
_real: dict[str, Callable[..., Any]] = {}
"""The ``os`` functions replaced by recording ones (``stat``, ``lstat``), by name."""


def _probing(name: str) -> Callable[..., Any]:
    """A stand-in for ``os.<name>`` passing the paths project code tests to the calling
    thread's recorder (Python raises no audit event for a stat), then calling the original."""
    real = getattr(os, name)

    def probe(path: Any, *args: Any, **kwargs: Any) -> Any:
        if not guard.busy and isinstance(path, str | bytes | os.PathLike):
            guard.busy = True  # what recording itself tests is not recorded
            try:
                frame = sys._getframe(1)
                for files in _recorders(frame):
                    files.probed(path, frame)
            except Exception:  # a path that cannot be decoded is simply not recorded
                pass
            finally:
                guard.busy = False
        return real(path, *args, **kwargs)

    probe.__name__ = probe.__qualname__ = name
    probe.__module__ = "os"
    probe.__doc__ = real.__doc__
    probe.__wrapped__ = real  # type: ignore[attr-defined]
    return probe


def _install_probes() -> None:
    """Replace ``os.stat`` and ``os.lstat`` by recording stand-ins (once per process). The
    capability sets (``os.supports_follow_symlinks``...) list the stand-ins too, so code that
    asks what ``os.stat`` supports gets the same answers."""
    for name in ("stat", "lstat"):
        if name in _real:
            continue
        real = getattr(os, name)
        probe = _probing(name)
        for capability in (
            os.supports_dir_fd,
            os.supports_fd,
            os.supports_follow_symlinks,
            os.supports_effective_ids,
        ):
            if real in capability:
                capability.add(probe)
        _real[name] = real
        setattr(os, name, probe)


_METADATA_FINDERS = (
    os.path.join("importlib", "metadata", ""),
    os.path.join("importlib_metadata", ""),
)
"""Directories of ``importlib.metadata`` and its backport: looking up entry points or a
version lists every directory on ``sys.path`` (a Dask worker's scratch directory among them,
whose names change whenever a worker starts), which is no data the task read."""


def _import_system(filename: str) -> bool:
    """Whether code in ``filename`` is the import system or a distribution lookup."""
    return filename.startswith("<frozen importlib") or any(m in filename for m in _METADATA_FINDERS)


class FileReads:
    """The data files a traced call read by path and the directories it listed, in the
    calling thread. Files the call wrote itself, files passed as ``hx.File`` arguments (their
    content is in the signature), code and the Python installation are left out."""

    def __init__(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
        self.read: dict[str, None] = {}
        self.written: set[str] = set()
        self.dirs: dict[str, None] = {}
        self.relative: set[str] = set()
        """Paths among those read or listed that were given relative to the working dir."""
        self.spawn: dict[str, None] = {}
        """Programs project code started and the files their command lines name (code
        included: a script is the child's data)."""
        self.tested: set[tuple[str, types.CodeType]] = set()
        """(path, testing code) pairs recorded, with the memoized functions around them."""
        self.probes: dict[str, None] = {}
        """Paths project code tested (stat) without reading them."""
        self.memo: dict[str, dict[str, None]] = {}
        """Path read or listed -> the memoized functions running when it was (``_memo_reads``)."""
        self.declared = _declared_files([*args, *kwargs.values()])
        named = _named_files([*args, *kwargs.values()])
        self.named = tuple(named)
        """Existing files the arguments name as strings: a library reading them in C (an
        image, HDF5 or Parquet reader) raises no event, so their state counts."""
        self.relative.update(name for name, relative in named.items() if relative)

    def __enter__(self) -> FileReads:
        global _audit_installed
        if not _audit_installed:
            with _install_lock:
                if not _audit_installed:
                    _task_threads.register("files", lambda: _recording.files)
                    sys.addaudithook(_audit)
                    _install_probes()
                    _audit_installed = True
        self.outer = _recording.files
        _recording.files = self
        _task_threads.entered("files", self)
        return self

    def __exit__(self, *exc: object) -> None:
        _recording.files = self.outer
        _task_threads.exited("files", self)

    def opened(self, path: Any, flags: Any, mode: Any, frame: Any = None) -> None:
        if not isinstance(path, str | bytes):
            return  # a file descriptor: its file was opened (and recorded) before
        name = os.path.abspath(os.fsdecode(path))
        self._under(name, frame)
        if not os.path.isabs(path):
            self.relative.add(name)
        if isinstance(flags, int):
            access = flags & os.O_ACCMODE
            reads, writes = access != os.O_WRONLY, access != os.O_RDONLY
        else:
            text = str(mode or "r")
            reads = "r" in text or "+" in text
            writes = not reads or "+" in text
        if writes:
            self.written.add(name)
        if reads:
            self.read.setdefault(name, None)

    def probed(self, path: Any, frame: Any) -> None:
        """``os.stat``/``os.lstat`` of ``path``, called from ``frame``: recorded when the first
        caller outside the path modules is the project's."""
        frame = project_caller(frame, _PATH_MODULES)
        if frame is None:
            return
        raw = os.fspath(path)
        name = os.path.abspath(os.fsdecode(raw))
        if (name, frame.f_code) in self.tested:
            return  # tested before by this code in this call: a loop walks no stack again
        self.tested.add((name, frame.f_code))
        self._under(name, frame)
        if not os.path.isabs(raw):
            self.relative.add(name)
        self.probes[name] = None

    def spawned(self, executable: Any, argv: Any, cwd: Any, frame: Any) -> None:
        """A program started by project code: what it reads is not seen, so the program and
        the existing files its command line names count by their state (``stat:``)."""
        frame = project_caller(frame, _SPAWN_MODULES)
        if frame is None:
            return
        for name, relative in spawn_paths(executable, argv, cwd).items():
            self._under(name, frame)
            if relative:
                self.relative.add(name)
            self.spawn.setdefault(name, None)

    def _under(self, name: str, frame: Any) -> None:
        memo = memo_frames(frame)
        if memo:
            self.memo.setdefault(name, {}).update(dict.fromkeys(memo))

    def listed(self, path: Any, frame: Any = None) -> None:
        if path is None:
            path = "."
        if isinstance(path, str | bytes):
            name = os.path.abspath(os.fsdecode(path))
            self._under(name, frame)
            if not os.path.isabs(path):
                self.relative.add(name)
            self.dirs.setdefault(name, None)

    def dependencies(self) -> dict[str, Mapping[str, Any]]:
        out: dict[str, Mapping[str, Any]] = {}
        for name in self.read:
            if name not in self.written and _data_path(name, self.declared):
                if os.path.isfile(name) or not os.path.exists(name):
                    out[FILE + name] = {}
        for name in self.dirs:
            if _data_path(name, self.declared) and not os.path.isfile(name):
                out[LISTING + name] = {}
        for name in self.spawn:
            if name not in self.read and name not in self.written:
                if not name.startswith(_SYSTEM_PREFIXES):
                    out[STAT + name] = {}
        for name in (*self.probes, *self.named):
            if (
                name not in self.read
                and name not in self.written
                and LISTING + name not in out
                and _data_path(name, self.declared)
            ):
                out[STAT + name] = {}
        if any(dep.partition(":")[2] in self.relative for dep in out):
            out[CWD] = {}
        for dep in out:
            under = self.memo.get(dep.partition(":")[2])
            if under:
                remember(under, dep)
                if dep.partition(":")[2] in self.relative:
                    remember(under, CWD)
        return out


_CODE_SUFFIXES = (".py", ".pyc", ".pyo", ".pyd", ".so", ".pth", ".dylib", ".dll")
_SYSTEM_PREFIXES = ("/proc/", "/sys/", "/dev/")


def _installation() -> tuple[str, ...]:
    """Directories of the Python installation and its packages: what they hold is library
    code and data, which the distributions' versions stand for."""
    import site
    import sysconfig

    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    dirs.update(sysconfig.get_paths().values())
    try:
        dirs.update(site.getsitepackages())
        dirs.add(site.getusersitepackages())
    except AttributeError:  # a virtualenv's old site module
        pass
    return tuple(sorted(os.path.join(os.path.abspath(d), "") for d in dirs if d))


_METADATA_DIRS = (".egg-info" + os.sep, ".dist-info" + os.sep)
"""Package metadata (read by ``importlib.metadata``, e.g. entry points, also of a package
installed in development mode from a project directory): the distributions' versions stand for
it."""


def _data_path(name: str, declared: tuple[str, ...]) -> bool:
    """Whether a path the call touched is data the result may depend on."""
    if name.endswith(_CODE_SUFFIXES) or name.startswith(_SYSTEM_PREFIXES):
        return False
    if name.startswith(_installation_dirs()) or any(m in name for m in _METADATA_DIRS):
        return False
    return not any(name == d or name.startswith(os.path.join(d, "")) for d in declared)


@functools.lru_cache(maxsize=1)
def _installation_dirs() -> tuple[str, ...]:
    return _installation()
