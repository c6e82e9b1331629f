"""Materialization policies as pure functions: HELIX's 2x rule, the budget and the overrides."""

from __future__ import annotations

import pytest

from helix_dask import HelixConfigError, Materialization
from helix_dask.materializer import Candidate, get_policy, helix2x, store_all, store_none


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
