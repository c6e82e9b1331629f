"""An iterative scikit-learn workflow on a LocalCluster, showing what helix reuses.

Five iterations of the same workflow, as a data scientist would run them:
  1. first run: everything computes;
  2. identical re-run: nothing computes, the outputs load;
  3. hyperparameter edit (regularisation C): only training and evaluation run;
  4. feature edit (more random Fourier features): features, training and evaluation run;
  5. evaluation edit (new metric code): only evaluation runs.

Run: ``bash ci/demo.sh`` (or ``python examples/iterate.py --store DIR``).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from dask.distributed import Client, LocalCluster
from sklearn.datasets import make_classification
from sklearn.kernel_approximation import RBFSampler
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.preprocessing import StandardScaler

import helix_dask as hx

SEED = 0


@hx.task
def load(path: hx.File) -> dict:
    with np.load(path) as data:
        return {"X": data["X"], "y": data["y"]}


@hx.task
def clean(raw: dict) -> dict:
    X = np.nan_to_num(raw["X"], nan=0.0)
    return {"X": StandardScaler().fit_transform(X), "y": raw["y"]}


@hx.task
def featurize(data: dict, n_components: int = 300, gamma: float = 0.02) -> dict:
    rff = RBFSampler(n_components=n_components, gamma=gamma, random_state=SEED)
    return {"X": rff.fit_transform(data["X"]), "y": data["y"]}


@hx.task
def split(data: dict, test_fraction: float = 0.25) -> dict:
    n_test = int(len(data["y"]) * test_fraction)
    return {
        "X_train": data["X"][n_test:],
        "y_train": data["y"][n_test:],
        "X_test": data["X"][:n_test],
        "y_test": data["y"][:n_test],
    }


@hx.task
def train(parts: dict, C: float = 1.0) -> LogisticRegression:
    return LogisticRegression(C=C, max_iter=300).fit(parts["X_train"], parts["y_train"])


@hx.task(name="evaluate")
def evaluate(model: LogisticRegression, parts: dict) -> dict:
    predicted = model.predict(parts["X_test"])
    return {"accuracy": float(accuracy_score(parts["y_test"], predicted))}


@hx.task(name="evaluate")
def evaluate_with_f1(model: LogisticRegression, parts: dict) -> dict:
    predicted = model.predict(parts["X_test"])
    return {
        "accuracy": float(accuracy_score(parts["y_test"], predicted)),
        "f1": float(f1_score(parts["y_test"], predicted)),
    }


ITERATIONS = [
    ("first run", dict(C=1.0, n_components=300, evaluator=evaluate)),
    ("identical re-run", dict(C=1.0, n_components=300, evaluator=evaluate)),
    ("hyperparameter edit: C=0.1", dict(C=0.1, n_components=300, evaluator=evaluate)),
    ("feature edit: 500 components", dict(C=0.1, n_components=500, evaluator=evaluate)),
    ("evaluation edit: add F1", dict(C=0.1, n_components=500, evaluator=evaluate_with_f1)),
]


def make_data(path: Path, n_samples: int) -> hx.File:
    X, y = make_classification(
        n_samples=n_samples, n_features=40, n_informative=12, random_state=SEED
    )
    np.savez(path, X=X, y=y)
    return hx.File(path)


def workflow(data: hx.File, C: float, n_components: int, evaluator: hx.HelixTask):
    parts = split(featurize(clean(load(data)), n_components=n_components))
    return evaluator(train(parts, C=C), parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", help="helix store directory (default: a temporary one)")
    parser.add_argument("--samples", type=int, default=60_000, help="rows of generated data")
    args = parser.parse_args()
    workdir = Path(args.store) if args.store else Path(tempfile.mkdtemp(prefix="helix-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = make_data(workdir / "data.npz", args.samples)

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            hx.setup(client, store=workdir / "store", workflow="demo")
            print(f"dashboard: {client.dashboard_link}  (helix page: /helix)")
            total = 0.0
            for i, (what, params) in enumerate(ITERATIONS, 1):
                t0 = time.perf_counter()
                metrics = workflow(data, **params).compute()
                wall = time.perf_counter() - t0
                total += wall
                run = hx.last_run(client)
                print(f"\niteration {i}: {what}  ({wall:.2f}s)  metrics={metrics}")
                print(f"  computed: {', '.join(run.computed) or '-'}")
                print(f"  loaded:   {', '.join(run.loaded) or '-'}")
                print(f"  pruned:   {', '.join(run.pruned) or '-'}")
                print(f"  stored:   {', '.join(run.stored) or '-'}")
                print(f"  time saved vs computing everything: ~{run.time_saved:.2f}s")
            print(f"\ntotal {total:.2f}s over {len(ITERATIONS)} iterations; catalog: {workdir}")
    if not args.store:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
