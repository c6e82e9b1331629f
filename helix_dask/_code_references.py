"""The names a piece of project source reads, resolved and digested: globals in its module's
scope, attribute chains through project modules (``models.linear.fit``), plain data of library
modules (``sys.argv``), and whole modules when the code reads its globals by computed name
(``globals()``, ``vars()``, ``eval``, ``exec``)."""

from __future__ import annotations

import builtins
import sys
import types
from collections.abc import Mapping, Sequence
from typing import Any

from helix_dask._code_walker import _digest, _WalkerBase, logger
from helix_dask._fingerprint import Hasher
from helix_dask._guards import MISSING
from helix_dask._origin import import_project_module, is_project_local
from helix_dask._syntax import Normalized


class _CodeReferences(_WalkerBase):
    """Digests of what a function's or class's source names."""

    def _chain_digest(self, module: types.ModuleType, attrs: Sequence[str], owner: str) -> str:
        """Follow ``module.a.b`` through project-local modules to the object it names."""
        obj: object = module
        path = [module.__name__]
        for attr in attrs:
            if not isinstance(obj, types.ModuleType):
                break
            if not is_project_local(obj):
                return self.object_digest(obj, ".".join(path), owner) or ""
            value = self.guards.attr(obj, attr)
            if value is MISSING:
                # A submodule not imported yet (also in a namespace package): the code
                # imports it by then, or fails; its code counts either way.
                found = import_project_module(".".join([*path, attr]), owner)
                if found is None:
                    logger.debug("%s: %s has no attribute %r yet", owner, ".".join(path), attr)
                    self.guards.unknown()  # a file may appear
                    return _digest("missing", *path, attr)
                obj = found
            else:
                obj = value
            path.append(attr)
        qualified = ".".join(path)
        if self._skip(path[-1], qualified):
            return _digest("untracked", qualified)
        return self.reference_digest(obj, qualified, owner, path[-1])

    def _references(
        self, h: Hasher, norm: Normalized, scope: Mapping[str, Any], module: str, owner: str
    ) -> None:
        chains: dict[str, list[tuple[str, ...]]] = {}
        for chain in norm.chains:
            chains.setdefault(chain[0], []).append(chain)
        for name in norm.names:
            qualified = f"{module}.{name}"
            if self._skip(name, qualified):
                continue
            obj = self.guards.item(scope, name)
            if obj is MISSING:
                if self.guards.attr(builtins, name) is MISSING:
                    h.tag("unresolved")
                    h.field(name.encode())
                elif name in _NAMESPACE_READERS:
                    h.field(self._namespace_digest(name, module, owner).encode())
                continue
            h.field(name.encode())
            if isinstance(obj, types.ModuleType) and name in chains and not is_project_local(obj):
                # Plain data a library module holds is process state (``sys.argv``): its
                # value counts, as a constant of the project's does.
                for chain in chains[name]:
                    value = self._library_data(obj, chain[1:])
                    if value is not MISSING:
                        h.field(".".join(chain).encode())
                        what = f"the value of {'.'.join(chain)!r}"
                        h.field(self.value_digest(value, ".".join(chain), owner, what).encode())
            elif (
                isinstance(obj, types.ModuleType)
                and is_project_local(obj)
                and name in chains
                and name not in norm.bare
            ):
                for chain in chains[name]:
                    h.field(".".join(chain).encode())
                    h.field(self._chain_digest(obj, chain[1:], owner).encode())
                continue
            h.field(self.reference_digest(obj, qualified, owner, name).encode())

    def _namespace_digest(self, reader: str, module: str, owner: str) -> str:
        """Code that calls ``globals()``, ``vars()``, ``eval`` or ``exec`` may read any name
        of its module, chosen at run time: the whole module counts (as a module used as a
        value does)."""
        found = self.guards.item(sys.modules, module)
        if isinstance(found, types.ModuleType) and is_project_local(found):
            return _digest("namespace", reader, self.module_digest(found, owner))
        self.guards.unknown()
        return _digest("namespace", reader, module)

    def _library_data(self, module: types.ModuleType, attrs: Sequence[str]) -> object:
        """The plain data (strings, numbers, and lists, tuples and dicts of them) that
        ``module.a.b`` names through library modules, or MISSING."""
        obj: object = module
        for attr in attrs:
            if not isinstance(obj, types.ModuleType):
                break
            obj = self.guards.attr(obj, attr)
            if obj is MISSING:
                return MISSING
        return obj if _plain_data(obj) else MISSING


_PLAIN = (str, bytes, int, float, bool, type(None))


def _plain_data(value: object, depth: int = 0) -> bool:
    """Whether ``value`` is plain data: built-in scalars and containers of them."""
    if type(value) in _PLAIN:
        return True
    if depth > 2 or type(value) not in (list, tuple, dict) or len(value) > 10_000:  # type: ignore[arg-type]
        return False
    items = value.items() if isinstance(value, dict) else enumerate(value)  # type: ignore[union-attr]
    return all(_plain_data(k, depth + 1) and _plain_data(v, depth + 1) for k, v in items)


_NAMESPACE_READERS = frozenset({"globals", "vars", "eval", "exec"})
"""Built-ins through which code reads its module's names by a computed name."""
