"""Where a store lives: a local directory or an fsspec URL, and where its catalog and key live.

A store is named by one string everywhere (settings, the plugins, load tasks): the absolute path
of a local directory, or a URL such as ``s3://bucket/prefix`` for object storage. ``file://``
URLs and plain paths are local stores, with the local-disk fast paths. For a remote store the
catalog (SQLite) and the pickle key stay on the local disk of the machine that opens them,
never in the bucket: ``helix.catalog`` and ``helix.key-file`` say where, by default under
``~/.helix/`` in a directory named by a hash of the URL.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any, Final

from . import _config
from ._errors import HelixConfigError

__all__ = [
    "catalog_dir",
    "is_remote",
    "local_home",
    "public_location",
    "storage_options",
    "store_location",
]

_URL: Final = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]+)://(.*)")
_LOCAL_PROTOCOLS: Final = ("file", "local")
_USERINFO: Final = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+://)[^/@]*@")
_OPTIONS: dict[str, dict[str, Any]] = {}
"""Storage options given to ``hx.setup`` for a URL, in this process (see ``register_options``)."""


def is_remote(location: str | os.PathLike[str]) -> bool:
    """Whether ``location`` names a store that is not a local directory (an fsspec URL)."""
    match = _URL.fullmatch(os.fspath(location))
    return match is not None and match[1].lower() not in _LOCAL_PROTOCOLS


def store_location(location: str | os.PathLike[str]) -> str:
    """The one string that names the store: a URL without trailing slash for a remote store,
    else the absolute path of the directory (``file://`` removed, ``~`` expanded)."""
    text = os.fspath(location)
    if is_remote(text):
        url = text.rstrip("/")
        if url.endswith("://"):
            raise HelixConfigError(
                f"store {text!r} names no bucket; pass a URL such as 's3://bucket/prefix'"
            )
        return url
    match = _URL.fullmatch(text)
    if match is not None:
        text = match[2]
    return str(Path(text).expanduser().resolve())


def public_location(location: str) -> str:
    """``location`` without the ``user:password@`` a URL may carry: what may be shown."""
    return _USERINFO.sub(r"\1", location)


def _url_hash(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def local_home() -> Path:
    """``~/.helix``: where the catalogs and keys of remote stores live by default."""
    return Path.home() / ".helix"


def catalog_dir(location: str | os.PathLike[str]) -> str:
    """The directory of the catalog (``catalog.sqlite``) of the store at ``location``.

    ``helix.catalog`` when set; else the store directory itself for a local store, and
    ``~/.helix/catalogs/<hash of the URL>`` on this machine for a remote one.
    """
    configured = _config.get("catalog")
    if configured:
        return str(Path(os.path.expanduser(str(configured))).absolute())
    location = store_location(location)
    if not is_remote(location):
        return location
    return str(local_home() / "catalogs" / _url_hash(location))


def default_key_file(location: str) -> Path:
    """Where the pickle key of a remote store lives unless ``helix.key-file`` says."""
    return local_home() / "keys" / f"{_url_hash(store_location(location))}.key"


def register_options(location: str, options: dict[str, Any]) -> None:
    """Remember the storage options ``hx.setup`` was given for ``location`` in this process."""
    _OPTIONS[store_location(location)] = dict(options)


def storage_options(location: str) -> dict[str, Any]:
    """fsspec options for the remote store at ``location``: ``helix.storage-options`` from
    dask.config, overridden by what ``hx.setup(storage_options=...)`` registered."""
    configured = _config.get("storage-options") or {}
    if not isinstance(configured, dict):
        raise HelixConfigError(
            f"helix.storage-options is {configured!r}, not a mapping; set it to a dict of "
            "fsspec options such as {'endpoint_url': 'http://127.0.0.1:9000'}"
        )
    # Environment variables reach dask.config with '-' for '_' in nested keys on some paths;
    # fsspec wants the Python names.
    options = {str(k).replace("-", "_"): v for k, v in configured.items()}
    options.update(_OPTIONS.get(store_location(location), {}))
    return options
