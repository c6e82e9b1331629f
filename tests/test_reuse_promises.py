"""What a node was signed from is what runs: mutations are refused, nested nodes are values."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np
import pytest

import helix_dask as hx
from helix_dask import HelixSignatureError

OFFSET = 1


@hx.task
def shift(x: np.ndarray) -> np.ndarray:
    return x + OFFSET


@hx.task
def make(n: int) -> np.ndarray:
    return np.arange(n)


@dataclasses.dataclass
class Bundle:
    data: object
    label: str = "b"


class Pair(NamedTuple):
    left: object
    right: object


@hx.task
def describe(bundle: Bundle) -> tuple[str, int]:
    return type(bundle.data).__name__, int(np.sum(bundle.data))


@hx.task
def add(pair: Pair) -> int:
    return int(np.sum(pair.left) + np.sum(pair.right))


def test_an_argument_mutated_after_the_call_is_refused_at_compute(threaded_client):
    x = np.zeros(4)
    node = shift(x)
    x[0] = 5.0
    with pytest.raises(HelixSignatureError, match=r"'x' of node 'shift-.*was modified after"):
        node.compute()
    assert shift(x).compute().tolist() == [6.0, 1.0, 1.0, 1.0]


def test_a_global_changed_after_the_call_is_refused_at_compute(threaded_client):
    global OFFSET
    node = shift(np.zeros(2))
    OFFSET = 3
    try:
        with pytest.raises(HelixSignatureError, match=r"task 'shift'.*changed after the node"):
            node.compute()
        assert shift(np.zeros(2)).compute().tolist() == [3.0, 3.0]
    finally:
        OFFSET = 1


def test_a_mutated_ancestor_argument_is_refused_too(threaded_client):
    x = np.ones(3)
    node = add(Pair(shift(x), 1))
    x[:] = 0
    with pytest.raises(HelixSignatureError, match="was modified after"):
        node.compute()


def test_an_argument_shared_by_many_nodes_is_checked_for_each(threaded_client):
    x = np.ones(3)
    node = add(Pair(shift(x), shift(x, hx_name="again")))
    x[:] = 0
    with pytest.raises(HelixSignatureError, match="was modified after"):
        node.compute()
    unchanged = np.ones(3)
    assert add(Pair(shift(unchanged), shift(unchanged))).compute() == 12


def test_nodes_nested_in_dataclasses_and_namedtuples_reach_the_task_as_values(threaded_client):
    assert describe(Bundle(make(4))).compute() == ("ndarray", 6)
    assert add(Pair(make(3), make(4))).compute() == 9
    run = hx.last_run(threaded_client)
    assert sorted(run.computed + run.loaded) == ["add", "make(n=3)", "make(n=4)"]
    # Reused like any node: the second time nothing runs again.
    assert add(Pair(make(3), make(4))).compute() == 9
    assert hx.last_run(threaded_client).computed == []


@hx.task(nout=2)
def split(n: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(n)
    return x[: n // 2], x[n // 2 :]


@hx.task
def summarize(x: np.ndarray) -> dict:
    return {"sum": int(x.sum()), "size": int(x.size)}


class Model:
    def __init__(self, k: int) -> None:
        self.k = k

    @hx.task
    def predict(self, x: np.ndarray) -> np.ndarray:
        return x * self.k


def test_results_unpack_index_and_expose_attributes_as_reusable_nodes(threaded_client):
    left, right = split(6)
    stats = summarize(right)
    assert dask_compute(left, right, stats["sum"], summarize(left)["size"]) == (
        [0, 1, 2],
        [3, 4, 5],
        12,
        3,
    )
    hx.last_run(threaded_client)  # its stores are committed
    assert split(6)[1].size.compute() == 3
    hx.last_run(threaded_client)
    assert dask_compute(left, right, stats["sum"]) == ([0, 1, 2], [3, 4, 5], 12)
    run = hx.last_run(threaded_client)
    # The tuple-valued root is never run again: its items are loaded, and what the planner
    # chooses to recompute (only cheap nodes, when that beats loading) is built from them.
    assert "split" not in run.computed
    assert {"split[0]", "split[1]"} <= set(run.loaded + run.pruned)


def test_a_task_defined_as_a_method_signs_its_instance(threaded_client):
    x = np.arange(3)
    assert Model(2).predict(x).compute().tolist() == [0, 2, 4]
    assert Model(3).predict(x).compute().tolist() == [0, 3, 6]
    assert Model(2).predict(x).signature != Model(3).predict(x).signature


def test_a_named_call_keeps_its_signature_and_carries_its_name(threaded_client):
    plain, named = summarize(np.arange(3)), summarize(np.arange(3), hx_name="small")
    assert plain.signature == named.signature and named.meta.label == "small"
    assert summarize(np.arange(3), dask_key_name="tiny").meta.label == "tiny"


def dask_compute(*nodes):
    import dask

    return tuple(v.tolist() if isinstance(v, np.ndarray) else v for v in dask.compute(*nodes))


def test_computing_on_a_cluster_without_the_plugin_says_so_once(caplog):
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster),
        caplog.at_level("WARNING", logger="helix_dask"),
    ):
        assert summarize(np.arange(4)).compute() == {"sum": 6, "size": 4}
        assert summarize(np.arange(5)).compute() == {"sum": 10, "size": 5}
    said = [r.getMessage() for r in caplog.records if "hx.setup(client)" in r.getMessage()]
    assert len(said) == 1 and "no helix plugin" in said[0]
