"""The Zarr store of one write of an artifact on object storage: reads checked against the
manifest, writes digested and uploaded in batches (see :class:`ObjectFiles`)."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, Final

from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype, default_buffer_prototype
from zarr.storage import FsspecStore

from helix_dask._errors import HelixCorruptArtifact
from helix_dask._integrity import CheckedFiles, Manifest, digest_buffer

if TYPE_CHECKING:
    from helix_dask._fsspec_store import ObjectArtifactStore

__all__ = ["ObjectFiles", "one_get"]

_FLUSH_BYTES: Final = 64 * 2**20
"""A write uploads its buffered files once they hold this many bytes (and at the end)."""
_ONE_GET_BYTES: Final = 32 * 2**20
"""Files below this size are read with one GET; larger ones as fsspec likes (in parallel)."""


class ObjectFiles(CheckedFiles, FsspecStore):
    """Zarr's ``FsspecStore`` over one write of an artifact.

    Reading (with a manifest), every file is checked against the manifest
    (:class:`~helix_dask._integrity.CheckedFiles`), and the manifest answers which keys exist,
    so Zarr's existence checks and listings cost no request. Writing, the folder is new, so
    this process knows all it holds: files are digested and buffered, and uploaded together
    (concurrently) every ``_FLUSH_BYTES`` and at the end, instead of one round trip per
    metadata check and file. A copy pickled to other processes (the chunk tasks of a Dask
    array) writes straight through; the seal then lists the folder.
    """

    def __init__(
        self,
        fs: Any,
        path: str,
        *,
        read_only: bool = False,
        manifest: Manifest | None = None,
        signature: str = "",
        key: bytes | None = None,
        moves_corrupt: bool = True,
        owner: ObjectArtifactStore | None = None,
    ) -> None:
        FsspecStore.__init__(self, fs, read_only=read_only, path=path)
        self._checks(manifest, signature, key, moves_corrupt)
        self.owner = owner
        self.written: dict[str, tuple[int, str]] = {}
        self.buffered = manifest is None and not read_only
        self.shared = False
        """Pickled while writing: other processes may have written files into the folder."""
        self._pending: dict[str, bytes] = {}
        self._metadata: dict[str, bytes] = {}

    def with_read_only(self, read_only: bool = False) -> ObjectFiles:
        return type(self)(
            self.fs, self.path, read_only=read_only, owner=self.owner, **self._check_args()
        )

    def __getstate__(self) -> dict[str, Any]:
        if self.buffered:
            from zarr.core.sync import sync

            sync(self.flush())
            self.shared = True
        state = super().__getstate__()
        state.update(buffered=False, _pending={}, _metadata={}, written={})
        return state

    def quarantine(self, error: HelixCorruptArtifact) -> None:
        if self.owner is not None:
            self.owner.quarantine(self.signature, error, write=self.path.rsplit("/", 1)[-1])

    async def flush(self) -> None:
        """Upload the buffered files."""
        if self._pending:
            pending, self._pending = self._pending, {}
            await self.fs._pipe({f"{self.path}/{k}": v for k, v in pending.items()})

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        prototype = prototype or default_buffer_prototype()
        if self.buffered and key not in self.written:
            return None  # a new folder holds only what this process wrote
        if self.buffered and key in self._metadata:
            buffer = prototype.buffer.from_bytes(self._metadata[key])
        elif self.buffered and key in self._pending:
            buffer = prototype.buffer.from_bytes(self._pending[key])
        elif (expected := self.expected(key)) is not None and expected[0] < _ONE_GET_BYTES:
            try:  # its size is known: one GET, without the HEAD that s3fs asks for a size
                data = await self.fs._cat_file(f"{self.path}/{key}", **one_get(self.fs))
            except self.allowed_exceptions:
                data = None
            buffer = None if data is None else prototype.buffer.from_bytes(data)
            self._check(key, buffer)
        else:
            buffer = await super().get(key, prototype, None)
            self._check(key, buffer)
        if byte_range is None or buffer is None:
            return buffer
        return _part(buffer, byte_range)  # checked whole; one request, not two

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]

    async def set(self, key: str, value: Buffer, byte_range: tuple[int, int] | None = None) -> None:
        if not self.buffered:
            await super().set(key, value, byte_range)
            return
        self._check_writable()
        data = value.to_bytes()
        self.written[key] = digest_buffer(data)
        self._pending[key] = data
        if key.endswith("zarr.json"):
            self._metadata[key] = data  # Zarr reads metadata back while it writes
        if sum(len(v) for v in self._pending.values()) >= _FLUSH_BYTES:
            await self.flush()

    async def delete(self, key: str) -> None:
        if self.buffered:
            for table in (self.written, self._pending, self._metadata):
                table.pop(key, None)
        await super().delete(key)

    async def delete_dir(self, prefix: str) -> None:
        if self.buffered:  # nothing but what this process wrote
            for key in [
                k for k in self.written if not prefix or k.startswith(prefix.rstrip("/") + "/")
            ]:
                for table in (self.written, self._pending, self._metadata):
                    table.pop(key, None)
            return
        await super().delete_dir(prefix)

    def _known(self) -> Iterable[str] | None:
        """The keys the folder holds, when this process knows them without asking."""
        if self.buffered:
            return self.written
        if self.manifest is not None:
            return self.manifest.files
        return None

    async def exists(self, key: str) -> bool:
        known = self._known()
        return key in known if known is not None else await super().exists(key)

    async def list(self) -> AsyncIterator[str]:
        known = self._known()
        if known is None:
            async for key in super().list():
                yield key
            return
        for key in list(known):
            yield key

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        async for key in self.list():
            if key.startswith(prefix):
                yield key

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        known = self._known()
        if known is None:
            async for key in super().list_dir(prefix):
                yield key
            return
        base = prefix.rstrip("/") + "/" if prefix.rstrip("/") else ""
        children = {k[len(base) :].split("/", 1)[0] for k in known if k.startswith(base)}
        for child in sorted(children):
            yield child


def one_get(fs: Any) -> dict[str, Any]:
    """Arguments that make ``fs._cat_file`` one request (s3fs asks for the size first)."""
    try:
        parameters = inspect.signature(fs._cat_file).parameters
    except (TypeError, ValueError):
        return {}
    return {"max_concurrency": 1} if "max_concurrency" in parameters else {}


def _part(buffer: Buffer, byte_range: ByteRequest) -> Buffer:
    """The bytes of ``buffer`` that ``byte_range`` asks for."""
    n = len(buffer)
    if isinstance(byte_range, RangeByteRequest):
        return buffer[byte_range.start : min(byte_range.end, n)]
    if isinstance(byte_range, OffsetByteRequest):
        return buffer[byte_range.offset : n]
    if isinstance(byte_range, SuffixByteRequest):
        return buffer[max(0, n - byte_range.suffix) : n]
    raise ValueError(f"unexpected byte range {byte_range!r}")
