"""Three grid searches over one scikit-learn pipeline, showing what helix reuses between them.

StandardScaler -> PCA -> SVC on scikit-learn's digits, 5 splits, on a LocalCluster:
  1. first search: every step of every candidate and split is fitted (shared prefixes once);
  2. the SVC grid widened: only the new candidates are fitted, on the stored PCA outputs;
  3. a PCA setting changed: candidates with the unchanged setting load their scores.

Run: ``python examples/sklearn_search.py [--store DIR]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from dask.distributed import Client, LocalCluster
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

import helix_dask as hx
from helix_dask.sklearn import GridSearchCV

FIRST = {"pca__n_components": [16, 32], "svc__C": [1.0, 10.0], "svc__gamma": ["scale", 0.01]}
SEARCHES = [
    ("first search", FIRST),
    ("SVC grid widened", {**FIRST, "svc__C": [1.0, 10.0, 100.0]}),
    ("PCA setting changed", {**FIRST, "pca__n_components": [16, 48]}),
]


def main(store: Path) -> None:
    X, y = load_digits(return_X_y=True)
    pipe = Pipeline([("scaler", StandardScaler()), ("pca", PCA(random_state=0)), ("svc", SVC())])
    with (
        LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        hx.setup(client, store=store, budget="1 GiB")
        for title, grid in SEARCHES:
            start = time.perf_counter()
            # refit=False: the search is one helix run, so last_run reports all of it.
            search = GridSearchCV(pipe, grid, cv=5, refit=False).fit(X, y)
            run = hx.last_run(client)
            best = search.cv_results_["params"][search.best_index_]
            print(f"{title}: {time.perf_counter() - start:.1f}s, best {best}")
            print(f"  computed {dict(Counter(run.computed))}")
            print(f"  loaded   {dict(Counter(run.loaded))}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="helix store (default: a temporary one)")
    args = parser.parse_args()
    if args.store is not None:
        main(args.store)
    else:
        tmp = tempfile.mkdtemp(prefix="helix-sklearn-")
        try:
            main(Path(tmp) / "store")
        finally:
            shutil.rmtree(tmp)
