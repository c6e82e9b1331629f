"""Pickles in artifacts: values no other layout fits, pickled (or cloudpickled) into a ``uint8``
Zarr array with an HMAC-SHA256 tag (:mod:`helix_dask._keys`) over the artifact's signature, the
array's path and the bytes; a blob whose tag does not verify is never unpickled."""

from __future__ import annotations

import importlib.util
import pickle
from typing import Any

import numpy as np
import zarr

from helix_dask._codec_arrays import _stored_array, _write_array
from helix_dask._errors import HelixStoreError
from helix_dask._integrity import CheckedFiles
from helix_dask._keys import pickle_tag, tag_matches


def _pickle_dumps(value: object, what: str) -> tuple[bytes, str]:
    """Pickle ``value`` (cloudpickle if pickle cannot); return the bytes and the pickler."""
    try:
        return pickle.dumps(value, protocol=5), "pickle"
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        error = exc
    if importlib.util.find_spec("cloudpickle") is not None:  # optional: closures, lambdas
        import cloudpickle

        try:
            return cloudpickle.dumps(value, protocol=5), "cloudpickle"
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            error = exc
    raise HelixStoreError(
        f"cannot store {what} of type {qualname(value)}: it cannot be pickled ({error}); "
        "return a picklable value or mark the task materialize=False"
    ) from error


def _signer(group: zarr.Group) -> CheckedFiles:
    """The artifact's files, which know its signature and the store's pickle key."""
    store = group.store
    if not isinstance(store, CheckedFiles) or store.key is None:
        raise HelixStoreError(
            f"pickles are written and read only through an artifact store, not {store!r}; "
            "use ZarrArtifactStore.put and get"
        )
    return store


def _write_pickled(
    group: zarr.Group, key: str, value: object, what: str, pickled: tuple[bytes, str] | None = None
) -> dict[str, Any]:
    """Pickle ``value`` (unless ``pickled`` already holds its pickle) into the ``uint8`` Zarr
    array ``key``; return its pickler and tag."""
    files = _signer(group)
    payload, pickler = _pickle_dumps(value, what) if pickled is None else pickled
    _write_array(group, key, np.frombuffer(payload, dtype=np.uint8))
    where = f"{group.path}/{key}" if group.path else key
    return {"pickler": pickler, "hmac": pickle_tag(files.key, files.signature, where, payload)}  # type: ignore[arg-type]


def _signed_payload(group: zarr.Group, key: str, meta: dict[str, Any]) -> np.ndarray:
    """The bytes of the pickle ``key`` if its tag verifies; else raise."""
    files = _signer(group)
    payload = np.asarray(_stored_array(group, key)[...], dtype=np.uint8)
    where = f"{group.path}/{key}" if group.path else key
    if not tag_matches(files.key, files.signature, where, payload, meta.get("hmac")):  # type: ignore[arg-type]
        raise files.corrupt(f"the pickle {where} is not signed with this store's key")
    return payload


def _read_pickled(group: zarr.Group, key: str, meta: dict[str, Any]) -> Any:
    """Unpickle the ``uint8`` Zarr array ``key`` if its tag verifies; else raise."""
    return pickle.loads(_signed_payload(group, key, meta))


def check_pickles(group: zarr.Group, meta: dict[str, Any]) -> int:
    """Check the tag of every pickle in ``group`` without unpickling any; return how many."""
    kind, checked = meta["kind"], 0
    if kind == "pickle":
        _signed_payload(group, "data", meta)
        return 1
    if kind == "mapping":
        for i in range(len(meta["keys"])):
            entry = group[str(i)]
            checked += check_pickles(entry, entry.attrs["helix"])  # type: ignore[arg-type]
        return checked
    if kind not in ("dataframe", "series"):
        return 0
    labels = [("index", meta["index"])] + ([("labels", meta["labels"])] if "labels" in meta else [])
    columns = [(f"col{i}", column) for i, column in enumerate(meta["columns"])]
    for key, part in labels + columns:
        if part["enc"] == "pickle":
            _signed_payload(group, key, part)
            checked += 1
    return checked


def qualname(value: object) -> str:
    """``module.Qualified.Name`` of the type of ``value``."""
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"
