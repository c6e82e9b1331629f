"""The cost model: what loading, writing and recomputing will cost, and how likely reuse is,
estimated from what earlier runs measured (all pure functions over plain data)."""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SMALL = 1 << 20
"""Artifacts below this many bytes measure the fixed cost of a load or write, not bandwidth."""

LARGE = 16 << 20
"""Only transfers of at least this many bytes measure bandwidth. In between, the fixed costs
(creating a Zarr group, several files) still dominate: a 10 MB write taking 0.17 s here once
put write bandwidth at 60 MB/s, where 100 MB writes ran at 700 MB/s, and the policy stopped
storing large results whose writes it then never measured."""

REVERT_PROBABILITY = 0.05
"""Chance that a signature absent from the latest version comes back (a user reverting)."""

UNSEEN_SURVIVAL = 0.5
"""Survival assumed for a task with no history yet: as likely to change as not."""

HORIZON = 10
"""How many later iterations a stored result is expected to serve at most."""


@dataclass(frozen=True, slots=True)
class IOModel:
    """Seconds to read or write ``n`` bytes: a fixed overhead plus bytes over bandwidth."""

    read_overhead: float
    read_bandwidth: float
    write_overhead: float
    write_bandwidth: float

    def load_seconds(self, nbytes: int) -> float:
        return self.read_overhead + nbytes / self.read_bandwidth

    def write_seconds(self, nbytes: int) -> float:
        return self.write_overhead + nbytes / self.write_bandwidth


def fit_line(
    samples: Sequence[tuple[int, float]], prior_overhead: float, prior_bandwidth: float
) -> tuple[float, float]:
    """Overhead (median time of small transfers) and bandwidth (large ones, overhead removed)."""
    small = [t for n, t in samples if n < SMALL and t > 0]
    overhead = statistics.median(small) if small else prior_overhead
    big = [(n, t - overhead) for n, t in samples if n >= LARGE and t > overhead]
    moved, spent = sum(n for n, _ in big), sum(t for _, t in big)
    bandwidth = moved / spent if big and spent > 0 else prior_bandwidth
    return overhead, bandwidth


def fit_io(
    loads: Sequence[tuple[int, float]],
    writes: Sequence[tuple[int, float]],
    prior_overhead: float,
    prior_bandwidth: float,
) -> IOModel:
    """An IOModel from measured (bytes, seconds) loads and writes, priors where none exist."""
    ro, rb = fit_line(loads, prior_overhead, prior_bandwidth)
    wo, wb = fit_line(writes, prior_overhead, prior_bandwidth / 2)
    return IOModel(ro, rb, wo, wb)


def survival_rates(history: Sequence[Mapping[str, frozenset[str]]]) -> dict[str, float]:
    """Per task name, how often its signatures stayed the same from one version to the next.

    ``history`` holds, oldest first, each version's signatures per task name. Laplace smoothing
    keeps one observation from deciding: (survived + 1) / (pairs + 2).
    """
    survived: dict[str, int] = {}
    pairs: dict[str, int] = {}
    for before, after in itertools.pairwise(history):
        for name, sigs in after.items():
            if name in before:
                pairs[name] = pairs.get(name, 0) + 1
                survived[name] = survived.get(name, 0) + (sigs == before[name])
    return {name: (survived.get(name, 0) + 1) / (n + 2) for name, n in pairs.items()}


def reuse_probability(
    name: str,
    signature: str,
    latest: Mapping[str, frozenset[str]],
    rates: Mapping[str, float],
    read: float | None = None,
) -> float:
    """Chance that ``signature`` is asked for again in the next version.

    A signature in the latest version survives at its task's rate, or is read with chance
    ``read`` when the caller knows it (:func:`read_probability`); one that the latest version
    no longer uses comes back only if the user reverts.
    """
    if name in latest and signature not in latest[name]:
        return REVERT_PROBABILITY
    return rates.get(name, UNSEEN_SURVIVAL) if read is None else read


def survives_with(
    history: Sequence[Mapping[str, frozenset[str]]], parent: str, child: str
) -> float:
    """Chance that task ``child``'s signature survives an iteration in which ``parent``'s does.

    Counted over consecutive versions of ``history`` (oldest first) where both tasks ran and the
    parent's signatures stayed the same, with the same Laplace smoothing as
    :func:`survival_rates`: (both survived + 1) / (parent survived + 2).
    """
    both = kept = 0
    for before, after in itertools.pairwise(history):
        if parent in before and parent in after and child in before and child in after:
            if after[parent] == before[parent]:
                kept += 1
                both += after[child] == before[child]
    return (both + 1) / (kept + 2)


def read_probability(
    name: str,
    children: Iterable[str],
    rates: Mapping[str, float],
    stored: Collection[str],
    history: Sequence[Mapping[str, frozenset[str]]],
) -> float:
    """Chance that the result of task ``name`` is read in the next iteration.

    It must survive (its task's rate) and a child must need it: a child that survives too and
    whose task keeps its results stored (``stored`` holds such task names) is loaded instead, so
    it reads nothing upstream. Children are taken as independent given the parent survives. A
    node whose children are all stored and always change with it is never read: storing it
    only costs a write (HELIX stores it anyway; so does a rule that ignores the graph).
    """
    p = rates.get(name, UNSEEN_SURVIVAL)
    skip = 1.0
    children = set(children)
    for child in children:
        if child not in stored:
            return p  # that child recomputes whenever it is needed, and reads this result
        skip *= survives_with(history, name, child)
    return p * (1.0 - skip) if children else p


def compute_seconds(startstops: Iterable[Mapping[str, Any]]) -> float:
    """Seconds a task spent computing, from a Dask task state's ``startstops``."""
    return sum(s["stop"] - s["start"] for s in startstops if s.get("action") == "compute")


def expected_reuses(p: float, horizon: int = HORIZON) -> float:
    """Expected number of later iterations that ask for a result whose signature survives each
    iteration with probability ``p``: p + p^2 + ... + p^horizon."""
    p = min(max(p, 0.0), 1.0)
    return float(horizon) if p == 1.0 else p * (1 - p**horizon) / (1 - p)


def expected_saving(p: float, recompute_seconds: float, load_seconds: float) -> float:
    """The cost model in one line: seconds saved by keeping a result that is read with chance
    ``p`` per iteration, (recreate - load) per reuse times the expected number of reuses."""
    return expected_reuses(p) * max(0.0, recompute_seconds - load_seconds)


@dataclass(frozen=True, slots=True)
class CostModel:
    """The cost model of one plan, built once from what the catalog measured: I/O costs, reuse
    rates, the signature history and the task names whose results the store holds. Injectable:
    tests may build one by hand instead of sleeping in tasks."""

    io: IOModel
    rates: Mapping[str, float]
    history: Sequence[Mapping[str, frozenset[str]]]
    stored: frozenset[str]

    @property
    def latest(self) -> Mapping[str, frozenset[str]]:
        return self.history[-1] if self.history else {}

    def read(
        self, name: str, children: Iterable[str], stored: Collection[str] | None = None
    ) -> float:
        """Chance that a node computed now is read next time (:func:`read_probability`).
        ``stored``: the task names whose results are kept, when the caller knows better than
        the store's contents."""
        return read_probability(
            name, children, self.rates, self.stored if stored is None else stored, self.history
        )

    def reuse(
        self,
        name: str,
        signature: str,
        current: Mapping[str, frozenset[str]],
        children: Iterable[str] = (),
    ) -> float:
        """Chance that a stored artifact is read next time, judged against ``current`` (the
        signatures of the running version, or else of the last one)."""
        read = self.read(name, children)
        return reuse_probability(name, signature, current or self.latest, self.rates, read)

    def saving(
        self, p: float, recompute_seconds: float, nbytes: int, load_seconds: float | None = None
    ) -> float:
        """Expected seconds saved by keeping a result read with chance ``p`` per iteration."""
        load = self.io.load_seconds(nbytes) if load_seconds is None else load_seconds
        return expected_saving(p, recompute_seconds, load)


OBJECT_STORE_PRIOR = (0.05, 100e6)
"""Load overhead (seconds) and bandwidth (bytes per second) assumed for a store on object
storage before any load from it was measured: a few ~10 ms round trips (manifest, metadata,
chunks) and a network link, not a local disk."""


def io_prior(remote: bool, overhead: float, bandwidth: float) -> tuple[float, float]:
    """The priors of the I/O model for a store never measured: the configured ones (local disk)
    unless the store is on object storage. Measured loads and writes then replace them; each
    store keeps them in its own catalog, so an object store's round trips and a local disk's
    bandwidth are learned apart: a load costs overhead (latency) + bytes / bandwidth."""
    if not remote:
        return overhead, bandwidth
    return max(overhead, OBJECT_STORE_PRIOR[0]), min(bandwidth, OBJECT_STORE_PRIOR[1])
