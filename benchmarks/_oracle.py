"""LB∞: the cost of each iteration's optimal plan when every earlier result is stored for free.

From the per-node costs measured by the helix runs: a node's compute cost is the median of its
measured compute times, its load cost the median of its measured load times or, if it was never
loaded, the load overhead plus its size over the median measured read bandwidth. Medians, not
minima: the fastest of many samples on a shared machine is luck, and a bound built from it
would drop with every extra run. In iteration
``i`` every node whose signature appeared in an earlier iteration is loadable; writes cost
nothing. ``helix_dask.planner.plan`` then gives the cheapest valid plan. The bound is in summed
task seconds: it leaves out scheduling, process and cluster overheads, so it bounds what any
reuse strategy can save, not the wall clock of a run with parallel branches.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from helix_dask.planner import PlanNode, plan

DEFAULT_BANDWIDTH = 500e6
LOAD_OVERHEAD = 0.005


def lower_bound(result: dict[str, Any]) -> dict[str, Any]:
    """Per-iteration LB∞ costs for one workflow's results (``_driver.run_workflow``)."""
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
                    if n["decision"] == "compute" and n["compute_seconds"] is not None:
                        computes[n["signature"]].append(n["compute_seconds"])
                    if n["decision"] == "load" and n["load_seconds"]:
                        loads[n["signature"]].append(n["load_seconds"])
                        if n["nbytes"]:
                            bandwidths.append(n["nbytes"] / n["load_seconds"])
    bandwidth = statistics.median(bandwidths) if bandwidths else DEFAULT_BANDWIDTH
    seen: set[str] = set()
    per_iteration = []
    for i in sorted(graphs):
        nodes = graphs[i]
        children = {p for n in nodes.values() for p in n["parents"]}
        plan_nodes = []
        for sig, n in nodes.items():
            if sig not in computes:
                return {"error": f"node {n['name']} ({sig}) was never measured computing"}
            compute = statistics.median(computes[sig])
            load = None
            if sig in seen:
                load = (
                    statistics.median(loads[sig])
                    if loads[sig]
                    else LOAD_OVERHEAD + nbytes.get(sig, 0) / bandwidth
                )
            parents = tuple(p for p in n["parents"] if p in nodes)
            plan_nodes.append(PlanNode(sig, parents, compute, load, sig not in children))
        best = plan(plan_nodes)
        per_iteration.append(
            {
                "index": i,
                "cost": best.cost,
                "decisions": {nodes[s]["name"]: str(d) for s, d in best.decisions.items()},
            }
        )
        seen.update(nodes)
    return {"bandwidth": bandwidth, "iterations": per_iteration}
