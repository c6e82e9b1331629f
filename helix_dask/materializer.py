"""Materialization policies: pure functions that decide whether a computed result is stored.

A policy sees one :class:`Candidate` (a node that just finished, with its measured costs) and the
free budget, and returns a :class:`Verdict`. Policies are chosen by name (``helix.policy``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dask.utils import format_bytes

from ._errors import HelixConfigError
from ._events import Materialization


@dataclass(frozen=True, slots=True)
class Candidate:
    """A computed node offered for storage, with everything a policy may weigh."""

    name: str
    signature: str
    compute_seconds: float
    recompute_seconds: float
    """Its own compute time plus that of every ancestor that would have to run again."""
    nbytes: int
    load_seconds: float
    """Estimated seconds to read it back (measured store bandwidth and its size)."""
    is_output: bool
    forced: bool | None
    """The task's ``materialize=`` option: True, False or None (let the policy decide)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """A policy's answer: the outcome and, in plain words, why."""

    outcome: Materialization
    reason: str

    @property
    def store(self) -> bool:
        return self.outcome is Materialization.STORED


Policy = Callable[[Candidate, int], Verdict]


def _guards(c: Candidate, free_bytes: int) -> Verdict | None:
    """Rules every policy shares: opt-out first, then the budget, then opt-in and outputs."""
    if c.forced is False:
        return Verdict(Materialization.SKIPPED, "task declared materialize=False")
    if c.nbytes > free_bytes:
        return Verdict(
            Materialization.NO_SPACE,
            f"{format_bytes(c.nbytes)} does not fit the {format_bytes(max(free_bytes, 0))} "
            "left in the budget",
        )
    if c.forced is True:
        return Verdict(Materialization.STORED, "task declared materialize=True")
    if c.is_output:
        return Verdict(Materialization.STORED, "requested output, stored so a re-run is free")
    return None


def helix2x(c: Candidate, free_bytes: int) -> Verdict:
    """HELIX's streaming rule: store when recomputing costs more than twice loading."""
    if (v := _guards(c, free_bytes)) is not None:
        return v
    if c.recompute_seconds > 2 * c.load_seconds:
        return Verdict(
            Materialization.STORED,
            f"recompute {c.recompute_seconds:.3f}s > 2 x load {c.load_seconds:.3f}s",
        )
    return Verdict(
        Materialization.SKIPPED,
        f"recompute {c.recompute_seconds:.3f}s <= 2 x load {c.load_seconds:.3f}s",
    )


def store_all(c: Candidate, free_bytes: int) -> Verdict:
    """Store everything that fits (DeepDive-like)."""
    if (v := _guards(c, free_bytes)) is not None:
        return v
    return Verdict(Materialization.STORED, "policy 'all' stores every result that fits")


def store_none(c: Candidate, free_bytes: int) -> Verdict:
    """Store nothing, not even outputs (KeystoneML-like re-execution)."""
    return Verdict(Materialization.SKIPPED, "policy 'none' stores nothing")


POLICIES: dict[str, Policy] = {"helix2x": helix2x, "all": store_all, "none": store_none}


def get_policy(name: str) -> Policy:
    """The policy called ``name``; HelixConfigError listing the known ones otherwise."""
    try:
        return POLICIES[name]
    except KeyError:
        raise HelixConfigError(
            f"materialization policy {name!r} is unknown; choose one of {sorted(POLICIES)}"
        ) from None
