"""Which strategies the benchmark runs in which repeat, how the tight budget is sized, and how
the peak-memory table judges its target.

The driver's loop is exercised with the per-strategy run replaced by a recorder, so this checks
the schedule (every target's strategies in every repeat, diagnostics once), not timings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks import _driver
from benchmarks._report import default_policy

JUDGED = {"dask", "joblib", f"helix:{default_policy()}", "helix:none"}
"""Strategies a target is judged on, besides the tight-budget runs."""


def test_targets_run_every_repeat_and_diagnostics_only_the_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[tuple[str, Any]] = []

    def record(name, size, n, strategy, sdir, in_process, processes, log):
        ran.append((strategy["id"], strategy.get("budget")))
        stored = 1000 + len(ran)  # differs per run: the tight budget must come from repeat 0
        return 0.0, [{"index": i, "seconds": 0.1, "storage_bytes": stored} for i in range(n)]

    monkeypatch.setattr(_driver, "_run_strategy", record)
    result = _driver.run_workflow("tabular", "smoke", 2, 3, tmp_path, in_process=True)
    runs = result["runs"]
    for sid in JUDGED | {s for s in runs if s.endswith("@tight")}:
        assert [r["repeat"] for r in runs[sid]] == [0, 1, 2], sid
    diagnostics = {"helix:none@trace", "helix:all"} | {
        f"helix:{p}" for p in _driver.POLICIES if p not in (default_policy(), "none")
    }
    for sid in diagnostics:
        assert [r["repeat"] for r in runs[sid]] == [0], sid
    all_stored = runs["helix:all"][0]["iterations"][-1]["storage_bytes"]
    tight = {b for sid, b in ran if sid.endswith("@tight")}
    assert tight == {int(all_stored * _driver.TIGHT_FRACTION)}


def test_peak_memory_verdict_compares_each_helix_budget_with_plain() -> None:
    from benchmarks._report import _memory_section

    gib = 2**30
    rows = [
        {"config": "plain", "budget": None, "before_bytes": gib // 10, "peak_bytes": gib},
        {"config": "helix 100 MB", "budget": "100 MB", "before_bytes": 0, "peak_bytes": gib},
        {"config": "helix 10 GB", "budget": "10 GB", "before_bytes": 0, "peak_bytes": 2 * gib},
    ]
    verdicts: list[str] = []
    table = _memory_section({"mb": 400, "steps": 7, "rows": rows}, verdicts)
    assert sum(line.startswith("| ") for line in table) == 1 + len(rows)
    assert [v.rsplit(": ", 1)[1] for v in verdicts] == ["met", "**missed**"]


def test_search_goals_are_judged_per_repeat_against_each_peer() -> None:
    from benchmarks._report import _search_verdicts

    def tool(*searches: list[float]) -> list[dict]:
        return [{"seconds": sorted(s)[len(s) // 2], "per_repeat": s} for s in searches]

    sk = {
        "searches": {"first": {}, "widened": {}},
        "sklearn": tool([5.0, 5.0], [5.0, 5.0]),
        "dask_ml": tool([6.0, 6.0], [6.0, 6.0]),
        "helix": tool([5.0, 7.0], [0.9, 1.1]),
    }
    verdicts = _search_verdicts(sk)
    assert [v.split("): ", 1)[1].split(" ")[0] for v in verdicts] == ["noise", "met", "noise"]
    sk["dask_ml"] = "ImportError: no dask-ml"  # a peer that failed is no verdict
    assert len(_search_verdicts(sk)) == 1
