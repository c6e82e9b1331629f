"""Checksums of an artifact's files: recorded at commit, checked on every read.

A put hashes every file of the finished artifact with ``xxh3_64`` and writes the sizes and
digests into ``helix-manifest.json``, the last file written before the commit. Opening an
artifact reads the manifest, checks it names the artifact's own signature (a directory moved or
copied under another signature fails) and that every file it lists exists with its size, which
costs one ``stat`` per file. Every byte read afterwards is hashed on its way in: Zarr reads go
through :class:`ArtifactFiles`, the raw-chunk fast path hashes each 1 MiB block right after
reading it, while it is still in cache. So a load checks exactly what it returns and nothing
more: a lazily loaded Dask array checks each chunk when a task reads it.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import xxhash
from zarr.abc.store import ByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import LocalStore

from ._errors import HelixCorruptArtifact

__all__ = ["MANIFEST", "ArtifactFiles", "Manifest", "read_into", "read_manifest", "seal"]
__all__ += ["verify_tree"]

MANIFEST: Final = "helix-manifest.json"
_FORMAT: Final = 1
_ALGORITHM: Final = "xxh3_64"
# Hash while the block just read is still in the CPU cache: measured on a warm 256 MiB array,
# read-then-hash costs ~30% over the plain read, hashing each 1 MiB block as it lands ~1%.
_BLOCK: Final = 1 << 18


def _digest(data: Any) -> str:
    return xxhash.xxh3_64_hexdigest(data)


@dataclass(frozen=True, slots=True)
class Manifest:
    """The signature an artifact was written under and each file's size and digest."""

    signature: str
    files: Mapping[str, tuple[int, str]]


def _file_digest(path: Path) -> tuple[int, str]:
    state = xxhash.xxh3_64()
    buffer = bytearray(_BLOCK)
    view = memoryview(buffer)
    size = 0
    with path.open("rb", buffering=0) as f:
        while n := f.readinto(buffer):
            state.update(view[:n])
            size += n
    return size, state.hexdigest()


def _walk(root: Path) -> Iterable[tuple[str, Path]]:
    for folder, _, names in os.walk(root):
        for name in names:
            full = Path(folder) / name
            yield full.relative_to(root).as_posix(), full


def seal(root: Path, signature: str) -> Manifest:
    """Hash every file under ``root`` and write the manifest there, last."""
    files = {rel: _file_digest(full) for rel, full in _walk(root) if rel != MANIFEST}
    body = {
        "format": _FORMAT,
        "algorithm": _ALGORITHM,
        "signature": signature,
        "files": {rel: [size, digest] for rel, (size, digest) in sorted(files.items())},
    }
    (root / MANIFEST).write_text(json.dumps(body, separators=(",", ":")))
    return Manifest(signature, files)


def read_manifest(root: Path, signature: str) -> Manifest:
    """The manifest of the artifact at ``root``, checked against ``signature`` and the files'
    sizes; ``HelixCorruptArtifact`` says what does not match."""

    def corrupt(reason: str) -> HelixCorruptArtifact:
        return HelixCorruptArtifact(signature, str(root), reason)

    try:
        text = (root / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise corrupt(f"its manifest {MANIFEST} is missing") from None
    try:
        body = json.loads(text)
        files = {str(k): (int(v[0]), str(v[1])) for k, v in body["files"].items()}
        found = (body["format"], body["algorithm"])
        named = body["signature"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise corrupt(f"its manifest {MANIFEST} is unreadable ({type(exc).__name__})") from None
    if found != (_FORMAT, _ALGORITHM):
        raise corrupt(f"its manifest has format {found}, expected {(_FORMAT, _ALGORITHM)}")
    if named != signature:
        raise corrupt(f"its manifest belongs to artifact {named!r}: the directory was moved")
    for rel, (size, _) in files.items():
        try:
            found_size = os.stat(root / rel).st_size
        except FileNotFoundError:
            raise corrupt(f"file {rel} is missing") from None
        if found_size != size:
            raise corrupt(f"file {rel} holds {found_size} bytes, its manifest says {size}")
    return Manifest(signature, files)


def verify_tree(root: Path, signature: str) -> None:
    """Read and hash every file of the artifact at ``root``; raise on the first mismatch."""
    manifest = read_manifest(root, signature)
    for rel, full in _walk(root):
        if rel == MANIFEST:
            continue
        expected = manifest.files.get(rel)
        if expected is None:
            raise HelixCorruptArtifact(signature, str(root), f"file {rel} is not in its manifest")
        if _file_digest(full) != expected:
            raise HelixCorruptArtifact(signature, str(root), f"file {rel} fails its checksum")


def read_into(path: Path, target: memoryview, expected: tuple[int, str] | None) -> str | None:
    """Fill ``target`` from the start of ``path``; return what is wrong, or None.

    With ``expected`` (size and digest), the whole file is hashed block by block as it is read,
    including any bytes past ``target`` (the padding of a last chunk)."""
    want, got = len(target), 0
    state = xxhash.xxh3_64() if expected is not None else None
    with path.open("rb", buffering=0) as f:
        while got < want and (n := f.readinto(target[got : min(want, got + _BLOCK)])):
            if state is not None:
                state.update(target[got : got + n])
            got += n
        if got < want:
            return f"file {path.name} holds {got} bytes where {want} were expected"
        if state is None or expected is None:
            return None
        while tail := f.read(_BLOCK):
            state.update(tail)
            got += len(tail)
    if (got, state.hexdigest()) != expected:
        return f"file {path.name} fails its checksum"
    return None


class ArtifactFiles(LocalStore):
    """A ``LocalStore`` over one artifact that checks every file it reads against the manifest.

    A file the manifest lists but that is gone, a file it does not list, and a file whose digest
    differs raise ``HelixCorruptArtifact``. Without a manifest (while writing) it is a plain
    ``LocalStore``. ``key`` (the pickle key) is never pickled with it.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        read_only: bool = False,
        manifest: Manifest | None = None,
        signature: str = "",
        key: bytes | None = None,
        moves_corrupt: bool = True,
    ) -> None:
        super().__init__(root, read_only=read_only)
        self.manifest = manifest
        self.signature = signature
        self.key = key
        self.moves_corrupt = moves_corrupt

    def with_read_only(self, read_only: bool = False) -> ArtifactFiles:
        return type(self)(
            self.root,
            read_only=read_only,
            manifest=self.manifest,
            signature=self.signature,
            key=self.key,
            moves_corrupt=self.moves_corrupt,
        )

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["key"] = None  # tasks that read chunks never need it; keep it off the wire
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def corrupt(self, reason: str) -> HelixCorruptArtifact:
        """The error for this artifact, which is moved out of the store (``moves_corrupt``)."""
        from .store import quarantine  # the store imports this module

        error = HelixCorruptArtifact(self.signature, str(self.root), reason)
        if self.moves_corrupt:
            quarantine(self.root, error)
        return error

    def expected(self, key: str) -> tuple[int, str] | None:
        """Size and digest of file ``key``; None without a manifest or for unlisted files."""
        return None if self.manifest is None else self.manifest.files.get(key)

    def _check(self, key: str, buffer: Buffer | None) -> None:
        if self.manifest is None:
            return
        expected = self.manifest.files.get(key)
        if buffer is None:
            if expected is not None:
                raise self.corrupt(f"file {key} is missing")
            return  # Zarr leaves out chunks that hold only the fill value
        if expected is None:
            raise self.corrupt(f"file {key} is not in its manifest")
        data = buffer.as_numpy_array()
        if (data.nbytes, _digest(data)) != expected:
            raise self.corrupt(f"file {key} fails its checksum")

    async def get(
        self,
        key: str,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        buffer = await super().get(key, prototype, None)
        self._check(key, buffer)
        if byte_range is None or buffer is None:
            return buffer
        return await super().get(key, prototype, byte_range)  # checked whole, now the part

    def get_sync(
        self,
        key: str,
        *,
        prototype: BufferPrototype | None = None,
        byte_range: ByteRequest | None = None,
    ) -> Buffer | None:
        buffer = super().get_sync(key, prototype=prototype)
        self._check(key, buffer)
        if byte_range is None or buffer is None:
            return buffer
        return super().get_sync(key, prototype=prototype, byte_range=byte_range)

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        async for key in super().list_dir(prefix):
            if prefix or key != MANIFEST:  # the manifest is no member of the Zarr hierarchy
                yield key

    async def get_partial_values(
        self,
        prototype: BufferPrototype,
        key_ranges: Iterable[tuple[str, ByteRequest | None]],
    ) -> list[Buffer | None]:
        return [await self.get(key, prototype, byte_range) for key, byte_range in key_ranges]
