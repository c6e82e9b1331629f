"""Materialization policies and eviction: pure functions that decide what the store keeps.

A policy sees one :class:`Candidate` (a node that just finished, with its measured costs) and
the free budget, and returns a :class:`Verdict`. Policies are chosen by name (``helix.policy``):

``value`` (default)
    Stores a node when its expected saving outweighs the cost of writing it once. The saving is
    (recreation - load) per reuse times the expected number of reuses: with p the chance that
    it is read in an iteration, p + p^2 + ... over a horizon of iterations. It is read when its
    signature survives and a child must run rather than load its own stored result
    (:func:`helix_dask.costs.read_probability`). When the
    budget is full it evicts artifacts of lower saving per byte.
``helix2x``
    HELIX's streaming rule: store when recreation costs more than twice the load, while the
    budget lasts; it ranks nothing and never evicts.
``all``
    Store everything that fits (DeepDive-like).
``none``
    Store nothing (KeystoneML-like re-execution).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from dask.utils import format_bytes

from ._errors import HelixConfigError
from ._events import Materialization
from .costs import expected_reuses, expected_saving


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
    reuse_probability: float = 1.0
    write_seconds: float = 0.0

    @property
    def expected_reuses(self) -> float:
        return expected_reuses(self.reuse_probability)

    @property
    def saving(self) -> float:
        """Expected seconds saved over later iterations by having it stored."""
        return expected_saving(self.reuse_probability, self.recompute_seconds, self.load_seconds)

    @property
    def density(self) -> float:
        """Expected saving per byte stored."""
        return self.saving / max(self.nbytes, 1)

    def explain(self) -> str:
        return (
            f"saves {self.recompute_seconds - self.load_seconds:.3f}s per reuse, "
            f"p(reuse)={self.reuse_probability:.2f} (~{self.expected_reuses:.1f} reuses), "
            f"{format_bytes(self.nbytes)}, "
            f"load {self.load_seconds:.3f}s, write {self.write_seconds:.3f}s"
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """A policy's answer: the outcome and, in plain words, why."""

    outcome: Materialization
    reason: str

    @property
    def store(self) -> bool:
        return self.outcome is Materialization.STORED


@dataclass(frozen=True, slots=True)
class Policy:
    """A named decision function and whether it may evict to make room."""

    name: str
    decide: Callable[[Candidate, int], Verdict]
    evicts: bool = False


@dataclass(frozen=True, slots=True)
class Stored:
    """A committed artifact as eviction sees it: its size and expected saving per byte."""

    signature: str
    name: str
    nbytes: int
    density: float


@dataclass(frozen=True, slots=True)
class StorageLimits:
    """What a worker may decide about a result alone, told by the scheduler plugin: the
    policy, the budget and the bytes free when it last heard.

    A result that no verdict could store (see :meth:`never`) is decided where it finished, so
    the worker releases it as plain Dask would instead of holding it for an answer. ``free``
    is only ever a hint: the scheduler reserves every byte it accepts.
    """

    policy: str
    evicts: bool
    budget: int
    free: int

    def never(self, nbytes: int, materialize: bool | None, deterministic: bool) -> Verdict | None:
        """The verdict of a result no policy decision can store, else None (ask)."""
        if not deterministic:
            return Verdict(Materialization.SKIPPED, "task is not deterministic")
        if self.policy == "none":
            return Verdict(Materialization.SKIPPED, "policy 'none' stores nothing")
        if materialize is False:
            return Verdict(Materialization.SKIPPED, "task declared materialize=False")
        if nbytes > self.budget:
            return Verdict(
                Materialization.NO_SPACE,
                f"{nbytes} bytes exceed the whole budget of {self.budget} bytes",
            )
        if not self.evicts and nbytes > self.free:
            return Verdict(
                Materialization.NO_SPACE,
                f"{format_bytes(nbytes)} does not fit the {format_bytes(max(self.free, 0))} "
                "left in the budget",
            )
        return None


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


def value(c: Candidate, free_bytes: int) -> Verdict:
    """Store when the expected saving outweighs the write (see the module docstring)."""
    if c.forced is not True and not c.is_output and c.saving <= c.write_seconds:
        return Verdict(
            Materialization.SKIPPED,
            f"expected saving {c.saving:.3f}s <= write {c.write_seconds:.3f}s ({c.explain()})",
        )
    if (v := _guards(c, free_bytes)) is not None:
        if v.outcome is Materialization.STORED:
            return Verdict(v.outcome, f"{v.reason}; {c.explain()}")
        return v
    return Verdict(Materialization.STORED, c.explain())


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


POLICIES: dict[str, Policy] = {
    p.name: p
    for p in (
        Policy("value", value, evicts=True),
        Policy("helix2x", helix2x),
        Policy("all", store_all),
        Policy("none", store_none),
    )
}


def get_policy(name: str) -> Policy:
    """The policy called ``name``; HelixConfigError listing the known ones otherwise."""
    try:
        return POLICIES[name]
    except KeyError:
        raise HelixConfigError(
            f"materialization policy {name!r} is unknown; choose one of {sorted(POLICIES)}"
        ) from None


def choose_evictions(
    stored: Sequence[Stored],
    need_bytes: int,
    protected: Collection[str] = (),
    below_density: float | None = None,
) -> list[Stored] | None:
    """The artifacts to evict to free ``need_bytes``: least saving per byte first.

    Artifacts in ``protected`` (loaded by a running plan) are never chosen. With
    ``below_density`` (a candidate's saving per byte), only artifacts worth less per byte than
    the candidate may go. Returns None when no such choice frees enough; [] when nothing is
    needed.
    """
    if need_bytes <= 0:
        return []
    chosen: list[Stored] = []
    freed = 0
    for s in sorted(stored, key=lambda s: (s.density, -s.nbytes, s.signature)):
        if s.signature in protected:
            continue
        if below_density is not None and s.density >= below_density:
            break
        chosen.append(s)
        freed += s.nbytes
        if freed >= need_bytes:
            return chosen
    return None
