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
size and modification time).
"""

from __future__ import annotations

import functools
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from helix_dask._env_reads import _project_frame
from helix_dask._fingerprint import digest_of_strings
from helix_dask._memo_reads import memo_frames, remember

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
    files = _recording.files
    if files is None:
        return
    try:
        frame = sys._getframe(1)
        if _import_system(frame.f_code.co_filename):
            return  # looking for modules or distributions: versions stand for what it finds
        if event == "open":
            files.opened(args[0], args[2] if len(args) > 2 else None, args[1], frame)
        elif event == "sqlite3.connect":  # SQLite opens the file itself: no "open" event
            if args[0] not in (":memory:", b":memory:", ""):
                files.opened(args[0], None, "r", frame)
        elif event in ("os.listdir", "os.scandir"):
            files.listed(args[0], frame)
    except Exception:  # a path that cannot be decoded is simply not recorded
        pass


_FILE_EVENTS = frozenset({"open", "os.listdir", "os.scandir", "sqlite3.connect"})

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
        files = _recording.files
        if files is not None and isinstance(path, str | bytes | os.PathLike):
            _recording.files = None  # what recording itself tests is not recorded
            try:
                files.probed(path, sys._getframe(1))
            except Exception:  # a path that cannot be decoded is simply not recorded
                pass
            finally:
                _recording.files = files
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
        self.probes: dict[str, None] = {}
        """Paths project code tested (stat) without reading them."""
        self.memo: dict[str, tuple[str, ...]] = {}
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
                    sys.addaudithook(_audit)
                    _install_probes()
                    _audit_installed = True
        self.outer = _recording.files
        _recording.files = self
        return self

    def __exit__(self, *exc: object) -> None:
        _recording.files = self.outer

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
        while frame is not None and frame.f_globals.get("__name__") in _PATH_MODULES:
            frame = frame.f_back
        if frame is None or not _project_frame(frame):
            return
        raw = os.fspath(path)
        name = os.path.abspath(os.fsdecode(raw))
        self._under(name, frame)
        if not os.path.isabs(raw):
            self.relative.add(name)
        self.probes.setdefault(name, None)

    def _under(self, name: str, frame: Any) -> None:
        memo = memo_frames(frame)
        if memo:
            self.memo[name] = (*self.memo.get(name, ()), *memo)

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


def file_digest(path: str) -> str:
    """The content digest of a data file (from the stat cache when unchanged), or what stands
    in its place."""
    from helix_dask._files import file_fingerprint

    if os.path.isfile(path):
        return file_fingerprint(path)
    return _hexdigest("directory" if os.path.isdir(path) else "missing", path)


def stat_digest(path: str) -> str:
    """What testing ``path`` can tell here, for the path itself and what a link leads to:
    missing, a directory, or a file of this type, size and modification time (a rewrite that
    changes neither is not seen; a file read by content is a ``file:`` requirement instead)."""
    parts = []
    for look in (os.lstat, os.stat):  # the path itself (a link?), then what it leads to
        try:
            st = look(path)
        except OSError:
            parts.append("missing")
            continue
        if stat.S_ISDIR(st.st_mode):
            parts.append("directory")
        else:
            parts.append(f"{st.st_mode} {st.st_size} {st.st_mtime_ns}")
    return _hexdigest("stat", path, *parts)


def cwd_digest() -> str:
    """The working directory here."""
    return _hexdigest("cwd", os.getcwd())


def listing_digest(path: str) -> str:
    """The names in a directory (not their contents: files read are dependencies of their
    own)."""
    try:
        names = sorted(os.listdir(path))
    except OSError:
        return _hexdigest("missing", path)
    return _hexdigest("listing", *names)


def _hexdigest(kind: str, *parts: str) -> str:
    return digest_of_strings(kind, *parts)
