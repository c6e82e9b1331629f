"""The catalog of a running scheduler, read from a machine that does not hold it
(``helix --scheduler ADDRESS``).

:class:`RemoteCatalog` has the read methods of :class:`~helix_dask.catalog.Catalog` that the
``helix`` commands and :mod:`helix_dask.history` use, each answered by the scheduler's helix
plugin (:mod:`helix_dask._scheduler_api`), so every read command prints what it prints where
the catalog is. Two ways in: a comm address (``tcp://host:8786``, ``tls://...``; the cluster's
own protocol and security settings, whether or not a dashboard runs) and the dashboard's URL
(``http://host:8787``: through a tunnel or proxy that reaches only the dashboard).
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import fields
from typing import Any, TypeVar

from ._errors import HelixConfigError
from ._events import RunReport, report_from_dict
from .catalog import ArtifactRow, Runs, VersionRow, VersionStats

__all__ = ["RemoteCatalog"]

R = TypeVar("R")


def _record(cls: type[R], data: dict[str, Any]) -> R:
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in known})


class _Comm:
    """Catalog reads over the scheduler's comm (handler ``helix_catalog``)."""

    def __init__(self, address: str, timeout: float | None) -> None:
        from distributed.core import rpc
        from distributed.security import Security

        self._loop = asyncio.new_event_loop()
        self._rpc = rpc(
            address, timeout=timeout, connection_args=Security().get_connection_args("client")
        )

    def __call__(self, method: str, params: dict[str, Any]) -> Any:
        return self._loop.run_until_complete(self._rpc.helix_catalog(method=method, params=params))

    def close(self) -> None:
        try:
            self._loop.run_until_complete(self._rpc.close_rpc())
        finally:
            self._loop.close()


class _Http:
    """Catalog reads over the scheduler's HTTP server (``POST /helix/api/catalog``)."""

    def __init__(self, url: str, timeout: float | None) -> None:
        base = url.rstrip("/")
        for page in ("/status", "/helix"):  # a page's URL names its server too
            base = base.removesuffix(page)
        self.url = base + "/helix/api/catalog"
        self.timeout = timeout

    def __call__(self, method: str, params: dict[str, Any]) -> Any:
        body = json.dumps({"method": method, "params": params}).encode()
        request = urllib.request.Request(
            self.url, body, {"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as e:
            try:
                got = json.loads(e.read())
            except ValueError:
                got = None
            if isinstance(got, dict) and "error" in got:  # the API's own answer
                return {"error": got["error"], "missing": e.code == 404}
            return None  # no such route: not a scheduler serving helix

    def close(self) -> None:
        pass


class RemoteCatalog:
    """The read side of a catalog that a running scheduler holds.

    Parameters
    ----------
    address
        The scheduler's comm address (``tcp://host:8786``) or its dashboard's URL
        (``http://host:8787``).
    timeout
        Seconds to wait for a connection (default: dask's ``distributed.comm.timeouts.connect``
        over the comm, 30 over HTTP).

    Examples
    --------
    >>> cat = RemoteCatalog("tcp://scheduler:8786")           # doctest: +SKIP
    >>> [v.id for v in cat.versions()]                        # doctest: +SKIP
    [3, 2, 1]
    """

    def __init__(self, address: str, *, timeout: float | None = None) -> None:
        self.address = address
        if urllib.parse.urlsplit(address).scheme in ("http", "https"):
            self._call: _Comm | _Http = _Http(address, 30.0 if timeout is None else timeout)
        else:
            self._call = _Comm(address, timeout)
        self.path = f"the catalog of the scheduler at {address}"
        self._code: dict[str, tuple[dict[str, str], dict[str, str]] | None] = {}
        try:
            self.root = self.location = str(self._ask("info")["store"])
        except BaseException:
            self.close()
            raise

    def _ask(self, method: str, **params: Any) -> Any:
        try:
            got = self._call(method, params)
        except (OSError, ValueError) as e:  # URLError is an OSError
            raise HelixConfigError(
                f"cannot reach the scheduler at {self.address} ({e}); pass its address "
                "(tcp://host:8786) or its dashboard's URL (http://host:8787)"
            ) from None
        if not isinstance(got, dict):
            raise HelixConfigError(
                f"{self.address} does not answer helix's catalog reads: no helix plugin runs "
                "there (start the scheduler with --preload helix_dask, or hx.setup a client), "
                "or the address is not the scheduler's"
            )
        if "error" in got:
            if got.get("missing"):
                raise KeyError(got["error"])
            raise HelixConfigError(f"the scheduler at {self.address} answered: {got['error']}")
        return got["data"]

    def close(self) -> None:
        """Close the connection to the scheduler."""
        self._call.close()

    def __repr__(self) -> str:
        return f"RemoteCatalog({self.address!r})"

    # -- the reads of Catalog -------------------------------------------------------------------

    def versions(self) -> list[VersionRow]:
        return [_record(VersionRow, d) for d in self._ask("versions")]

    def version_stats(self, limit: int | None = None) -> list[VersionStats]:
        return [_record(VersionStats, d) for d in self._ask("version_stats", limit=limit)]

    def runs(self, versions: Iterable[int] | None = None) -> Runs:
        ids = None if versions is None else sorted(set(versions))
        return Runs(report_from_dict(d) for d in self._ask("runs", versions=ids))

    def run(self, version: int) -> RunReport:
        return report_from_dict(self._ask("run", version=version))

    def code(self, digest: str) -> tuple[dict[str, str], dict[str, str]] | None:
        if digest not in self._code:  # a digest's sources never change: asked once
            found = self._ask("code", digest=digest)
            self._code[digest] = None if found is None else (found[0], found[1])
        return self._code[digest]

    def requirements_of(self, identities: Iterable[str]) -> dict[str, dict[str, str]]:
        return self._ask("requirements_of", identities=sorted(set(identities)))

    def artifacts(self) -> list[ArtifactRow]:
        return [_record(ArtifactRow, d) for d in self._ask("artifacts")]

    def artifacts_for(self, signatures: Iterable[str]) -> dict[str, ArtifactRow]:
        found = self._ask("artifacts_for", signatures=sorted(set(signatures)))
        return {s: _record(ArtifactRow, d) for s, d in found.items()}

    def running_versions(self) -> list[int]:
        return list(self._ask("running_versions"))

    def leased(self) -> set[str]:
        return set(self._ask("leased"))
