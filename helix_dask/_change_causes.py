"""Why a node changed between two versions: the kinds of change, one cause record per reason,
and finding them from the catalog (code and package diffs, arguments parameter by parameter for
estimators, data files, parents, run-time dependencies)."""

from __future__ import annotations

import ast
import difflib
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._events import NodeRecord
from ._lineage import is_upstream

if TYPE_CHECKING:
    from .catalog import Catalog


class ChangeKind(enum.StrEnum):
    """Why a node differs between two versions."""

    CODE = "code"
    """The source of the task function or of a project helper it reaches changed."""
    CODE_VALUE = "code value"
    """A module constant, closure value or default the code reads changed; the source did not."""
    ARGUMENT = "argument"
    """An argument value changed (for an estimator: one of its parameters)."""
    DATA_FILE = "data file"
    """An ``hx.File`` argument kept its path but its content changed."""
    PACKAGE = "package"
    """The version of an installed package the code calls changed."""
    UPSTREAM = "upstream"
    """A parent node changed, so this one was recomputed as a consequence."""
    RUNTIME = "run-time dependency"
    """Code the node reached only while running (a traced function, a library) changed: same
    signature, another effective signature."""
    ADDED = "added"
    """The node has no counterpart in the older version."""
    REMOVED = "removed"
    """The node has no counterpart in the newer version."""
    UNKNOWN = "unknown"
    """The signature changed and the catalog does not say why (a non-deterministic task)."""


@dataclass(frozen=True, slots=True)
class Cause:
    """One reason a node changed: what kind, which part, its old and new value."""

    kind: ChangeKind
    subject: str
    old: str | None = None
    new: str | None = None
    detail: str = ""
    """A unified diff for code changes; an explanation otherwise."""
    parameter: str = ""
    """For an estimator argument: the parameter that changed (``pca__n_components``)."""

    def describe(self) -> str:
        """One line, e.g. ``argument bins: 10 -> 5``."""
        if self.kind is ChangeKind.ARGUMENT and self.parameter:
            return f"argument {self.subject}: {self.parameter}: {self.old} -> {self.new}"
        if self.kind in (ChangeKind.ARGUMENT, ChangeKind.PACKAGE, ChangeKind.RUNTIME):
            return f"{self.kind} {self.subject}: {self.old} -> {self.new}"
        if self.kind is ChangeKind.CODE:
            return f"code of {self.subject} changed"
        if self.kind is ChangeKind.DATA_FILE:
            return f"data file {self.subject}: content changed, path did not"
        if self.kind is ChangeKind.UPSTREAM:
            return f"upstream {self.subject} changed"
        return f"{self.kind} {self.subject}" + (f": {self.detail}" if self.detail else "")


def _code_causes(cat: Catalog, a: NodeRecord, b: NodeRecord, va: int, vb: int) -> list[Cause]:
    old, new = cat.code(a.code), cat.code(b.code)
    if old is None or new is None:
        return [Cause(ChangeKind.CODE, b.name, detail="the source was not recorded")]
    causes = []
    (src_a, pkg_a), (src_b, pkg_b) = old, new
    for qualname in sorted(set(src_a) | set(src_b)):
        before, after = src_a.get(qualname, ""), src_b.get(qualname, "")
        if before != after:
            lines = difflib.unified_diff(
                before.splitlines(),
                after.splitlines(),
                f"v{va}/{qualname}",
                f"v{vb}/{qualname}",
                lineterm="",
            )
            causes.append(Cause(ChangeKind.CODE, qualname, detail="\n".join(lines)))
    for dist in sorted(set(pkg_a) | set(pkg_b)):
        if pkg_a.get(dist) != pkg_b.get(dist):
            causes.append(Cause(ChangeKind.PACKAGE, dist, pkg_a.get(dist), pkg_b.get(dist)))
    return causes or [
        Cause(ChangeKind.CODE_VALUE, b.name, detail="a constant, closure value or default changed")
    ]


_ABSENT = "(default)"


def estimator_parameters(text: str) -> dict[str, str] | None:
    """The parameters an estimator's repr shows, flattened scikit-learn style
    (``Pipeline(steps=[('pca', PCA(n_components=5))])`` -> ``{'pca__n_components': '5'}``);
    None when ``text`` is not such a repr (or was shortened)."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(tree, ast.Call) or not isinstance(tree.func, ast.Name) or tree.args:
        return None
    out: dict[str, str] = {}

    def walk(call: ast.Call, prefix: str) -> None:
        for kw in call.keywords:
            value = kw.value
            if kw.arg in ("steps", "transformer_list", "transformers", "estimators") and (
                isinstance(value, ast.List)
            ):
                for item in value.elts:
                    if (
                        isinstance(item, ast.Tuple)
                        and len(item.elts) >= 2
                        and isinstance(item.elts[0], ast.Constant)
                    ):
                        step, est = str(item.elts[0].value), item.elts[1]
                        if isinstance(est, ast.Call):
                            out[f"{prefix}{step}"] = ast.unparse(est.func)
                            walk(est, f"{prefix}{step}__")
                        else:
                            out[f"{prefix}{step}"] = ast.unparse(est)
                continue
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name):
                out[f"{prefix}{kw.arg}"] = ast.unparse(value.func)
                walk(value, f"{prefix}{kw.arg}__")
            else:
                out[f"{prefix}{kw.arg}"] = ast.unparse(value)

    walk(tree, "")
    out[""] = tree.func.id  # the estimator's class
    return out


def _argument_causes(arg: str, old: str | None, new: str | None) -> list[Cause]:
    """An argument change: per parameter when both values are estimator reprs."""
    params = (
        (estimator_parameters(old), estimator_parameters(new))
        if old is not None and new is not None
        else (None, None)
    )
    before, after = params
    if before is None or after is None or before[""] != after[""]:
        return [Cause(ChangeKind.ARGUMENT, arg, old or "(absent)", new or "(absent)")]
    return [
        Cause(
            ChangeKind.ARGUMENT,
            arg,
            before.get(p, _ABSENT),
            after.get(p, _ABSENT),
            parameter=p,
        )
        for p in sorted(set(before) | set(after))
        if before.get(p) != after.get(p)
    ]


def _causes(
    cat: Catalog, a: NodeRecord, b: NodeRecord, va: int, vb: int, parent_names: Mapping[str, str]
) -> tuple[Cause, ...]:
    if not b.code or not a.code:
        return (Cause(ChangeKind.UNKNOWN, b.name, detail="the task is not deterministic"),)
    causes = _code_causes(cat, a, b, va, vb) if a.code != b.code else []
    for arg in sorted(set(a.args) | set(b.args)):
        if a.args.get(arg) == b.args.get(arg):
            continue
        old, new = a.arg_values.get(arg), b.arg_values.get(arg)
        if is_upstream(old) and is_upstream(new):
            continue  # the parent's own change explains it
        if old == new and old is not None and old.startswith("File("):
            causes.append(Cause(ChangeKind.DATA_FILE, old, a.args.get(arg), b.args.get(arg)))
        elif old == new:
            causes.append(
                Cause(ChangeKind.ARGUMENT, arg, old, new, detail="content changed, repr did not")
            )
        else:
            causes.extend(_argument_causes(arg, old, new))
    for parent in sorted(set(b.parents) - set(a.parents)):
        causes.append(
            Cause(ChangeKind.UPSTREAM, parent_names.get(parent, parent.rsplit("-", 1)[0]))
        )
    return tuple(causes) or (Cause(ChangeKind.UNKNOWN, b.name),)


def _runtime_causes(cat: Catalog, a: NodeRecord, b: NodeRecord) -> tuple[Cause, ...]:
    """Same signature, another identity: the run-time dependencies whose digests differ."""
    found = cat.requirements_of([a.stored_as, b.stored_as])
    old, new = found.get(a.stored_as, {}), found.get(b.stored_as, {})
    return tuple(
        Cause(ChangeKind.RUNTIME, dep, old.get(dep, "(absent)"), new.get(dep, "(absent)"))
        for dep in sorted(set(old) | set(new))
        if old.get(dep) != new.get(dep)
    )


ChangeKind.__module__ = Cause.__module__ = estimator_parameters.__module__ = "helix_dask.history"
