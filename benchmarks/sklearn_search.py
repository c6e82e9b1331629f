"""``python -m benchmarks.sklearn_search``: one pipeline grid searched three times, three ways.

StandardScaler -> PCA -> SVC on scikit-learn's digits (1,797 x 64), 5 stratified splits:

1. first search: ``pca__n_components`` in {16, 32}, ``svc__C`` in 4 values, ``svc__gamma`` in
   3 values (24 candidates, 120 fits);
2. the last step's grid widened: ``svc__C`` gets a fifth value (30 candidates, 6 new);
3. one preprocessing parameter changed: ``pca__n_components`` 32 -> 48 (half the candidates new).

Each search is run by scikit-learn's ``GridSearchCV(n_jobs=2)``, dask-ml's ``GridSearchCV`` on a
``LocalCluster(n_workers=2, threads_per_worker=1)`` (or the error it fails with, recorded), and
``helix_dask.sklearn.GridSearchCV`` on such a cluster with helix set up on a fresh store; all
refit the best candidate. The scores of every search are checked equal across the three. The
whole sequence runs ``--repeats`` times per tool (default 3, the tools alternating); the table
shows medians, the JSON each repeat's seconds, the commit and the load average. Prints a table
and writes ``benchmarks/results/sklearn_search.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.model_selection import GridSearchCV as SkGridSearchCV
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

HERE = Path(__file__).resolve().parent
FIRST = {
    "pca__n_components": [16, 32],
    "svc__C": [0.1, 1.0, 10.0, 100.0],
    "svc__gamma": ["scale", 0.001, 0.01],
}
SEARCHES = {
    "first": FIRST,
    "widened last step": {**FIRST, "svc__C": [0.1, 1.0, 10.0, 100.0, 1000.0]},
    "preprocessing changed": {**FIRST, "pca__n_components": [16, 48]},
}


def pipeline() -> Pipeline:
    return Pipeline([("scaler", StandardScaler()), ("pca", PCA(random_state=0)), ("svc", SVC())])


def cv() -> StratifiedKFold:
    return StratifiedKFold(5)


def _cluster():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, dashboard_address=None, worker_dashboard_address=None
    )
    return cluster, Client(cluster)


def run_sklearn(X: np.ndarray, y: np.ndarray) -> list[dict[str, Any]]:
    out = []
    for grid in SEARCHES.values():
        start = time.perf_counter()
        search = SkGridSearchCV(pipeline(), grid, cv=cv(), n_jobs=2).fit(X, y)
        out.append({"seconds": time.perf_counter() - start, "scores": _scores(search)})
    return out


def run_dask_ml(X: np.ndarray, y: np.ndarray) -> list[dict[str, Any]] | str:
    try:
        from dask_ml.model_selection import GridSearchCV as DaskGridSearchCV
    except ImportError as exc:
        return f"{type(exc).__name__}: {exc}"
    cluster, client = _cluster()
    out = []
    try:
        with cluster, client:
            for grid in SEARCHES.values():
                start = time.perf_counter()
                search = DaskGridSearchCV(pipeline(), grid, cv=cv(), scheduler=client).fit(X, y)
                out.append({"seconds": time.perf_counter() - start, "scores": _scores(search)})
    except Exception as exc:  # recorded in the results: the benchmark reports what failed
        return "".join(traceback.format_exception_only(exc)).strip()
    return out


def run_helix(X: np.ndarray, y: np.ndarray, store: Path) -> list[dict[str, Any]]:
    import helix_dask as hx
    from helix_dask.sklearn import GridSearchCV

    cluster, client = _cluster()
    out = []
    with cluster, client:
        hx.setup(client, store=store, budget="2 GiB")
        for grid in SEARCHES.values():
            start = time.perf_counter()
            search = GridSearchCV(pipeline(), grid, cv=cv(), client=client).fit(X, y)
            seconds = time.perf_counter() - start
            out.append({"seconds": seconds, "scores": _scores(search), **_reuse(client, store)})
    return out


def _reuse(client: Any, store: Path) -> dict[str, Any]:
    """What the search's run (the one before its refit run) computed, loaded and pruned."""
    import helix_dask as hx

    search = hx.Catalog(store).run(hx.last_run(client).version - 1)
    return {
        key: _count(n.name for n in search.nodes if n.decision is decision)
        for key, decision in (
            ("computed", hx.Decision.COMPUTE),
            ("loaded", hx.Decision.LOAD),
            ("pruned", hx.Decision.PRUNE),
        )
    }


def _count(names: Iterable[str]) -> dict[str, int]:
    """How many nodes of each task (repeated tasks' readable names hold their arguments)."""
    counts: dict[str, int] = {}
    for name in sorted(names):
        counts[name] = counts.get(name, 0) + 1
    return counts


def _scores(search: Any) -> list[float]:
    return [float(s) for s in search.cv_results_["mean_test_score"]]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import datetime
    import os

    from benchmarks.__main__ import commit_state

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results" / "sklearn_search.json")
    parser.add_argument(
        "--repeats", type=int, default=3, help="whole three-search sequences per tool (3)"
    )
    args = parser.parse_args(argv)
    X, y = load_digits(return_X_y=True)

    results: dict[str, Any] = {
        "searches": {k: dict(v) for k, v in SEARCHES.items()},
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "git": commit_state(),
        "repeats": args.repeats,
        "load_start": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
    runs: dict[str, list[Any]] = {"sklearn": [], "dask_ml": [], "helix": []}
    for _ in range(args.repeats):  # the tools alternate, so load drifts over all of them
        runs["sklearn"].append(run_sklearn(X, y))
        runs["dask_ml"].append(run_dask_ml(X, y))
        with tempfile.TemporaryDirectory(prefix="helix-sklearn-bench-") as tmp:
            runs["helix"].append(run_helix(X, y, Path(tmp) / "store"))
    for tool, repeats in runs.items():
        results[tool] = _median_of(repeats)
    results["load_end"] = " ".join(f"{x:.1f}" for x in os.getloadavg())

    for tool in ("dask_ml", "helix"):
        if isinstance(results[tool], list):
            results[f"{tool}_scores_equal_sklearn"] = all(
                a["scores"] == b["scores"]
                for a, b in zip(results[tool], results["sklearn"], strict=True)
            )
    _print_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return results


def _median_of(repeats: list[Any]) -> list[dict[str, Any]] | str:
    """Per search: the median seconds over the repeats and each repeat's; the rest (scores,
    what helix computed) from the first repeat. A tool that failed: its first error."""
    import statistics

    failed = next((r for r in repeats if not isinstance(r, list)), None)
    if failed is not None:
        return failed
    out = []
    for i, first in enumerate(repeats[0]):
        seconds = [r[i]["seconds"] for r in repeats]
        out.append({**first, "seconds": statistics.median(seconds), "per_repeat": seconds})
    return out


def _print_table(results: dict[str, Any]) -> None:
    dask_ml = results["dask_ml"]
    print(f"{'search':<24}{'sklearn':>10}{'dask-ml':>10}{'helix':>10}"
          f"{'sklearn/helix':>15}{'dask-ml/helix':>15}")  # fmt: skip
    for i, name in enumerate(SEARCHES):
        sk = results["sklearn"][i]["seconds"]
        hx_ = results["helix"][i]["seconds"]
        dm = dask_ml[i]["seconds"] if isinstance(dask_ml, list) else float("nan")
        print(f"{name:<24}{sk:>9.2f}s{dm:>9.2f}s{hx_:>9.2f}s{sk / hx_:>14.1f}x{dm / hx_:>14.1f}x")
    if not isinstance(dask_ml, list):
        print(f"dask-ml failed: {dask_ml}")
    for i, name in enumerate(SEARCHES):
        run = results["helix"][i]
        print(f"helix {name}: computed {run['computed']}, loaded {run['loaded']}")
    for key in ("dask_ml_scores_equal_sklearn", "helix_scores_equal_sklearn"):
        if key in results:
            print(f"{key}: {results[key]}")


if __name__ == "__main__":
    main()
