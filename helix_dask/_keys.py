"""What in a store only its owner may touch: the store directory itself and the pickle key.

The store root is created ``0700``. Pickled results are signed with HMAC-SHA256 under a 32-byte
key made on first use, ``0600`` in a ``0700`` directory outside the artifact tree:
``<store>/keys/pickle.key``, or the file named by the ``helix.key-file`` setting (for clusters
where the store is shared but the key should not be). A store on object storage keeps its key
on the local disk (``~/.helix/keys/``), never in the bucket. The scheduler's key is the store's:
its worker plugin asks the scheduler for it when it is set up and hands it to
:func:`provide_key`, so workers on other machines need no copy of the file.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import uuid
from pathlib import Path
from typing import Final

from . import _config
from ._errors import HelixStoreError
from ._location import default_key_file, is_remote, store_location

__all__ = [
    "key_path",
    "pickle_key",
    "pickle_tag",
    "private_root",
    "provide_key",
    "stored_key",
    "tag_matches",
    "withdraw_key",
]

_KEY_BYTES: Final = 32
_TAG_CONTEXT: Final = b"helix-pickle-v1\0"
_KEYS: dict[str, tuple[tuple[int, int, int], bytes]] = {}
_KEYS_LOCK = threading.Lock()
_PROVIDED: dict[str, tuple[bytes, int]] = {}
"""Store -> the key its scheduler handed to this process and how many plugins hold it."""


def private_root(path: str | os.PathLike[str], setting: str = "helix.store") -> Path:
    """The store directory ``path``, created owner-only (``0700``) if missing.

    Raises ``HelixStoreError`` naming ``setting`` when ``path`` is a file, cannot be created or
    is not writable.
    """
    root = Path(path).absolute()
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise HelixStoreError(
            f"{setting} is {str(path)!r}, which is a file (or under one), not a directory; "
            "pass the path of a directory (it is created if missing)"
        ) from exc
    except OSError as exc:
        raise HelixStoreError(
            f"{setting} is {str(path)!r}, which cannot be created ({exc.strerror}); pass a "
            "directory on a filesystem you can write to"
        ) from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise HelixStoreError(
            f"{setting} is {str(path)!r}, which is not writable by this user; pass a directory "
            "you can write to, or fix its permissions"
        )
    return root


def key_path(root: str | os.PathLike[str]) -> Path:
    """Where the pickle key of the store at ``root`` lives: ``helix.key-file``, else
    ``<root>/keys/pickle.key`` for a local store, and for a store URL a file on this machine,
    ``~/.helix/keys/<hash of the URL>.key``: never in a bucket others may read."""
    configured = _config.get("key-file")
    if configured:
        return Path(os.path.expanduser(str(configured))).absolute()
    if is_remote(root):
        return default_key_file(os.fspath(root))
    return Path(root).absolute() / "keys" / "pickle.key"


def provide_key(root: str | os.PathLike[str], key: bytes) -> None:
    """Sign and check the pickles of the store at ``root`` with ``key`` in this process
    (the scheduler's, handed to a worker) instead of reading a key file, until as many
    :func:`withdraw_key` calls as calls of this one."""
    if not isinstance(key, bytes) or len(key) < 16:
        raise HelixStoreError(
            f"the pickle key handed over for {os.fspath(root)!r} is not a key of at least 16 "
            "bytes; check that scheduler and workers run the same helix_dask"
        )
    where = store_location(root)
    with _KEYS_LOCK:
        _, held = _PROVIDED.get(where, (key, 0))
        _PROVIDED[where] = (key, held + 1)


def withdraw_key(root: str | os.PathLike[str]) -> None:
    """Undo one :func:`provide_key` for the store at ``root``."""
    where = store_location(root)
    with _KEYS_LOCK:
        key, held = _PROVIDED.get(where, (b"", 0))
        if held > 1:
            _PROVIDED[where] = (key, held - 1)
        else:
            _PROVIDED.pop(where, None)


def pickle_key(root: str | os.PathLike[str]) -> bytes:
    """The key that signs the pickles of the store at ``root``: the one its scheduler
    provided (:func:`provide_key`), else the key file's, created on first use."""
    if _PROVIDED:
        with _KEYS_LOCK:
            provided = _PROVIDED.get(store_location(root))
        if provided is not None:
            return provided[0]
    return stored_key(root)


def stored_key(root: str | os.PathLike[str]) -> bytes:
    """The key in the key file of the store at ``root`` on this machine; created on first use
    (what a scheduler hands its workers)."""
    path = key_path(root)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        _create_key(path)
        st = os.stat(path)
    stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
    with _KEYS_LOCK:
        cached = _KEYS.get(str(path))
    if cached is not None and cached[0] == stamp:
        return cached[1]
    key = path.read_bytes()
    if len(key) < 16:
        raise HelixStoreError(
            f"pickle key {str(path)!r} holds {len(key)} bytes, expected {_KEY_BYTES}; it is "
            "damaged: delete it (a new one is made, and stored pickles are recomputed once)"
        )
    with _KEYS_LOCK:
        _KEYS[str(path)] = (stamp, key)
    return key


def _create_key(path: Path) -> None:
    """Write a fresh random key to ``path`` (0600) unless another process got there first."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(_KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, path)  # atomic, and never replaces a key another process made
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    except OSError as exc:
        raise HelixStoreError(
            f"cannot create the pickle key {str(path)!r} ({exc}); make its directory writable "
            "or point the helix.key-file setting at a key every worker can read"
        ) from exc


def pickle_tag(key: bytes, signature: str, where: str, payload: bytes | memoryview) -> str:
    """HMAC-SHA256 of a pickle, bound to its artifact's signature and its place inside it, so a
    blob copied from another artifact or another place does not verify."""
    mac = hmac.new(key, _TAG_CONTEXT + f"{signature}\0{where}\0".encode(), hashlib.sha256)
    mac.update(payload)
    return mac.hexdigest()


def tag_matches(
    key: bytes, signature: str, where: str, payload: bytes | memoryview, tag: object
) -> bool:
    """Whether ``tag`` is the HMAC of ``payload`` at ``where`` in artifact ``signature``."""
    if not isinstance(tag, str):
        return False
    return hmac.compare_digest(pickle_tag(key, signature, where, payload), tag)
