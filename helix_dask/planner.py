"""OPT-EXEC-PLAN: choose COMPUTE, LOAD or PRUNE for every node by an exact minimum cut.

The cost model, said once: running a node costs its compute seconds ``c``; reading its stored
artifact costs its load seconds ``l`` (only for nodes with a committed artifact); a pruned node
costs nothing. A plan is valid when every requested output is computed or loaded and every
computed node has each parent computed or loaded. The cheapest valid plan is a minimum-weight
closure (Project Selection): per node, ``avail`` (computed or loaded, weight ``l``) and
``run`` (computed, weight ``c - l``), with ``run ⇒ avail``, ``run ⇒ avail(parent)``,
``avail ⇒ run`` for nodes that cannot be loaded, and ``avail`` forced for outputs. A requested
output that is stored is always loaded (``run`` excluded), so an identical re-run runs no user
code however cheap it is. Costs are
integer microseconds (scaled to fit int32 when the total is huge), so the max-flow solvers
return exact cuts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._errors import HelixConfigError
from ._events import Decision

_INT32_MAX = 2**31 - 1


@dataclass(frozen=True, slots=True)
class PlanNode:
    """A node as the planner sees it: parents, costs in seconds, and whether it is loadable."""

    key: str
    parents: tuple[str, ...]
    compute_cost: float
    load_cost: float | None
    """Seconds to load the stored artifact, or None when there is none."""
    is_output: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    """The decisions of one plan and the cost they add up to, in seconds."""

    decisions: Mapping[str, Decision]
    cost: float


def plan(nodes: Sequence[PlanNode], *, solver: str = "scipy") -> Plan:
    """Return the cheapest valid plan for ``nodes`` (see the module docstring).

    Parameters
    ----------
    nodes
        Every node of the operator DAG; parents must be keys of other nodes in ``nodes``.
    solver
        ``"scipy"`` (Dinic's max-flow, fast) or ``"networkx"`` (reference implementation).

    Examples
    --------
    >>> p = plan([PlanNode("a", (), 10.0, 1.0), PlanNode("b", ("a",), 5.0, None, True)])
    >>> p.decisions["a"], p.decisions["b"]
    (<Decision.LOAD: 'load'>, <Decision.COMPUTE: 'compute'>)
    """
    if not nodes:
        return Plan({}, 0.0)
    index = {n.key: i for i, n in enumerate(nodes)}
    for n in nodes:
        for p in n.parents:
            if p not in index:
                raise HelixConfigError(
                    f"node {n.key!r} names parent {p!r}, which is not in the plan's node list; "
                    "pass every ancestor of the requested outputs"
                )
    costs_us = [
        (_micro(n.compute_cost), None if n.load_cost is None else _micro(n.load_cost))
        for n in nodes
    ]
    total = sum(c + (load or 0) for c, load in costs_us) + 1
    scale = max(1, math.ceil(total / (_INT32_MAX // 4)))
    costs = [(c // scale, None if load is None else load // scale) for c, load in costs_us]
    inf = sum(c + (load or 0) for c, load in costs) + 1

    # Vertices: source 0, sink 1, avail(i) = 2 + 2i, run(i) = 3 + 2i.
    src, snk = 0, 1
    edges: list[tuple[int, int, int]] = []
    for i, n in enumerate(nodes):
        avail, run = 2 + 2 * i, 3 + 2 * i
        c, load = costs[i]
        load_w = 0 if load is None else load
        if load_w > 0:
            edges.append((avail, snk, load_w))
        run_w = c - load_w
        if run_w > 0:
            edges.append((run, snk, run_w))
        elif run_w < 0:
            edges.append((src, run, -run_w))
        edges.append((run, avail, inf))
        if n.is_output and load is not None:
            edges.append((run, snk, inf))
        if load is None:
            edges.append((avail, run, inf))
        for p in n.parents:
            edges.append((run, 2 + 2 * index[p], inf))
        if n.is_output:
            edges.append((src, avail, inf))
    nverts = 2 + 2 * len(nodes)
    if solver == "scipy":
        selected = _source_side_scipy(nverts, edges, src, snk)
    elif solver == "networkx":
        selected = _source_side_networkx(nverts, edges, src, snk)
    else:
        raise HelixConfigError(f"solver {solver!r} is unknown; use 'scipy' or 'networkx'")

    decisions: dict[str, Decision] = {}
    cost = 0.0
    for i, n in enumerate(nodes):
        if 3 + 2 * i in selected:
            decisions[n.key] = Decision.COMPUTE
            cost += n.compute_cost
        elif 2 + 2 * i in selected:
            decisions[n.key] = Decision.LOAD
            cost += n.load_cost or 0.0
        else:
            decisions[n.key] = Decision.PRUNE
    return Plan(decisions, cost)


def _micro(seconds: float) -> int:
    if not math.isfinite(seconds) or seconds < 0:
        raise HelixConfigError(f"cost {seconds!r} is not a finite, non-negative number of seconds")
    return round(seconds * 1e6)


def _source_side_scipy(
    nverts: int, edges: list[tuple[int, int, int]], src: int, snk: int
) -> set[int]:
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow

    rows, cols, caps = (np.array(x, dtype=np.int64) for x in zip(*edges, strict=True))
    # Duplicate (row, col) pairs are summed by the sparse constructor, as capacities should be.
    cap = csr_array((caps.astype(np.int32), (rows, cols)), shape=(nverts, nverts))
    cap.sum_duplicates()
    flow = maximum_flow(cap, src, snk, method="dinic").flow
    residual = (cap - flow).tocsr()
    residual.data = (residual.data > 0).astype(np.int8)
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, src, directed=True, return_predecessors=False)
    return set(reached.tolist())


def _source_side_networkx(
    nverts: int, edges: list[tuple[int, int, int]], src: int, snk: int
) -> set[int]:
    import networkx as nx
    from networkx.algorithms.flow import preflow_push

    g = nx.DiGraph()
    g.add_nodes_from(range(nverts))
    for u, v, c in edges:
        if g.has_edge(u, v):
            g[u][v]["capacity"] += c
        else:
            g.add_edge(u, v, capacity=c)
    _, (reachable, _) = nx.minimum_cut(g, src, snk, flow_func=preflow_push)
    return set(reachable)
