"""Reference costs no strategy can beat: LB∞ (unbounded storage) and LB-budget (a budget).

Per-node costs
    A node's compute cost is the **fastest** compute of its signature measured in the
    ``helix:none`` runs: runs that write nothing, so no artifact write competed with it for the
    two cores or the disk (the other helix runs write hundreds of MB while computing; their
    compute times are not used). Its load cost is the fastest load of that signature measured
    in any helix run; a node never loaded costs its size over the fastest read bandwidth any
    load showed, with no per-load overhead. Minima, not medians: a bound must not exceed what
    a run can take, and a strategy cannot run a node faster than the fastest it was seen to run.
    A node whose code computes only once per run is traced there (``helix.trace: new-code``)
    in every helix run, ``helix:none`` included, so its cost includes tracing: the bounds hold
    for helix's strategies; plain Dask never traces and is not bound on such nodes.

LB∞ (iteration ``i``)
    Every node of an earlier iteration is loadable for its load cost (more than a real
    strategy could have: pruned nodes were never computed, writes cost nothing). Two bounds on
    one iteration, both below any strategy's wall time:

    - ``serial``: the cheapest valid plan's summed task seconds (``helix_dask.planner.plan``,
      exact min cut); a strategy's summed task seconds (Σ compute + load) cannot be lower;
    - ``wall``: ``max(serial / workers, critical path)``. Two single-threaded workers finish
      the summed work no faster than ``serial / 2``, and no faster than the longest chain of
      dependent nodes; the chain is the cheapest over per-node choices (each node on it
      computed after its parents or loaded), a relaxation of choosing one plan, so also a
      bound. Overheads (connecting, building the graph, scheduling, transfers) count zero.

LB-budget
    The same costs with storage limited to a budget (the ``@tight`` runs' budget), solved
    exactly over the whole known iteration sequence as a 0/1 integer program (scipy's HiGHS
    ``milp``): per iteration and node, compute / load / held-in-store variables; a node is
    held after iteration ``i`` only if it was held before or computed in ``i``; the bytes held
    never exceed the budget; writes and evictions cost nothing. It is the best any policy could
    do even knowing every future edit, in summed task seconds: an online policy's schedule is
    one feasible point of this program, so its task seconds are at least the optimum.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from helix_dask.planner import PlanNode, plan

WORKERS = 2
"""Single-threaded workers per benchmark cluster (see ``_driver._cluster``)."""
COST_SOURCE = "helix:none"
"""The strategy whose runs give compute costs: it stores nothing, so it writes nothing."""


def node_costs(result: Mapping[str, Any]) -> dict[str, Any]:
    """Per signature: the fastest compute in ``helix:none`` runs, the fastest load anywhere,
    the size; per iteration index: the node rows (signature -> row)."""
    computes: dict[str, list[float]] = defaultdict(list)
    loads: dict[str, list[float]] = defaultdict(list)
    nbytes: dict[str, int] = {}
    graphs: dict[int, dict[str, dict[str, Any]]] = {}
    bandwidths = []
    for sid, repeats in result["runs"].items():
        if not sid.startswith("helix:"):
            continue
        for run in repeats:
            for it in run["iterations"]:
                for n in it.get("nodes", ()):
                    graphs.setdefault(it["index"], {})[n["signature"]] = n
                    if n["nbytes"]:
                        nbytes[n["signature"]] = n["nbytes"]
                    if (
                        sid == COST_SOURCE
                        and n["decision"] == "compute"
                        and n["compute_seconds"] is not None
                    ):
                        computes[n["signature"]].append(n["compute_seconds"])
                    if n["decision"] == "load" and n["load_seconds"]:
                        loads[n["signature"]].append(n["load_seconds"])
                        if n["nbytes"]:
                            bandwidths.append(n["nbytes"] / n["load_seconds"])
    return {
        "compute": {s: min(v) for s, v in computes.items()},
        "load": {s: min(v) for s, v in loads.items()},
        "nbytes": nbytes,
        "bandwidth": max(bandwidths) if bandwidths else None,
        "graphs": graphs,
    }


def _load_cost(costs: Mapping[str, Any], sig: str) -> float:
    if sig in costs["load"]:
        return costs["load"][sig]
    if costs["bandwidth"] is None:
        return 0.0  # nothing was ever loaded: a load is free, still a bound
    return costs["nbytes"].get(sig, 0) / costs["bandwidth"]


def _critical_path(
    nodes: Mapping[str, dict[str, Any]], compute: Mapping[str, float], load: Mapping[str, float]
) -> float:
    """Longest chain to an output with each node at its cheaper of load or compute-after-its-
    parents: no plan's chain of dependent work is shorter."""
    memo: dict[str, float] = {}

    def finish(sig: str) -> float:
        if sig not in memo:
            parents = [p for p in nodes[sig]["parents"] if p in nodes]
            run = compute[sig] + max((finish(p) for p in parents), default=0.0)
            memo[sig] = min(run, load[sig]) if sig in load else run
        return memo[sig]

    children = {p for n in nodes.values() for p in n["parents"]}
    return max((finish(s) for s in nodes if s not in children), default=0.0)


def lower_bound(result: Mapping[str, Any]) -> dict[str, Any]:
    """Per-iteration LB∞ (``serial`` and ``wall`` seconds) of one workflow's results."""
    if COST_SOURCE not in result["runs"]:
        return {"error": f"no {COST_SOURCE} run measured compute costs"}
    costs = node_costs(result)
    graphs = costs["graphs"]
    seen: set[str] = set()
    per_iteration = []
    for i in sorted(graphs):
        nodes = graphs[i]
        children = {p for n in nodes.values() for p in n["parents"]}
        missing = [n["name"] for s, n in nodes.items() if s not in costs["compute"]]
        if missing:
            return {"error": f"{COST_SOURCE} never measured {missing} computing"}
        load = {s: _load_cost(costs, s) for s in nodes if s in seen}
        plan_nodes = [
            PlanNode(
                sig,
                tuple(p for p in n["parents"] if p in nodes),
                costs["compute"][sig],
                load.get(sig),
                sig not in children,
            )
            for sig, n in nodes.items()
        ]
        best = plan(plan_nodes)
        path = _critical_path(nodes, costs["compute"], load)
        per_iteration.append(
            {
                "index": i,
                "serial": best.cost,
                "critical_path": path,
                "cost": max(best.cost / WORKERS, path),
                "decisions": {nodes[s]["name"]: str(d) for s, d in best.decisions.items()},
            }
        )
        seen.update(nodes)
    return {
        "bandwidth": costs["bandwidth"],
        "iterations": per_iteration,
        "serial_total": sum(i["serial"] for i in per_iteration),
        "total": sum(i["cost"] for i in per_iteration),
    }


def budget_bound(result: Mapping[str, Any], budgets: Iterable[int]) -> dict[str, Any]:
    """LB-budget: the optimum summed task seconds over the known iteration sequence with at
    most ``budget`` bytes stored, per budget (one per repeat of the ``@tight`` runs)."""
    if COST_SOURCE not in result["runs"]:
        return {"error": f"no {COST_SOURCE} run measured compute costs"}
    costs = node_costs(result)
    out = []
    for budget in sorted(set(budgets)):
        solved = _solve_budget(costs, budget)
        out.append({"budget": budget, **solved})
    ok = [r["total"] for r in out if "total" in r]
    return {"budgets": out, "total": statistics.median(ok) if ok else None}


def _solve_budget(costs: Mapping[str, Any], budget: int) -> dict[str, Any]:
    from scipy.optimize import Bounds, LinearConstraint, milp

    graphs = costs["graphs"]
    iters = sorted(graphs)
    if any(s not in costs["compute"] for i in iters for s in graphs[i]):
        return {"error": "a node was never measured computing"}
    sigs = sorted({s for i in iters for s in graphs[i]})
    index: dict[tuple[str, int, str], int] = {}

    def var(kind: str, i: int, s: str) -> int:
        return index.setdefault((kind, i, s), len(index))

    # c: computed in i, l: loaded in i, h: held in the store when iteration i starts.
    for i in iters:
        for s in graphs[i]:
            var("c", i, s)
            var("l", i, s)
    for k in range(len(iters) + 1):
        for s in sigs:
            var("h", k, s)
    n = len(index)
    cost = np.zeros(n)
    for (kind, _, s), j in index.items():
        if kind == "c":
            cost[j] = costs["compute"][s]
        elif kind == "l":
            cost[j] = _load_cost(costs, s)
    rows: list[dict[int, float]] = []
    lower: list[float] = []
    upper: list[float] = []

    def constrain(coeffs: dict[int, float], lo: float, hi: float) -> None:
        rows.append(coeffs)
        lower.append(lo)
        upper.append(hi)

    for k, i in enumerate(iters):
        nodes = graphs[i]
        children = {p for nd in nodes.values() for p in nd["parents"]}
        for s, nd in nodes.items():
            c, ld = index[("c", i, s)], index[("l", i, s)]
            constrain({c: 1, ld: 1}, 1 if s not in children else 0, 1)  # outputs are available
            constrain({ld: 1, index[("h", k, s)]: -1}, -np.inf, 0)  # load only what is held
            for p in nd["parents"]:
                if p in nodes:  # a computed node has each parent computed or loaded
                    constrain({c: 1, index[("c", i, p)]: -1, index[("l", i, p)]: -1}, -np.inf, 0)
        for s in sigs:  # held after i: held before, or computed in i
            coeffs = {index[("h", k + 1, s)]: 1, index[("h", k, s)]: -1}
            if s in nodes:
                coeffs[index[("c", i, s)]] = -1
            constrain(coeffs, -np.inf, 0)
    for k in range(len(iters) + 1):
        constrain(
            {index[("h", k, s)]: float(costs["nbytes"].get(s, 0)) for s in sigs}, 0, float(budget)
        )
        if k == 0:
            for s in sigs:
                constrain({index[("h", 0, s)]: 1}, 0, 0)  # the store starts empty
    a = np.zeros((len(rows), n))
    for r, coeffs in enumerate(rows):
        for j, v in coeffs.items():
            a[r, j] = v
    res = milp(
        cost,
        constraints=LinearConstraint(a, lower, upper),
        integrality=np.ones(n),
        bounds=Bounds(0, 1),
        options={"time_limit": 60},
    )
    if res.x is None:
        return {"error": f"milp: {res.message}"}
    x = np.round(res.x).astype(int)
    per_iteration = []
    for i in iters:
        c = sum(costs["compute"][s] for s in graphs[i] if x[index[("c", i, s)]])
        ld = sum(_load_cost(costs, s) for s in graphs[i] if x[index[("l", i, s)]])
        per_iteration.append({"index": i, "serial": c + ld})
    return {
        "total": float(res.fun),
        "optimal": bool(res.status == 0),
        "iterations": per_iteration,
    }
