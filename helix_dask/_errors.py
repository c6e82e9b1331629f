"""Every error helix_dask raises: each says the value, what was expected and what to do."""

from __future__ import annotations


class HelixError(Exception):
    """Base class of helix_dask's own errors."""


class HelixSignatureError(HelixError, TypeError):
    """A task, argument, global or closure value that cannot be fingerprinted."""


class HelixStoreError(HelixError, OSError):
    """An artifact that cannot be written, read or committed."""


class HelixConfigError(HelixError, ValueError):
    """A setting with a value helix_dask cannot use."""


class HelixTaskError(HelixError, RuntimeError):
    """A helix task whose result cannot be handled (for example, it cannot be pickled)."""


class HelixCorruptArtifact(HelixStoreError):
    """A stored artifact that fails its integrity checks; it is never returned, only recomputed.

    ``signature``, ``path`` and ``reason`` say which artifact and what was wrong with it.
    """

    def __init__(self, signature: str, path: str, reason: str) -> None:
        self.signature, self.path, self.reason = signature, path, reason
        super().__init__(
            f"artifact {signature} at {path} is unusable: {reason}; it is moved to the store's "
            "quarantine directory and its result recomputed (`helix verify --repair` checks "
            "a whole store)"
        )

    def __reduce__(self) -> tuple[type[HelixCorruptArtifact], tuple[str, str, str]]:
        return type(self), (self.signature, self.path, self.reason)


class HelixConfigWarning(UserWarning):
    """Settings that replace the ones a cluster already runs with."""
