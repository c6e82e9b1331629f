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


def test_nodes_nested_in_dataclasses_and_namedtuples_reach_the_task_as_values(threaded_client):
    assert describe(Bundle(make(4))).compute() == ("ndarray", 6)
    assert add(Pair(make(3), make(4))).compute() == 9
    run = hx.last_run(threaded_client)
    assert sorted(run.computed + run.loaded) == ["add", "make(n=3)", "make(n=4)"]
    # Reused like any node: the second time nothing runs again.
    assert add(Pair(make(3), make(4))).compute() == 9
    assert hx.last_run(threaded_client).computed == []
