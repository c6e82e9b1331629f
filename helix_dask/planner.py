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

import contextlib
import gc
import itertools
import math
import operator
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._errors import HelixConfigError
from ._events import Decision

_INT32_MAX = 2**31 - 1
_FIELDS = operator.attrgetter("key", "parents", "compute_cost", "load_cost", "is_output")


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
    with _no_cyclic_gc():
        return _plan(nodes, solver)


@contextlib.contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """Pause Python's cyclic garbage collector: planning allocates a few containers per node,
    none of them cyclic, and at 100k nodes the full collections they would trigger (each walks
    every object of the process, the scheduler's whole task graph included) cost more than the
    planning itself."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _plan(nodes: Sequence[PlanNode], solver: str) -> Plan:
    count = len(nodes)
    # One C-level pass over the nodes (this function must stay fast at 100k nodes).
    columns = zip(*map(_FIELDS, nodes), strict=True)
    keys, parents, computes, load_costs, outputs = columns
    index = dict(zip(keys, range(count), strict=True))
    n_parents = np.fromiter(map(len, parents), dtype=np.int64, count=count)
    child_of = np.repeat(np.arange(count, dtype=np.int64), n_parents)
    try:
        parent_of = np.fromiter(
            map(index.__getitem__, itertools.chain.from_iterable(parents)),
            dtype=np.int64,
            count=int(n_parents.sum()),
        )
    except KeyError:
        n, p = next((n, p) for n in nodes for p in n.parents if p not in index)
        raise HelixConfigError(
            f"node {n.key!r} names parent {p!r}, which is not in the plan's node list; "
            "pass every ancestor of the requested outputs"
        ) from None
    compute_s = np.array(computes, dtype=np.float64)
    loadable = np.fromiter((x is not None for x in load_costs), dtype=bool, count=count)
    load_s = np.where(loadable, np.array(load_costs, dtype=np.float64), 0.0)
    output = np.array(outputs, dtype=bool)
    for name, arr in (("compute", compute_s), ("load", load_s)):
        bad = ~np.isfinite(arr) | (arr < 0)
        if bad.any():
            raise HelixConfigError(
                f"{name} cost {float(arr[bad][0])!r} of node {nodes[int(np.argmax(bad))].key!r} "
                "is not a finite, non-negative number of seconds"
            )
    c_us = np.rint(compute_s * 1e6).astype(np.int64)
    l_us = np.rint(load_s * 1e6).astype(np.int64)
    scale = max(1, math.ceil((int(c_us.sum()) + int(l_us.sum()) + 1) / (_INT32_MAX // 4)))
    c, load = c_us // scale, l_us // scale
    inf = int(c.sum() + load.sum()) + 1

    # Vertices: source 0, sink 1, run(i) = 2 + i; avail(i) = run(i) for a node that cannot be
    # loaded (avail ⇔ run), else a vertex of its own after the run vertices.
    src, snk = 0, 1
    run = 2 + np.arange(count, dtype=np.int64)
    avail = run.copy()
    avail[loadable] = 2 + count + np.arange(int(loadable.sum()), dtype=np.int64)
    nverts = 2 + count + int(loadable.sum())
    run_w = c - load
    pieces = [
        (avail[load > 0], np.full(int((load > 0).sum()), snk), load[load > 0]),
        (run[run_w > 0], np.full(int((run_w > 0).sum()), snk), run_w[run_w > 0]),
        (np.full(int((run_w < 0).sum()), src), run[run_w < 0], -run_w[run_w < 0]),
        (run[loadable], avail[loadable], np.full(int(loadable.sum()), inf)),
        # A stored output is always loaded: computing it is excluded.
        (run[output & loadable], np.full(int((output & loadable).sum()), snk), inf),
        (np.full(int(output.sum()), src), avail[output], np.full(int(output.sum()), inf)),
        (run[child_of], avail[parent_of], np.full(len(child_of), inf)),
    ]
    tails = np.concatenate([p[0] for p in pieces]).astype(np.int64)
    heads = np.concatenate([p[1] for p in pieces]).astype(np.int64)
    caps = np.concatenate([np.broadcast_to(p[2], p[0].shape) for p in pieces]).astype(np.int64)
    if solver == "scipy":
        selected = _source_side_scipy(nverts, tails, heads, caps, src, snk)
    elif solver == "networkx":
        selected = _source_side_networkx(nverts, tails, heads, caps, src, snk)
    else:
        raise HelixConfigError(f"solver {solver!r} is unknown; use 'scipy' or 'networkx'")

    runs = selected[run]
    loads = selected[avail] & ~runs
    codes = np.where(runs, 0, np.where(loads, 1, 2)).tolist()
    choice = (Decision.COMPUTE, Decision.LOAD, Decision.PRUNE)
    decisions = dict(zip(keys, map(choice.__getitem__, codes), strict=True))
    cost = float(compute_s[runs].sum() + load_s[loads].sum())
    return Plan(decisions, cost)


def _source_side_scipy(
    nverts: int, tails: np.ndarray, heads: np.ndarray, caps: np.ndarray, src: int, snk: int
) -> np.ndarray:
    """Boolean mask of the vertices on the source side of a minimum cut (Dinic's max-flow)."""
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import breadth_first_order, maximum_flow

    # Duplicate (tail, head) pairs are summed by the sparse constructor, as capacities should be.
    cap = csr_array((caps.astype(np.int32), (tails, heads)), shape=(nverts, nverts))
    cap.sum_duplicates()
    flow = maximum_flow(cap, src, snk, method="dinic").flow
    residual = (cap - flow).tocsr()
    residual.data = (residual.data > 0).astype(np.int8)
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, src, directed=True, return_predecessors=False)
    mask = np.zeros(nverts, dtype=bool)
    mask[reached] = True
    return mask


def _source_side_networkx(
    nverts: int, tails: np.ndarray, heads: np.ndarray, caps: np.ndarray, src: int, snk: int
) -> np.ndarray:
    """The same mask from networkx's preflow-push (a reference for tests and benchmarks)."""
    import networkx as nx
    from networkx.algorithms.flow import preflow_push

    g = nx.DiGraph()
    g.add_nodes_from(range(nverts))
    for u, v, c in zip(tails.tolist(), heads.tolist(), caps.tolist(), strict=True):
        if g.has_edge(u, v):
            g[u][v]["capacity"] += c
        else:
            g.add_edge(u, v, capacity=c)
    _, (reachable, _) = nx.minimum_cut(g, src, snk, flow_func=preflow_push)
    mask = np.zeros(nverts, dtype=bool)
    mask[list(reachable)] = True
    return mask
