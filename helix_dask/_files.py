"""File inputs: the path-like ``File`` and content digests of files and directory trees.

A file is read in 4 MiB blocks through ``xxh3_128``. Its digest is cached by path and re-read
only when size, mtime, ctime or inode change; a file modified within the last two seconds is
not cached, since coarse timestamps could hide the next rewrite.
"""

from __future__ import annotations

import os
import stat
import threading
import time

import xxhash

from helix_dask._errors import HelixSignatureError
from helix_dask._fingerprint import Hasher, register

__all__ = ["File", "file_fingerprint"]

# These names are public in helix_dask.signature. A code digest names the library objects a task
# calls by module ("helix_dask.signature.File"), and so do pickles: keep that module.
_PUBLIC_MODULE = "helix_dask.signature"

_BLOCK_BYTES = 4 << 20
# A file changed within this window after it was last modified may share its timestamps with
# the next rewrite (timestamps are coarse), so its digest is not cached until it is older.
_RACY_WINDOW_NS = 2_000_000_000
_FILE_DIGESTS: dict[str, tuple[tuple[int, int, int, int], str]] = {}
_FILE_LOCK = threading.Lock()


class File(os.PathLike[str]):
    """A path whose *content* is an input of a task.

    The task receives the ``File`` itself, which is path-like: ``open(f)`` and
    ``pd.read_csv(f)`` work. Its fingerprint is the file's content digest (for a directory:
    the sorted relative names of its files and sub-directories, empty ones included, and each
    file's content; symbolic links are followed).

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


def _directory_entries(
    root: str, relative: str, ancestors: frozenset[tuple[int, int]], h: Hasher
) -> None:
    """Write the sorted entries under ``root/relative``, following symbolic links.

    ``ancestors`` holds the (device, inode) of the directories on the current path: a link back
    to one of them is written as a cycle, not followed forever.
    """
    here = os.path.join(root, relative) if relative else root
    try:
        names = sorted(os.listdir(here))
    except OSError as exc:
        raise HelixSignatureError(
            f"directory {here!r} cannot be listed ({exc.strerror}); fix its permissions"
        ) from exc
    for name in names:
        rel = f"{relative}/{name}" if relative else name
        full = os.path.join(here, name)
        try:
            st = os.stat(full)  # follows symbolic links
        except FileNotFoundError as exc:
            target = os.readlink(full) if os.path.islink(full) else "?"
            raise HelixSignatureError(
                f"{full!r} is a symbolic link to {target!r}, which does not exist; "
                "remove the link or restore its target"
            ) from exc
        if stat.S_ISDIR(st.st_mode):
            key = (st.st_dev, st.st_ino)
            h.tag("directory")
            h.field(rel.encode())
            if key in ancestors:
                h.tag("cycle")  # its content is already hashed above
                continue
            _directory_entries(root, rel, ancestors | {key}, h)
            h.tag("end")
        elif stat.S_ISREG(st.st_mode):
            h.tag("file")
            h.field(rel.encode())
            h.field(_regular_file_digest(full, st).encode())
        else:
            raise HelixSignatureError(
                f"{full!r} is neither a regular file nor a directory (a socket, pipe or "
                "device); move it out of the directory or pass the files one by one"
            )


def file_fingerprint(path: str | os.PathLike[str]) -> str:
    """Return the content digest of a file, or of a directory tree.

    Parameters
    ----------
    path
        A file (hashed in 4 MiB blocks) or a directory (sorted relative names of files and
        sub-directories, empty ones included, plus each file's content digest; symbolic
        links are followed, a link back to an enclosing directory is not followed twice).

    Raises
    ------
    HelixSignatureError
        If the path does not exist, or the directory holds a dangling symbolic link or
        something that is neither a file nor a directory.

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
    h = Hasher()
    h.tag("directory tree")
    _directory_entries(absolute, "", frozenset({(st.st_dev, st.st_ino)}), h)
    return h.hexdigest()


@register(File)
def _file_value(obj: File, h: Hasher) -> None:
    h.tag("File")
    h.field(file_fingerprint(obj.path).encode())


File.__module__ = file_fingerprint.__module__ = _PUBLIC_MODULE
