"""Installed distributions' versions: the digest of a library dependency (``dist:<name>``),
kept while nothing it was found from changed (a lookup scans ``sys.path``)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from typing import NamedTuple

from helix_dask._fingerprint import digest_of_strings

NOT_INSTALLED = "not installed"
"""The digest of a distribution no lookup finds."""

DIST = "dist:"
"""Prefix of a library dependency id: ``dist:<distribution name>``, its digest the version."""


def _distribution_version(dist: str) -> str:
    """The installed version of a distribution with the digest of its files
    (:func:`installed_identity`; the Python version for ``python``).

    Finding a distribution scans ``sys.path`` and parsing its metadata takes milliseconds, and
    it is asked for every node computed or sent, so a version is kept while nothing it was
    found from changed: ``sys.path`` up to the directory that holds it, those directories
    (an install into any of them changes its modification time) and the metadata file
    itself (path, size, modification time: an upgrade in place)."""
    if dist == "python":
        return platform.python_version()
    held = _versions.get(dist)
    if held is not None and _still(held[0]):
        return held[1]
    try:
        found = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return NOT_INSTALLED
    where = _where_found(found)
    version = installed_identity(found)
    if where is not None:
        _versions[dist] = (where, version)
    return version


def installed_identity(found: importlib.metadata.Distribution) -> str:
    """Its version, and when its ``RECORD`` lists the hashes of the files it installed, a
    digest of those: a local package rebuilt or a git install of another commit under an
    unchanged version is another identity. The installer's own files (the ``.dist-info``
    directory: ``INSTALLER``, ``direct_url.json``...) do not count."""
    version = found.version
    try:
        record = found.read_text("RECORD")
    except Exception:  # unreadable metadata: the version stands alone
        record = None
    if not record:
        return version
    files = sorted(
        line
        for line in record.splitlines()
        if ",sha256=" in line and ".dist-info/" not in line.split(",", 1)[0]
    )
    if not files:
        return version
    return f"{version}+files.{digest_of_strings('record', *files)[:12]}"


_versions: dict[str, tuple[_Where, str]] = {}
"""Distribution name -> (what it was found from, the version read there)."""


class _Where(NamedTuple):
    path: tuple[str, ...]
    """``sys.path`` up to and including the entry the distribution was found in."""
    dirs: tuple[tuple[int, int] | None, ...]
    """Modification time and inode of each of those entries (None: not a directory)."""
    metadata: tuple[object, ...]
    """The metadata file's stamp (:func:`_metadata_stamp`)."""
    record: tuple[object, ...] | None
    """The ``RECORD`` file's stamp (its installed files' hashes), None without one."""


def _dir_stamp(entry: str) -> tuple[int, int] | None:
    try:
        st = os.stat(entry or ".")
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ino)


def _where_found(found: importlib.metadata.Distribution) -> _Where | None:
    """What ``found`` was found from; None when that is not a plain directory on ``sys.path``
    (then it is looked up every time)."""
    stamp = _metadata_stamp(found)
    if stamp is None:
        return None
    parent = os.path.dirname(os.path.abspath(str(stamp[0])))
    path = tuple(sys.path)
    for i, entry in enumerate(path):
        if os.path.abspath(entry or ".") == parent:
            dirs = tuple(_dir_stamp(e) for e in path[: i + 1])
            return _Where(path[: i + 1], dirs, stamp, _file_stamp(str(stamp[0]), "RECORD"))
    return None


def _still(where: _Where) -> bool:
    """Whether a lookup now would find what ``where`` describes."""
    n = len(where.path)
    if tuple(sys.path[:n]) != where.path:
        return False
    if any(_dir_stamp(e) != s for e, s in zip(where.path, where.dirs, strict=True)):
        return False
    directory = str(where.metadata[0])
    return where.metadata == _file_stamp(directory, str(where.metadata[1])) and (
        where.record == _file_stamp(directory, "RECORD")
    )


def _metadata_stamp(found: importlib.metadata.Distribution) -> tuple[object, ...] | None:
    """Path, size and modification time of a distribution's metadata file; None when it
    does not come from files on disk (then it is read every time)."""
    path = getattr(found, "_path", None)
    if path is None:
        return None
    for name in ("METADATA", "PKG-INFO"):
        if (stamp := _file_stamp(os.fspath(path), name)) is not None:
            return stamp
    return None


def _file_stamp(directory: str, name: str) -> tuple[object, ...] | None:
    """(directory, name, size, modification time, inode) of a file; None when it is gone."""
    try:
        st = os.stat(os.path.join(directory, name))
    except OSError:
        return None
    return (directory, name, st.st_size, st.st_mtime_ns, st.st_ino)
