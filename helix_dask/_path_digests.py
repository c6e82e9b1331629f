"""Digests of the path requirements a call recorded (``file:``, ``stat:``, ``listing:``,
``cwd:``): what each is here and now, where a stored result is verified."""

from __future__ import annotations

import os
import stat

from helix_dask._fingerprint import digest_of_strings


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
