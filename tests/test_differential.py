"""Randomized differential test: random DAGs and random edit sequences through helix give
exactly what a fresh plain run computes, iteration after iteration, on one persistent store.

Edits change parameters, which function a node calls, the requested outputs, and code that only
a run-time trace can see. The default run tries 100 examples; the long profile:
``HELIX_DIFFERENTIAL_EXAMPLES=1000 pytest --timeout=0 tests/test_differential.py``."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

import dask
import numpy as np
import pytest
from conftest import helix_client
from distributed import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import helix_dask as hx

WORK = 0.004
"""Each task sleeps this long: close to a load's cost, so plans mix compute, load and prune."""


@hx.task(name="leaf")
def leaf(seed: int, size: int) -> np.ndarray:
    time.sleep(WORK)
    return np.random.default_rng(seed).integers(0, 100, size)


@hx.task(name="unary")
def unary_add(x: np.ndarray, k: int) -> np.ndarray:
    time.sleep(WORK)
    return x + k


@hx.task(name="unary")
def unary_mul(x: np.ndarray, k: int) -> np.ndarray:
    time.sleep(WORK)
    return x * k


@hx.task(name="mix")
def mix(a: np.ndarray, b: np.ndarray, w: int) -> np.ndarray:
    time.sleep(WORK)
    n = min(len(a), len(b))
    return a[:n] * w - b[:n]


@hx.task(name="stats")
def stats(x: np.ndarray, q: int) -> dict:
    time.sleep(WORK)
    return {"sum": int(x.sum()), "q": float(np.percentile(x, q)) if len(x) else 0.0}


def _halve(x: np.ndarray) -> np.ndarray:
    return x // 2


def _negate(x: np.ndarray) -> np.ndarray:
    return -x * DYN_K


DYN_K = 1
"""Read by ``_negate``, which ``dynamic`` reaches only at run time: an edited constant."""
DYN_FN = "_halve"
"""Name of the helper ``dynamic`` looks up at run time: static analysis sees the name, only a
trace sees the helper's code."""


@hx.task(name="dynamic")
def dynamic(x: np.ndarray) -> np.ndarray:
    time.sleep(WORK)
    return getattr(sys.modules[__name__], DYN_FN)(x)


def _code_edit(step: int) -> None:
    """Edit code that only a trace of ``dynamic`` can see: which helper, or its constant."""
    global DYN_K, DYN_FN
    if step % 2:
        DYN_FN = "_negate" if DYN_FN == "_halve" else "_halve"
    else:
        DYN_K = DYN_K % 3 + 1


UNARY = [unary_add, unary_mul]


@st.composite
def dags(draw) -> list[dict]:
    n = draw(st.integers(1, 7))
    nodes: list[dict] = []
    for i in range(n):
        kind = (
            "leaf"
            if i == 0
            else draw(st.sampled_from(["leaf", "unary", "mix", "stats", "dynamic"]))
        )
        if kind == "stats" and any(nodes[j]["kind"] == "stats" for j in range(i)):
            kind = "unary"
        parents = [] if kind == "leaf" else [draw(st.integers(0, i - 1))]
        if kind == "mix":
            parents.append(draw(st.integers(0, i - 1)))
        parents = [p for p in parents if nodes[p]["kind"] != "stats"] or (
            [] if kind == "leaf" else None
        )
        if parents is None:
            kind, parents = "leaf", []
        if kind == "mix" and len(parents) < 2:
            kind = "unary"
        nodes.append(
            {
                "kind": kind,
                "parents": parents[:1] if kind in ("unary", "stats", "dynamic") else parents,
                "param": draw(st.integers(1, 5)),
                "variant": draw(st.integers(0, 1)),
            }
        )
    return nodes


def build(nodes: list[dict], helix: bool, memo: dict | None = None) -> list:
    """The workflow as helix nodes, or evaluated eagerly with the plain functions (a node's
    plain value kept in ``memo`` under what it depends on: the nodes above it and the code
    ``dynamic`` reaches)."""
    memo = {} if memo is None else memo
    out: list = []
    keys: list[tuple] = []
    for n in nodes:
        args = [out[p] for p in n["parents"]]
        if n["kind"] == "leaf":
            f, call = leaf, (n["param"], 3 + n["param"])
        elif n["kind"] == "unary":
            f, call = UNARY[n["variant"]], (*args, n["param"])
        elif n["kind"] == "mix":
            f, call = mix, (*args, n["param"])
        elif n["kind"] == "dynamic":
            f, call = dynamic, tuple(args)
        else:
            f, call = stats, (*args, 10 * n["param"])
        if helix:
            out.append(f(*call))
            continue
        key = (f.func, call[len(args) :], tuple(keys[p] for p in n["parents"]), DYN_FN, DYN_K)
        keys.append(key)
        if key not in memo:
            memo[key] = f.func(*call)
        out.append(memo[key])
    return out


edits = st.lists(
    st.tuples(st.sampled_from(["param", "variant", "none", "outputs", "code"]), st.integers(0, 6)),
    min_size=1,
    max_size=3,
)


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory, threads_cluster) -> Iterator[Client]:
    store = tmp_path_factory.mktemp("differential") / "store"
    # The default policy under a budget of a few results: stores, skips and evictions.
    with helix_client(threads_cluster, store, budget="16 kiB", policy="value") as client:
        yield client


def _stored_identities(dask_scheduler) -> set[str]:
    return {row.signature for row in dask_scheduler.plugins["helix"].ledger.rows()}


def _equal(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return type(a) is type(b) and a == b


@settings(
    max_examples=int(os.environ.get("HELIX_DIFFERENTIAL_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(nodes=dags(), edit_seq=edits, outputs_seed=st.integers(0, 2**16))
def test_every_iteration_equals_a_fresh_plain_run(shared_client, nodes, edit_seq, outputs_seed):
    rng = np.random.default_rng(outputs_seed)
    wanted = sorted({len(nodes) - 1, int(rng.integers(len(nodes)))})
    previous: list[int] = []
    plain_values: dict[tuple, object] = {}
    kept = False
    for kind, target in [("none", 0), *edit_seq, ("none", 0)]:
        i = target % len(nodes)
        if kind == "param":
            nodes[i]["param"] = nodes[i]["param"] % 5 + 1
        elif kind == "variant":
            nodes[i]["variant"] ^= 1
        elif kind == "outputs":
            wanted = sorted({int(rng.integers(len(nodes))), len(nodes) - 1})
        elif kind == "code":
            _code_edit(target)
        lazy = build(nodes, helix=True)
        got = dask.compute(*[lazy[w] for w in wanted])
        plain = build(nodes, helix=False, memo=plain_values)  # each plain task sleeps
        expected = [plain[w] for w in wanted]
        assert all(_equal(g, e) for g, e in zip(got, expected, strict=True)), (got, expected)
        run = hx.last_run(shared_client)
        assert run is not None and run.status == "done"
        if kind == "none" and previous == wanted and kept:
            assert run.computed == [], "an identical re-run must run no task"
        previous = wanted
        # Under the budget an output may not be kept (or be evicted by a later result of the
        # same run); when all are in the store at the end, a re-run must load them.
        keys = {lazy[w].key for w in wanted}
        stored = shared_client.run_on_scheduler(_stored_identities)
        kept = all(n.stored_as in stored for n in run.nodes if n.key in keys)
