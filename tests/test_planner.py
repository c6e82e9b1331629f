"""OPT-EXEC-PLAN as a pure function: exact, valid, and the same from both solvers."""

from __future__ import annotations

import itertools
import random

import pytest

from helix_dask import Decision, HelixConfigError
from helix_dask.planner import PlanNode, plan

C, L, P = Decision.COMPUTE, Decision.LOAD, Decision.PRUNE


def _valid(nodes: list[PlanNode], decisions) -> bool:
    by_key = {n.key: n for n in nodes}
    for n in nodes:
        d = decisions[n.key]
        if n.is_output and d is P:
            return False
        if d is L and n.load_cost is None:
            return False
        if n.is_output and n.load_cost is not None and d is not L:
            return False
        if d is C and any(decisions[p] is P for p in n.parents):
            return False
    return set(decisions) == set(by_key)


def _cost(nodes: list[PlanNode], decisions) -> float:
    return sum(
        n.compute_cost if decisions[n.key] is C else (n.load_cost or 0.0) * (decisions[n.key] is L)
        for n in nodes
    )


def _brute_force(nodes: list[PlanNode]) -> float:
    best = float("inf")
    for choice in itertools.product((C, L, P), repeat=len(nodes)):
        d = {n.key: c for n, c in zip(nodes, choice, strict=True)}
        if _valid(nodes, d):
            best = min(best, _cost(nodes, d))
    return best


def test_expensive_stored_parent_is_loaded_and_its_ancestors_pruned():
    nodes = [
        PlanNode("raw", (), 5.0, None),
        PlanNode("features", ("raw",), 20.0, 0.5),
        PlanNode("model", ("features",), 3.0, None, is_output=True),
    ]
    assert plan(nodes).decisions == {"raw": P, "features": L, "model": C}


def test_cheap_node_is_recomputed_rather_than_loaded():
    nodes = [
        PlanNode("a", (), 0.1, None),
        PlanNode("b", ("a",), 0.01, 2.0),
        PlanNode("c", ("b",), 0.01, None, is_output=True),
    ]
    assert plan(nodes).decisions == {"a": C, "b": C, "c": C}


def test_stored_output_is_loaded_even_when_computing_it_is_cheaper():
    nodes = [PlanNode("a", (), 0.001, None), PlanNode("b", ("a",), 0.001, 2.0, is_output=True)]
    assert plan(nodes).decisions == {"a": P, "b": L}


def test_stored_output_is_loaded_and_nothing_else_runs():
    nodes = [PlanNode("a", (), 1.0, 0.2), PlanNode("b", ("a",), 1.0, 0.1, is_output=True)]
    assert plan(nodes).decisions == {"a": P, "b": L}


def test_node_that_is_not_loadable_never_gets_load():
    nodes = [PlanNode("a", (), 100.0, None, is_output=True)]
    assert plan(nodes).decisions == {"a": C}


def test_shared_parent_is_loaded_once_for_two_outputs():
    nodes = [
        PlanNode("a", (), 10.0, 1.0),
        PlanNode("b", ("a",), 1.0, None, is_output=True),
        PlanNode("c", ("a",), 1.0, None, is_output=True),
    ]
    p = plan(nodes)
    assert p.decisions == {"a": L, "b": C, "c": C}
    assert p.cost == pytest.approx(3.0)


@pytest.mark.parametrize("seed", range(60))
def test_plan_is_valid_and_optimal_on_random_dags(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 6)
    nodes = []
    for i in range(n):
        parents = (
            tuple(sorted({f"n{rng.randrange(i)}" for _ in range(rng.randint(0, 2))})) if i else ()
        )
        load = round(rng.uniform(0, 5), 3) if rng.random() < 0.6 else None
        nodes.append(
            PlanNode(f"n{i}", parents, round(rng.uniform(0, 5), 3), load, rng.random() < 0.4)
        )
    if not any(x.is_output for x in nodes):
        nodes[-1] = PlanNode(
            nodes[-1].key, nodes[-1].parents, nodes[-1].compute_cost, nodes[-1].load_cost, True
        )
    for solver in ("scipy", "networkx"):
        p = plan(nodes, solver=solver)
        assert _valid(nodes, p.decisions)
        assert _cost(nodes, p.decisions) == pytest.approx(_brute_force(nodes), abs=1e-5)


def test_unknown_parent_is_a_clear_error():
    with pytest.raises(HelixConfigError, match=r"parent 'ghost'.*not in the plan"):
        plan([PlanNode("a", ("ghost",), 1.0, None, True)])


def test_negative_cost_is_a_clear_error():
    with pytest.raises(
        HelixConfigError, match=r"compute cost -1\.0 of node .a. is not a finite, non-negative"
    ):
        plan([PlanNode("a", (), -1.0, None, True)])


def test_unknown_solver_is_a_clear_error():
    with pytest.raises(HelixConfigError, match="solver 'magic' is unknown"):
        plan([PlanNode("a", (), 1.0, None, True)], solver="magic")


def test_huge_costs_still_give_an_exact_plan():
    nodes = [
        PlanNode("a", (), 1e7, 1e3),
        PlanNode("b", ("a",), 5e6, None, is_output=True),
    ]
    assert plan(nodes).decisions == {"a": L, "b": C}
