"""What ``hx.last_run`` and the catalog say a run did, checked against an independent record of
which user functions actually ran, over many back-to-back computes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from conftest import helix_client, log_call

import helix_dask as hx
from helix_dask import Decision
from helix_dask._events import report_from_dict
from helix_dask._run import NodeProgress, Run


@hx.task
def base(seed: int) -> np.ndarray:
    log_call("base")
    return np.full(50_000, float(seed))  # 400 kB: its write takes a moment


@hx.task
def shift(x: np.ndarray, k: int) -> np.ndarray:
    log_call("shift")
    return x + k


@hx.task
def mean(x: np.ndarray) -> float:
    log_call("mean")
    return float(x.mean())


def _graph(i: int):
    # Repeats each graph at least twice in a row (the second compute often starts while the
    # first one's writes are still in flight), and changes one parameter every few computes.
    seed, k = (i // 6) % 2, (i // 2) % 3
    return mean(shift(base(seed), k)), seed + k


@pytest.mark.parametrize("kind", ["threads", "processes"])
def test_every_version_reports_exactly_the_functions_that_ran(request, kind, tmp_path, calls):
    cluster = request.getfixturevalue(f"{kind}_cluster")
    with helix_client(cluster, tmp_path / "store", policy="all") as client:
        ran: list[Counter[str]] = []
        versions: list[int] = []
        for i in range(24):
            node, expected = _graph(i)
            assert node.compute() == expected
            ran.append(calls.take())
            if i % 3 == 2:  # now and then, ask right away
                versions.append(hx.last_run(client).version)
                assert versions[-1] - versions[0] == i - 2, (versions, i)
        last = hx.last_run(client).version
        first = last - 23
        assert versions == [first + i for i in range(24) if i % 3 == 2]
        for i, v in enumerate(range(first, last + 1)):
            run = report_from_dict(client.sync(client.scheduler.helix_run, version=v))
            assert run.status == "done", (i, run.summary())
            assert Counter(run.computed) == ran[i], (i, run.summary(), ran[i])
            for n in run.nodes:
                if n.decision is Decision.IN_CLUSTER:
                    assert n.name not in ran[i], (i, n)


def test_time_saved_is_never_negative():
    from helix_dask._events import RunStatus
    from helix_dask._wire import NodeMeta

    run = Run(1, "w", "", None)
    meta = NodeMeta("slow_load", "s" * 32, "c", {}, (), True, None)
    node = NodeProgress("slow_load-x", meta, Decision.LOAD, 0.01, run)
    run.add(node)
    node.load_seconds = 2.0
    assert run.settle(node)
    run.finish(RunStatus.DONE)
    assert run.time_saved == 0.0 and run.report().time_saved == 0.0
