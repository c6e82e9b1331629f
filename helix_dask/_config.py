"""Settings under ``helix.`` in dask.config: YAML defaults shipped in the package, the same
defaults in code (a preload must start even when dask.config was reset to a snapshot taken
before helix's YAML was added), and the checks that turn a setting into a value."""

from __future__ import annotations

import numbers
import os
import shutil
from pathlib import Path

import dask.config
import yaml
from dask.utils import parse_bytes

from ._errors import HelixConfigError

DEFAULTS: dict[str, object] = {
    "store": ".helix",
    "storage-options": {},
    "catalog": None,
    "budget": None,
    "policy": "value",
    "workflow": None,
    "message": "",
    "solver": "scipy",
    "read-bandwidth": "500MB",
    "load-overhead": 0.005,
    "key-file": None,
    "trace": "new-code",
    "redact": "secrets",
    "catalog-timeout": 2.0,
    "worker-hold": "10%",
}
"""Every setting's default; ``helix.yaml`` documents them and must agree (a test checks)."""

REMOTE_BUDGET = 10 * 2**30
"""Default budget of a store on object storage (bytes)."""

_YAML = Path(__file__).with_name("helix.yaml")
with _YAML.open() as _f:
    dask.config.update_defaults(yaml.safe_load(_f))


def get(name: str) -> object:
    """The current value of ``helix.<name>``, read at call time, the code default if unset."""
    if name not in DEFAULTS:
        raise KeyError(f"helix.{name} is not a helix setting; known: {sorted(DEFAULTS)}")
    return dask.config.get(f"helix.{name}", default=DEFAULTS[name])


def catalog_timeout() -> float:
    """Seconds the scheduler's event loop may wait for the catalog (``helix.catalog-timeout``)."""
    return float(get("catalog-timeout"))  # type: ignore[arg-type]


def check_budget(budget: object) -> int | None:
    """Bytes from an int or a size string; None stays None (resolved where the store is).

    Raises HelixConfigError for anything else: ``1.5`` or ``True`` are not sizes.
    """
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, (numbers.Integral, str)):
        raise HelixConfigError(
            f"budget {budget!r} ({type(budget).__name__}) is not a size; pass whole bytes as an "
            "int or a string such as '10 GiB'"
        )
    try:
        value = parse_bytes(budget) if isinstance(budget, str) else int(budget)
    except (ValueError, TypeError) as e:
        raise HelixConfigError(
            f"budget {budget!r} is not a size; pass bytes or a string such as '10 GiB'"
        ) from e
    if value < 0:
        raise HelixConfigError(f"budget {budget!r} is negative; pass a size of at least 0")
    return value


def resolve_budget(budget: object, store: str | os.PathLike[str]) -> int:
    """Bytes from an int, a size string or None (a quarter of the store disk's free space).

    Call it where the store is: the free space is that of the scheduler's disk.
    """
    value = check_budget(budget)
    if value is None:
        from ._location import is_remote  # reads settings through this module

        if is_remote(store):
            return REMOTE_BUDGET  # an object store has no free space to take a share of
        from ._keys import private_root  # _keys reads settings through this module

        private_root(store)
        return shutil.disk_usage(store).free // 4
    return value


def parse_size(value: object) -> int:
    """Bytes from an int or a size string such as ``"500MB"``."""
    return parse_bytes(value) if isinstance(value, str) else int(value)  # type: ignore[arg-type]
