"""Materialization policies as pure functions: HELIX's 2x rule, the budget and the overrides."""

from __future__ import annotations

import pytest

from helix_dask import HelixConfigError, Materialization
from helix_dask.costs import (
    REVERT_PROBABILITY,
    UNSEEN_SURVIVAL,
    fit_io,
    read_probability,
    reuse_probability,
    survival_rates,
    survives_with,
)
from helix_dask.materializer import (
    Candidate,
    Stored,
    choose_evictions,
    get_policy,
    helix2x,
    store_all,
    store_none,
    value,
)


def cand(**kw) -> Candidate:
    base = dict(
        name="f",
        signature="s" * 32,
        compute_seconds=1.0,
        recompute_seconds=1.0,
        nbytes=1000,
        load_seconds=0.1,
        is_output=False,
        forced=None,
    )
    return Candidate(**{**base, **kw})


def test_helix2x_stores_when_recompute_exceeds_twice_load():
    v = helix2x(cand(recompute_seconds=0.25, load_seconds=0.1), 10_000)
    assert v.store and "0.250s > 2 x load 0.100s" in v.reason


def test_helix2x_skips_when_loading_is_not_worth_it():
    v = helix2x(cand(recompute_seconds=0.15, load_seconds=0.1), 10_000)
    assert v.outcome is Materialization.SKIPPED


def test_budget_is_never_exceeded_even_when_forced_or_output():
    for kw in ({"forced": True}, {"is_output": True}, {}):
        for policy in (helix2x, store_all):
            assert policy(cand(nbytes=2000, **kw), 1999).outcome is Materialization.NO_SPACE


def test_opt_out_wins_over_everything():
    v = store_all(cand(forced=False, is_output=True), 10**9)
    assert v.outcome is Materialization.SKIPPED and "materialize=False" in v.reason


def test_outputs_are_stored_when_they_fit_even_if_cheap():
    v = helix2x(cand(recompute_seconds=0.0, is_output=True), 10_000)
    assert v.store


def test_none_policy_stores_nothing():
    assert not store_none(cand(forced=True, is_output=True), 10**9).store


def test_unknown_policy_name_lists_the_known_ones():
    with pytest.raises(HelixConfigError, match=r"policy 'lru' is unknown; choose one of \['all'"):
        get_policy("lru")


# -- the value policy, eviction and the cost model ----------------------------------------------


def test_value_policy_stores_when_expected_saving_beats_the_write():
    v = value(cand(recompute_seconds=10.0, load_seconds=1.0, reuse_probability=0.5), 10**6)
    assert v.store and "p(reuse)=0.50" in v.reason and "saves 9.000s per reuse" in v.reason


def test_value_policy_skips_when_reuse_is_unlikely_even_if_recompute_is_expensive():
    c = cand(recompute_seconds=10.0, load_seconds=1.0, reuse_probability=0.01, write_seconds=0.5)
    v = value(c, 10**6)
    assert v.outcome is Materialization.SKIPPED and "expected saving 0.091s" in v.reason


def test_value_policy_stores_what_helix2x_would_skip_when_reuse_is_certain():
    c = cand(recompute_seconds=0.15, load_seconds=0.1, reuse_probability=1.0, write_seconds=0.01)
    assert value(c, 10**6).store
    assert not helix2x(c, 10**6).store


def test_value_policy_reports_no_space_so_the_plugin_can_evict():
    v = value(cand(recompute_seconds=9.0, nbytes=2000), 1000)
    assert v.outcome is Materialization.NO_SPACE


def S(sig: str, nbytes: int, density: float) -> Stored:
    return Stored(sig, "t", nbytes, density)


def test_eviction_frees_enough_taking_least_value_per_byte_first():
    stored = [S("a", 100, 3.0), S("b", 100, 1.0), S("c", 100, 2.0)]
    assert [s.signature for s in choose_evictions(stored, 150)] == ["b", "c"]


def test_eviction_never_touches_what_the_running_plan_loads():
    stored = [S("a", 100, 3.0), S("b", 100, 1.0)]
    assert [s.signature for s in choose_evictions(stored, 100, protected={"b"})] == ["a"]
    assert choose_evictions(stored, 150, protected={"b"}) is None


def test_eviction_only_for_a_more_valuable_candidate():
    stored = [S("a", 100, 3.0), S("b", 100, 1.0)]
    assert choose_evictions(stored, 150, below_density=2.0) is None
    assert [s.signature for s in choose_evictions(stored, 100, below_density=2.0)] == ["b"]


def test_no_eviction_when_nothing_is_needed():
    assert choose_evictions([S("a", 1, 0.0)], 0) == []


def test_survival_rate_counts_unchanged_signatures_between_versions():
    history = [
        {"load": frozenset({"l1"}), "train": frozenset({"t1"})},
        {"load": frozenset({"l1"}), "train": frozenset({"t2"})},
        {"load": frozenset({"l1"}), "train": frozenset({"t3"})},
    ]
    rates = survival_rates(history)
    assert rates["load"] == pytest.approx(3 / 4)
    assert rates["train"] == pytest.approx(1 / 4)


def test_reuse_probability_of_a_replaced_signature_is_the_revert_chance():
    latest = {"train": frozenset({"t3"})}
    assert reuse_probability("train", "t1", latest, {"train": 0.9}) == REVERT_PROBABILITY
    assert reuse_probability("train", "t3", latest, {"train": 0.9}) == 0.9
    assert reuse_probability("new", "n1", latest, {}) == UNSEEN_SURVIVAL
    # A known chance of being read replaces the survival rate, never the revert chance.
    assert reuse_probability("train", "t3", latest, {"train": 0.9}, read=0.2) == 0.2
    assert reuse_probability("train", "t1", latest, {"train": 0.9}, read=0.2) == REVERT_PROBABILITY


# featurize -> scale: scale's signature changed exactly when featurize's did (DPR edits of
# featurize); train changed on its own (L/I edits) as well.
PIPELINE = [
    {"featurize": frozenset({f}), "scale": frozenset({s}), "train": frozenset({t})}
    for f, s, t in [
        ("f1", "s1", "t1"),
        ("f1", "s1", "t2"),
        ("f2", "s2", "t3"),
        ("f2", "s2", "t4"),
        ("f2", "s2", "t5"),
        ("f3", "s3", "t6"),
    ]
]


def test_a_child_that_always_changes_with_its_parent_survives_with_it():
    assert survives_with(PIPELINE, "featurize", "scale") == pytest.approx((3 + 1) / (3 + 2))
    assert survives_with(PIPELINE, "scale", "train") == pytest.approx((0 + 1) / (3 + 2))
    assert survives_with([], "featurize", "scale") == 0.5  # nothing seen: as likely as not


def test_a_result_whose_only_child_is_stored_and_changes_with_it_is_rarely_read():
    rates = survival_rates(PIPELINE)
    # scale is stored: when featurize survives, scale almost always does and is loaded instead.
    p = read_probability("featurize", ["scale"], rates, {"scale"}, PIPELINE)
    assert p == pytest.approx(rates["featurize"] * (1 - 4 / 5))
    # Not stored, scale recomputes whenever it is needed, and reads featurize each time.
    assert read_probability("featurize", ["scale"], rates, set(), PIPELINE) == rates["featurize"]
    # scale itself is read whenever train changes, which it does on its own.
    p_scale = read_probability("scale", ["train"], rates, {"train"}, PIPELINE)
    assert p_scale == pytest.approx(rates["scale"] * (1 - 1 / 5))
    assert p_scale > 3 * p
    # A node no task reads from is read only as a requested result: its own survival.
    assert read_probability("train", [], rates, {"train"}, PIPELINE) == rates["train"]


def test_value_policy_skips_what_a_stored_child_makes_redundant():
    rates = survival_rates(PIPELINE)
    common = dict(recompute_seconds=2.0, load_seconds=0.3, write_seconds=0.6, nbytes=10**8)
    redundant = read_probability("featurize", ["scale"], rates, {"scale"}, PIPELINE)
    alone = read_probability("featurize", ["scale"], rates, set(), PIPELINE)
    assert not value(cand(reuse_probability=redundant, **common), 10**9).store
    assert value(cand(reuse_probability=alone, **common), 10**9).store


def test_mid_sized_transfers_do_not_set_the_bandwidth():
    mb = 1 << 20
    # A 10 MB write slowed by fixed costs must not make a 100 MB write look like 1.7 s.
    io = fit_io([], [(10 * mb, 0.171), (100, 0.004)], prior_overhead=0.005, prior_bandwidth=500e6)
    assert io.write_seconds(100 * mb) == pytest.approx(0.004 + 100 * mb / 250e6)


def test_io_model_separates_fixed_overhead_from_bandwidth():
    mb = 1 << 20
    loads = [(100, 0.002), (200, 0.002), (100 * mb, 0.102), (50 * mb, 0.052)]
    io = fit_io(loads, [], prior_overhead=0.01, prior_bandwidth=1e6)
    assert io.read_overhead == pytest.approx(0.002)
    assert io.load_seconds(200 * mb) == pytest.approx(0.202, rel=1e-3)
    assert io.write_overhead == pytest.approx(0.01)  # no writes measured: the prior


def test_a_result_that_rarely_changes_is_expected_to_serve_many_iterations():
    from helix_dask.costs import HORIZON, expected_reuses

    assert expected_reuses(1.0) == HORIZON
    assert expected_reuses(0.5) == pytest.approx(1.0, abs=1e-3)
    assert expected_reuses(0.9) > 5 * expected_reuses(0.3)
    assert expected_reuses(0.0) == 0.0
