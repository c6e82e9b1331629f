"""Change-tracking signatures: what a task's result depends on, as stable hex digests.

A node's signature is a Merkle hash over its name, its code fingerprint, its argument
fingerprints and its parents' signatures. The code fingerprint covers the function's normalized
syntax tree (comments, formatting and docstrings do not count), every project-local helper and
class it reaches, the module constants it reads, its closure and defaults, and the versions of
the third-party packages it calls. All digests are ``xxh3_128`` hex strings, identical across
processes and sessions for identical inputs.

Cost model: syntax trees are parsed once per code object and cached; a function's code
fingerprint is reused while every global, module attribute, closure cell, default, helper and
class its walk read is still the same object (plain data such as a table of settings: the same
content), so a helper redefined in a notebook changes its callers and an unchanged task costs a
few look-ups per call. File contents are re-read only when size, mtime, ctime or inode change.

This module is the public face of the signature code and combines the parts into node
signatures. The parts live in private modules, one role each: ``_fingerprint`` (values, with
rules for built-ins, numpy, pandas and scikit-learn in ``_fingerprint_*`` modules loaded on
first use), ``_files`` (file contents), ``_syntax`` (normalized code), ``_origin`` (whether
code is the project's or a library's, and which version) and ``_code`` (the code a function
reaches).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import xxhash

from helix_dask._code import CodeFingerprint, code_fingerprint, is_project_local
from helix_dask._errors import HelixSignatureError
from helix_dask._files import File, file_fingerprint
from helix_dask._fingerprint import (
    _FIELD,
    CannotFingerprint,
    Hasher,
    fingerprint_value,
    register,
    register_lazy,
)

__all__ = [
    "CannotFingerprint",
    "CodeFingerprint",
    "File",
    "Hasher",
    "argument_fingerprints",
    "code_fingerprint",
    "file_fingerprint",
    "fingerprint_arguments",
    "fingerprint_value",
    "is_project_local",
    "node_signature",
    "register",
    "register_lazy",
]


def node_signature(*, name: str, code: str, args: Mapping[str, str], parents: Sequence[str]) -> str:
    """Merkle hash over a task's name, code digest, argument fingerprints and parents.

    Examples
    --------
    >>> a = node_signature(name="load", code="c0de", args={"n": "01"}, parents=[])
    >>> b = node_signature(name="fit", code="c0de", args={}, parents=[a])
    >>> a != b
    True
    """
    for where, value in (("name", name), ("code", code)):
        if not isinstance(value, str):
            _not_a_digest(name, where, value)
    for key, value in args.items():
        if not isinstance(value, str):
            _not_a_digest(name, f"args[{key!r}]", value)
    for i, value in enumerate(parents):
        if not isinstance(value, str):
            _not_a_digest(name, f"parents[{i}]", value)
    # The bytes Hasher.tag/field would write, hashed in one call (same digest, less work).
    out = [_NODE_TAG, _field(name.encode()), _field(code.encode()), _field(str(len(args)).encode())]
    for key in sorted(args):
        out.append(_field(key.encode()))
        out.append(_field(args[key].encode()))
    out.append(_field(str(len(parents)).encode()))
    out.extend(_field(parent.encode()) for parent in parents)
    return xxhash.xxh3_128_hexdigest(b"".join(out))


def _field(data: bytes) -> bytes:
    return _FIELD + len(data).to_bytes(8, "little") + data


_NODE_TAG = Hasher._tag_bytes("node")


def _not_a_digest(name: str, where: str, value: object) -> None:
    raise HelixSignatureError(
        f"node_signature() got {type(value).__name__!r} for {where} of {name!r}; "
        "pass hex digest strings"
    )


def argument_fingerprints(
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    task_name: str,
    is_node: Callable[[object], str | None],
) -> dict[str, str]:
    """Fingerprint each argument of a call, by parameter name.

    Parameters
    ----------
    func, args, kwargs
        The task function and the call's arguments (bound with ``inspect.signature``;
        parameters left out count with their default value).
    task_name
        Used in error messages.
    is_node
        Returns an upstream node's signature for lazy node values (also nested in containers),
        which then stands in for the value's content; ``None`` for other values.

    Raises
    ------
    HelixSignatureError
        If the arguments do not match the signature, or an argument cannot be fingerprinted.

    Examples
    --------
    >>> def scale(x, factor=2):
    ...     return x * factor
    >>> sorted(argument_fingerprints(scale, (3,), {}, task_name="scale", is_node=lambda o: None))
    ['factor', 'x']
    """
    try:
        bound = inspect.signature(func).bind(*args, **kwargs)
    except TypeError as exc:
        raise HelixSignatureError(
            f"task {task_name!r} was called with arguments that do not match its "
            f"signature ({exc}); fix the call"
        ) from exc
    # f(x) and f(x, C=1.0) with default C=1.0 run the same: the default counts either way.
    bound.apply_defaults()
    return fingerprint_arguments(bound.arguments, task_name=task_name, is_node=is_node)


def fingerprint_arguments(
    arguments: Mapping[str, Any],
    *,
    task_name: str,
    is_node: Callable[[object], str | None],
    known: Callable[[object], str | None] | None = None,
) -> dict[str, str]:
    """Fingerprint arguments already bound to parameter names (defaults applied), as
    :func:`argument_fingerprints` does after binding; ``known`` may return the fingerprint
    its caller has just computed for a value (with ``is_node`` substituting)."""
    result = {}
    for name, value in arguments.items():
        if known is not None and (found := known(value)) is not None:
            result[name] = found
            continue
        try:
            result[name] = fingerprint_value(value, path=name, substitute=is_node)
        except CannotFingerprint as exc:
            raise HelixSignatureError(
                f"argument {name!r} of task {task_name!r} is {exc.what}; pass a list/array/"
                "number/str/dict/dataclass/File instead, or mark the task deterministic=False"
            ) from exc
    return result
