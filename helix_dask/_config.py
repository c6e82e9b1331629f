"""Settings under ``helix.`` in dask.config, with the YAML defaults shipped in the package."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dask.config
import yaml
from dask.utils import parse_bytes

from ._errors import HelixConfigError

REMOTE_BUDGET = 10 * 2**30
"""Default budget of a store on object storage (bytes)."""

_DEFAULTS = Path(__file__).with_name("helix.yaml")
with _DEFAULTS.open() as _f:
    dask.config.update_defaults(yaml.safe_load(_f))


def get(name: str) -> object:
    """The current value of ``helix.<name>``, read at call time."""
    return dask.config.get(f"helix.{name}")


def resolve_budget(budget: int | str | None, store: str | os.PathLike[str]) -> int:
    """Bytes from an int, a size string or None (a quarter of the store disk's free space)."""
    if budget is None:
        from ._location import is_remote  # reads settings through this module

        if is_remote(store):
            return REMOTE_BUDGET  # an object store has no free space to take a share of
        from ._keys import private_root  # _keys reads settings through this module

        private_root(store)
        return shutil.disk_usage(store).free // 4
    try:
        value = parse_bytes(budget) if isinstance(budget, str) else int(budget)
    except (ValueError, TypeError) as e:
        raise HelixConfigError(
            f"budget {budget!r} is not a size; pass bytes or a string such as '10 GiB'"
        ) from e
    if value < 0:
        raise HelixConfigError(f"budget {budget!r} is negative; pass a size of at least 0")
    return value


def parse_size(value: object) -> int:
    """Bytes from an int or a size string such as ``"500MB"``."""
    return parse_bytes(value) if isinstance(value, str) else int(value)  # type: ignore[arg-type]
