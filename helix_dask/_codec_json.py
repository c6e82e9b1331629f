"""JSON in attributes: small trees of JSON-safe builtins, stored in an artifact's attributes."""

from __future__ import annotations

import json
import math
import struct
from typing import Any, Final

_JSON_MAX_BYTES: Final = 64 * 2**10
_JSON_MAX_DEPTH: Final = 32
_JSON_TYPES: Final = (bool, int, float, str, list, tuple, dict)
"""Exact types whose values are tried as JSON before any other layout."""

# Every JSON object in the encoding is a one-key tag, so user dicts cannot be confused with tags:
# {"d": {...}} a dict, {"t": [...]} a tuple, {"f": "<hex>"} a non-finite float (bit-exact).


class _NotJSONSafe(Exception):
    """Raised inside the JSON encoder when a value must be pickled instead."""


def _to_json(value: object, depth: int = 0) -> Any:
    """Tagged JSON for a tree of exact JSON-safe scalars; ``_NotJSONSafe`` otherwise."""
    kind = type(value)
    if value is None or kind is bool or kind is int:
        return value
    if kind is float:
        if math.isfinite(value):  # type: ignore[arg-type]
            return value
        return {"f": struct.pack(">d", value).hex()}
    # Only builtin containers are sized: len() of a 0-d array, say, raises TypeError.
    if kind not in (str, list, tuple, dict) or depth >= _JSON_MAX_DEPTH:
        raise _NotJSONSafe
    if len(value) > _JSON_MAX_BYTES:  # type: ignore[arg-type]
        raise _NotJSONSafe
    if kind is str:
        return value
    if kind is list:
        return [_to_json(v, depth + 1) for v in value]  # type: ignore[attr-defined]
    if kind is tuple:
        return {"t": [_to_json(v, depth + 1) for v in value]}  # type: ignore[attr-defined]
    if all(type(k) is str for k in value):  # type: ignore[attr-defined]
        return {"d": {k: _to_json(v, depth + 1) for k, v in value.items()}}  # type: ignore[attr-defined]
    raise _NotJSONSafe


def _json_or_raise(value: object) -> Any:
    """Tagged JSON for ``value`` if it fits in ``_JSON_MAX_BYTES`` of UTF-8; else raise."""
    encoded = _to_json(value)
    try:
        text = json.dumps(encoded, ensure_ascii=False, allow_nan=False).encode()
    except (UnicodeEncodeError, ValueError) as exc:  # lone surrogates, ints of >4300 digits
        raise _NotJSONSafe from exc
    if len(text) > _JSON_MAX_BYTES:
        raise _NotJSONSafe
    return encoded


def _from_json(encoded: Any) -> Any:
    """Invert :func:`_to_json`."""
    if isinstance(encoded, list):
        return [_from_json(v) for v in encoded]
    if isinstance(encoded, dict):
        ((tag, body),) = encoded.items()
        if tag == "t":
            return tuple(_from_json(v) for v in body)
        if tag == "d":
            return {k: _from_json(v) for k, v in body.items()}
        if tag == "f":
            return struct.unpack(">d", bytes.fromhex(body))[0]
        raise ValueError(f"unknown JSON tag {tag!r}")
    return encoded
