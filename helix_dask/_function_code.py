"""Code digests of project functions: normalized source, the names and local imports it
reads, closure variables, defaults and attributes set on the function."""

from __future__ import annotations

import sys
import types

from helix_dask._code_references import _CodeReferences
from helix_dask._code_walker import _digest, logger
from helix_dask._fingerprint import Hasher
from helix_dask._guards import MISSING
from helix_dask._origin import import_project_module, module_origin_is_project
from helix_dask._syntax import local_imports, normalized_function


class _FunctionCode(_CodeReferences):
    """Digests of project functions."""

    def _imports(
        self, h: Hasher, code: types.CodeType, func: types.FunctionType, owner: str
    ) -> None:
        imports = local_imports(code)
        if not imports:
            return
        package = self.guards.item(func.__globals__, "__package__")
        package = package if isinstance(package, str) else ""
        for module_name, level, names in imports:
            base = package.rsplit(".", level - 1)[0] if level else ""
            absolute = ".".join(p for p in (base, module_name) if p)
            h.field(f"import {absolute}".encode())
            module = self.guards.item(sys.modules, absolute)
            if module is MISSING or module is None:
                module = import_project_module(absolute, owner)
            if module is None:
                # A library not imported yet: its version counts, without importing it.
                if module_origin_is_project(absolute) is False:
                    self.record_package(absolute)
                    h.tag("library")
                else:
                    logger.debug("%s imports %s, which cannot be found", owner, absolute)
                    self.guards.unknown()  # it may be written later
                    h.tag("not found")
                continue
            if not names:
                h.field((self.object_digest(module, absolute, owner) or "").encode())
            for name in names:
                qualified = f"{absolute}.{name}"
                if self._skip(name, qualified):
                    continue
                obj = self.guards.attr(module, name)
                if obj is MISSING:
                    obj = self.guards.item(sys.modules, qualified)
                    if obj is MISSING or obj is None:
                        obj = import_project_module(qualified, owner)
                    if obj is None:
                        self.guards.unknown()  # found or not on the file system
                        h.field(_digest("missing", qualified).encode())
                        continue
                h.field(self.reference_digest(obj, qualified, owner, name).encode())

    def function_digest(self, func: types.FunctionType, *, root: bool = False) -> str:
        name = f"{func.__module__}.{func.__qualname__}"
        known = self._enter(func, "function", name)
        if known is not None:
            return known
        self.guards.function(func)
        code = func.__code__
        norm = normalized_function(code.co_filename, code.co_qualname, code, root)
        self.sources.setdefault(name, norm.text)
        h = Hasher()
        h.tag("function")
        h.field(norm.dump.encode())
        self._references(h, norm, func.__globals__, func.__module__, name)
        self._imports(h, code, func, name)
        for var, cell in zip(code.co_freevars, func.__closure__ or (), strict=True):
            if self._skip(var, f"{name}.{var}"):
                continue
            h.field(var.encode())
            try:
                value = cell.cell_contents
            except ValueError:
                h.tag("empty cell")
                continue
            what = f"closure variable {var!r}"
            found = self.object_digest(value, var, name)
            h.field((found or self.value_digest(value, var, name, what, var)).encode())
        defaults = (func.__defaults__, func.__kwdefaults__)
        changing = (func.__defaults__, tuple((func.__kwdefaults__ or {}).values()))
        what = "a default value"
        h.field(self.value_digest(defaults, "defaults", name, what, watch=changing).encode())
        # Attributes set on the function (helper.factor = 7) are state its code may read.
        for attr in sorted(vars(func)):
            if (attr.startswith("__") and attr != "__wrapped__") or self._skip(attr, attr):
                continue
            h.field(attr.encode())
            h.field(self._member_digest(vars(func)[attr], f"{name}.{attr}", name, attr).encode())
        return self._leave(func, h.hexdigest())
