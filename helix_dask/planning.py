"""Plan a graph against a store without running it.

:func:`plan_graph` turns helix nodes plus what the catalog measured into the planner's input and
its decisions; the scheduler plugin plans every submitted graph with it, and :func:`preview`
shows the plan of a graph that has not run yet (``hx.preview(out, store=...)``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import _config
from ._dependency_digests import requirement_digests
from ._events import Decision
from ._requirements import effective_signature
from ._wire import ANNOTATION, NodeMeta
from .catalog import Catalog
from .costs import CostModel, fit_io, io_prior, survival_rates
from .planner import PlanNode, plan

if TYPE_CHECKING:
    from distributed.scheduler import TaskState

    from ._drawing import DagView
    from ._ledger import StorageLedger
    from .catalog import ArtifactRow
    from .costs import IOModel
    from .store import ZarrArtifactStore
    from .task import HelixNode

DEFAULT_COMPUTE_PRIOR = 1.0
"""Seconds assumed for a task never measured before (it computes anyway: nothing is stored)."""


@dataclass(frozen=True, slots=True)
class GraphNode:
    """A helix node as planning sees it: its metadata, parents and role in the graph."""

    meta: NodeMeta
    parents: tuple[str, ...]
    is_output: bool
    fixed: bool = False
    """Already held or being computed on the cluster: available at no cost, never rewritten."""


@dataclass(frozen=True, slots=True)
class GraphPlan:
    """Decisions per key, the compute estimate behind each, and the predicted seconds."""

    decisions: Mapping[str, Decision]
    estimates: Mapping[str, float]
    cost: float


def verified_identities(
    nodes: Mapping[str, GraphNode],
    catalog: Catalog,
    digests: Mapping[str, str],
    held: Mapping[str, str],
    recorded: Mapping[str, Mapping[str, str]] | None = None,
) -> tuple[dict[str, str | None], dict[str, str]]:
    """Each node's effective signature, and why a node could not be verified.

    A node's stored result is valid when every run-time dependency recorded for it has the
    same digest in the client's current code (``digests``) and its parents are valid; nodes
    already on the cluster (``fixed``) have the identity they were computed under (``held``),
    once their run settled it.
    None marks a node that must compute (and so must every node below it).
    """
    if recorded is None:
        recorded = catalog.requirements(g.meta.signature for g in nodes.values())
    ids: dict[str, str | None] = {}
    stale: dict[str, str] = {}

    def identify(key: str) -> str | None:
        if key in ids:
            return ids[key]
        g = nodes[key]
        m = g.meta
        if g.fixed and key in held:
            ids[key] = held[key]
            return ids[key]
        # Otherwise (not on the cluster, or its run has not settled it yet) from what its
        # computes recorded: the identity its stored descendants were computed from.
        # In the call's argument order, as the scheduler plugin combines them after a compute.
        parents = [(nodes[p].meta.signature, identify(p)) for p in m.parents if p in nodes]
        requires = recorded.get(m.signature, {})
        changed = sorted(d for d, v in requires.items() if digests.get(d) != v)
        if changed:
            missing = [d for d in changed if d not in digests]
            stale[key] = (
                f"run-time dependency {changed[0]} changed since it was stored"
                if len(missing) < len(changed)
                else f"run-time dependency {changed[0]} could not be verified"
            )
            ids[key] = None
        elif any(e is None for _, e in parents):
            ids[key] = None
        else:
            ids[key] = effective_signature(m.signature, requires, parents)  # type: ignore[arg-type]
        return ids[key]

    for key in _topological(nodes):
        identify(key)
    return ids, stale


def _topological(nodes: Mapping[str, GraphNode]) -> list[str]:
    """Keys with every parent before its children (iterative: graphs may be deep)."""
    order: list[str] = []
    state: dict[str, int] = {}
    for root in nodes:
        if root in state:
            continue
        stack = [(root, False)]
        while stack:
            key, expanded = stack.pop()
            if expanded:
                state[key] = 2
                order.append(key)
                continue
            if state.get(key):
                continue
            state[key] = 1
            stack.append((key, True))
            stack.extend((p, False) for p in nodes[key].parents if p in nodes and p not in state)
    return order


def plan_graph(
    nodes: Mapping[str, GraphNode],
    catalog: Catalog,
    artifacts: ZarrArtifactStore,
    io: IOModel,
    solver: str = "scipy",
    stored_rows: Callable[[Iterable[str]], Mapping[str, ArtifactRow]] | None = None,
    *,
    identities: Mapping[str, str | None] | None = None,
) -> GraphPlan:
    """The cheapest plan for ``nodes`` given what ``catalog`` measured and what is stored.

    Compute costs come from the same signature, else the task's latest run, else a prior;
    load costs from the artifact's measured loads, else its size through ``io``.
    ``stored_rows`` looks committed artifacts up (default: the catalog; the scheduler plugin
    passes its ledger). Artifacts are looked up by ``identities`` (effective signatures, None:
    cannot be loaded), by default the static signatures.
    """
    metas = [g.meta for g in nodes.values()]
    by_sig, by_name = catalog.compute_costs((m.signature for m in metas), (m.name for m in metas))
    if identities is None:
        identities = {k: g.meta.signature for k, g in nodes.items()}
    lookup = stored_rows or catalog.artifacts_for
    stored = lookup(
        i for k, g in nodes.items() if g.meta.deterministic and (i := identities[k]) is not None
    )
    estimates: dict[str, float] = {}
    plan_nodes = []
    for key, g in nodes.items():
        m = g.meta
        estimates[key] = by_sig.get(m.signature, by_name.get(m.name, DEFAULT_COMPUTE_PRIOR))
        load: float | None = None  # None: it must compute (nothing stored, or not reusable)
        ident = identities[key]
        if g.fixed:
            load = 0.0
        elif (
            ident is not None
            and (row := stored.get(ident)) is not None
            and artifacts.contains(ident)
        ):
            load = row.load_seconds or io.load_seconds(row.nbytes)
        plan_nodes.append(PlanNode(key, g.parents, estimates[key], load, g.is_output))
    chosen = plan(plan_nodes, solver=solver)
    return GraphPlan(chosen.decisions, estimates, chosen.cost)


@dataclass(frozen=True, slots=True)
class UpdatePlan:
    """The plan of one submitted graph: decisions per helix key, estimates, what to rewrite."""

    decisions: Mapping[str, Decision]
    estimates: Mapping[str, float]
    cost: float
    loads: Mapping[str, str]
    """Key -> effective signature of each node to load."""
    pruned: list[str]
    identities: Mapping[str, str | None]
    """Key -> effective signature (None: must compute and cannot be verified before)."""
    stale: Mapping[str, str]
    """Key -> why its stored result cannot be used (a run-time dependency changed)."""


def plan_update(
    helix: Mapping[str, tuple[TaskState, NodeMeta]],
    wanted: Collection[str],
    catalog: Catalog,
    ledger: StorageLedger,
    artifacts: ZarrArtifactStore,
    io: IOModel,
    solver: str,
    digests: Mapping[str, str],
    held: Mapping[str, str],
) -> UpdatePlan:
    """Plan the helix nodes of a graph just submitted to the scheduler (``helix``: key ->
    its fresh TaskState and metadata). A node whose task already exists on the scheduler (held,
    or running for another graph) is used as is: IN_CLUSTER. Stored results are looked up by
    effective signature, verified against the client's ``digests`` of run-time dependencies;
    ``held``: identities of results on the cluster. Reads; changes nothing."""
    fresh = {
        k for k, (ts, _) in helix.items() if ts.state == "released" and ts.run_spec is not None
    }
    graph = {
        k: GraphNode(
            meta=m,
            parents=tuple(d.key for d in ts.dependencies if d.key in helix),
            is_output=k in wanted or any(d.key not in helix for d in ts.dependents),
            fixed=k not in fresh,
        )
        for k, (ts, m) in helix.items()
    }
    recorded = catalog.requirements(g.meta.signature for g in graph.values())
    identities, stale = verified_identities(graph, catalog, digests, held, recorded)
    chosen = plan_graph(
        graph, catalog, artifacts, io, solver, ledger.rows_for, identities=identities
    )
    decisions: dict[str, Decision] = {}
    loads: dict[str, str] = {}
    for k, d in chosen.decisions.items():
        if k not in fresh:
            d = Decision.IN_CLUSTER
        elif d is Decision.LOAD:
            loads[k] = identities[k]  # type: ignore[assignment]
        decisions[k] = d
    pruned = [k for k, d in decisions.items() if d is Decision.PRUNE]
    return UpdatePlan(decisions, chosen.estimates, chosen.cost, loads, pruned, identities, stale)


def cost_model(
    catalog: Catalog, ledger: StorageLedger, workflow: str, store: str | None = None
) -> CostModel:
    """The cost model for a plan: I/O fitted to the ledger's artifacts (priors of the store's
    kind), reuse rates from the workflow's signature history (a few small queries)."""
    history = catalog.signature_history(workflow)
    return CostModel(io_model(ledger, store), survival_rates(history), history, ledger.names())


def io_model(catalog: Catalog | StorageLedger, store: str | None = None) -> IOModel:
    """Load and write costs fitted to what ``catalog`` (or a ledger) measured, the config's
    priors elsewhere (priors for object storage when ``store`` is a URL)."""
    from ._location import is_remote

    loads, writes = catalog.io_samples()
    overhead, bandwidth = io_prior(
        store is not None and is_remote(store),
        float(_config.get("load-overhead")),  # type: ignore[arg-type]
        float(_config.parse_size(_config.get("read-bandwidth"))),
    )
    return fit_io(loads, writes, overhead, bandwidth)


def graph_nodes(*outputs: HelixNode) -> dict[str, GraphNode]:
    """Every helix node behind ``outputs``, read from their graphs' annotations."""
    found: dict[str, NodeMeta] = {}
    for out in outputs:
        for name, layer in out.dask.layers.items():
            ann = (layer.annotations or {}).get(ANNOTATION)
            if ann is not None:
                found[str(name)] = NodeMeta.from_annotation(ann)
    wanted = {o.key for o in outputs}
    return {
        k: GraphNode(m, tuple(p for p in m.parents if p in found), k in wanted)
        for k, m in found.items()
    }


def preview(*outputs: HelixNode, store: str | os.PathLike[str] | None = None) -> DagView:
    """The plan helix would make for ``outputs`` now, as a DAG, without running anything.

    Examples
    --------
    >>> view = hx.preview(evaluate(train(features)), store="./.helix")   # doctest: +SKIP
    >>> view.graph.nodes["train-..."]["state"]                          # doctest: +SKIP
    'computed'
    >>> Path("plan.svg").write_text(view.to_svg())                      # doctest: +SKIP
    """
    import networkx as nx

    from ._drawing import DagView
    from ._location import catalog_dir
    from ._store_access import open_store
    from .history import STATES

    root = str(store or _config.get("store"))
    catalog = Catalog(catalog_dir(root))
    nodes = graph_nodes(*outputs)
    recorded = catalog.requirements(g.meta.signature for g in nodes.values())
    digests = requirement_digests({d for req in recorded.values() for d in req})
    identities, _ = verified_identities(nodes, catalog, digests, {}, recorded)
    chosen = plan_graph(
        nodes,
        catalog,
        open_store(root),  # type: ignore[arg-type]
        io_model(catalog, root),
        str(_config.get("solver")),
        identities=identities,
    )
    stored = catalog.artifacts_for(i for i in identities.values() if i is not None)
    graph = nx.DiGraph(version=0, message="plan, not run", status="planned")
    for key, g in nodes.items():
        row = stored.get(identities[key]) if identities[key] is not None else None
        graph.add_node(
            key,
            name=g.meta.name,
            signature=g.meta.signature,
            state=STATES[chosen.decisions[key]],
            changed=False,
            stored=row is not None,
            materialization=None,
            artifact=row.location if row is not None else None,
            nbytes=row.nbytes if row is not None else None,
            compute_seconds=None,
            load_seconds=row.load_seconds if row is not None else None,
            write_seconds=None,
            estimated_compute_seconds=chosen.estimates[key],
            reason="",
            metrics=None,
            arg_values=dict(g.meta.arg_values),
        )
        graph.add_edges_from((p, key) for p in g.parents)
    catalog.close()
    return DagView(graph)
