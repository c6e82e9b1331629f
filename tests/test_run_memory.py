"""What the scheduler keeps of finished runs: each client's last, in memory; older reports
come back from the catalog, equal to what they were."""

from __future__ import annotations

import dask

import helix_dask as hx
from helix_dask._events import report_from_dict


@hx.task
def _square(x: int) -> int:
    return x * x


def test_only_each_clients_last_finished_run_stays_in_memory(threaded_client) -> None:
    plugin = threaded_client.cluster.scheduler.plugins["helix"]
    reports = []
    for i in range(4):
        assert dask.compute(_square(i))[0] == i * i
        reports.append(hx.last_run(threaded_client))
    kept = {v for v, r in plugin.book.runs.items() if r.finished is not None}
    assert kept == {reports[-1].version}
    for old in reports[:-1]:  # from the catalog now
        answer = threaded_client.sync(threaded_client.scheduler.helix_run, version=old.version)
        again = report_from_dict(answer)
        assert again.version == old.version
        assert [(n.name, n.decision, n.signature) for n in again.nodes] == [
            (n.name, n.decision, n.signature) for n in old.nodes
        ]
