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

__all__ = ["MANIFEST", "ArtifactFiles", "CheckedFiles", "Manifest", "digest_buffer"]
__all__ += ["parse_manifest", "read_into", "read_manifest", "seal", "verify_tree"]

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
    """The signature an artifact was written under and each file's size and digest.

    ``prefix`` is, on object storage, the folder of the write the manifest commits (files are
    relative to it); empty for a local artifact, whose files sit next to the manifest.
    ``attributes``: what a packed artifact (:mod:`helix_dask._packed`) holds in place of a Zarr
    group's attributes; ``None`` for a Zarr group.
    """

    signature: str
    files: Mapping[str, tuple[int, str]]
    prefix: str = ""
    attributes: Mapping[str, Any] | None = None

    def to_json(self) -> bytes:
        """The manifest file's content."""
        body: dict[str, Any] = {
            "format": _FORMAT,
            "algorithm": _ALGORITHM,
            "signature": self.signature,
            "files": {rel: [size, digest] for rel, (size, digest) in sorted(self.files.items())},
        }
        if self.prefix:
            body["prefix"] = self.prefix
        if self.attributes is not None:
            body["attributes"] = dict(self.attributes)
        return json.dumps(body, separators=(",", ":")).encode()


def digest_buffer(data: Any) -> tuple[int, str]:
    """Size and digest of a buffer-like ``data`` (as the manifest records them)."""
    view = memoryview(data).cast("B")
    return view.nbytes, _digest(view)


def parse_manifest(text: bytes, signature: str, where: str) -> Manifest:
    """The manifest in ``text``, checked to be well formed and to name ``signature``;
    ``HelixCorruptArtifact`` (naming ``where``) says what is wrong."""

    def corrupt(reason: str) -> HelixCorruptArtifact:
        return HelixCorruptArtifact(signature, where, reason)

    try:
        body = json.loads(text)
        files = {str(k): (int(v[0]), str(v[1])) for k, v in body["files"].items()}
        found = (body["format"], body["algorithm"])
        named = body["signature"]
        prefix = str(body.get("prefix", ""))
        attributes = body.get("attributes")
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise corrupt(f"its manifest {MANIFEST} is unreadable ({type(exc).__name__})") from None
    if found != (_FORMAT, _ALGORITHM):
        raise corrupt(f"its manifest has format {found}, expected {(_FORMAT, _ALGORITHM)}")
    if named != signature:
        raise corrupt(f"its manifest belongs to artifact {named!r}: the directory was moved")
    if "/" in prefix or prefix.startswith("."):
        raise corrupt(f"its manifest names the folder {prefix!r}, which is no write of helix")
    if attributes is not None and not isinstance(attributes, dict):
        raise corrupt(f"its manifest holds attributes {attributes!r}, expected an object")
    return Manifest(signature, files, prefix, attributes)


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
    manifest = Manifest(signature, files)
    (root / MANIFEST).write_bytes(manifest.to_json())
    return manifest


def read_manifest(root: Path, signature: str) -> Manifest:
    """The manifest of the artifact at ``root``, checked against ``signature`` and the files'
    sizes; ``HelixCorruptArtifact`` says what does not match."""
    try:
        text = (root / MANIFEST).read_bytes()
    except FileNotFoundError:
        raise HelixCorruptArtifact(
            signature, str(root), f"its manifest {MANIFEST} is missing"
        ) from None
    manifest = parse_manifest(text, signature, str(root))
    for rel, (size, _) in manifest.files.items():
        try:
            found_size = os.stat(root / rel).st_size
        except FileNotFoundError:
            raise HelixCorruptArtifact(signature, str(root), f"file {rel} is missing") from None
        if found_size != size:
            raise HelixCorruptArtifact(
                signature,
                str(root),
                f"file {rel} holds {found_size} bytes, its manifest says {size}",
            )
    return manifest


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


class CheckedFiles:
    """What the Zarr store of one artifact adds to Zarr's: the manifest that every file read is
    checked against, the artifact's signature and the store's pickle key.

    A file the manifest lists but that is gone, a file it does not list, and a file whose digest
    differs raise ``HelixCorruptArtifact``. Without a manifest (while writing) nothing is
    checked. ``key`` (the pickle key) is never pickled with it. Subclasses say how a corrupt
    artifact leaves the store (:meth:`quarantine`).
    """

    manifest: Manifest | None
    signature: str
    key: bytes | None
    moves_corrupt: bool

    def _checks(
        self, manifest: Manifest | None, signature: str, key: bytes | None, moves_corrupt: bool
    ) -> None:
        self.manifest = manifest
        self.signature = signature
        self.key = key
        self.moves_corrupt = moves_corrupt

    def _check_args(self) -> dict[str, Any]:
        return {
            "manifest": self.manifest,
            "signature": self.signature,
            "key": self.key,
            "moves_corrupt": self.moves_corrupt,
        }

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["key"] = None  # tasks that read chunks never need it; keep it off the wire
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def where(self) -> str:
        """Where the artifact is, for messages."""
        return str(getattr(self, "root", getattr(self, "path", "")))

    def quarantine(self, error: HelixCorruptArtifact) -> None:
        """Take the artifact out of the store, so no plan loads it again."""
        raise NotImplementedError

    def corrupt(self, reason: str) -> HelixCorruptArtifact:
        """The error for this artifact, which leaves the store (``moves_corrupt``)."""
        error = HelixCorruptArtifact(self.signature, self.where(), reason)
        if self.moves_corrupt:
            self.quarantine(error)
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


class ArtifactFiles(CheckedFiles, LocalStore):
    """A ``LocalStore`` over one artifact that checks every file it reads against the manifest
    (:class:`CheckedFiles`); a corrupt artifact is moved to the store's quarantine."""

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
        LocalStore.__init__(self, root, read_only=read_only)
        self._checks(manifest, signature, key, moves_corrupt)

    def with_read_only(self, read_only: bool = False) -> ArtifactFiles:
        return type(self)(self.root, read_only=read_only, **self._check_args())

    def quarantine(self, error: HelixCorruptArtifact) -> None:
        from ._store_repair import quarantine  # only when a check fails

        quarantine(self.root, error)

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
