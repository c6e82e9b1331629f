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


class HelixConfigWarning(UserWarning):
    """Settings that replace the ones a cluster already runs with."""
