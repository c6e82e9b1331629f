"""Census-like tabular classification: generate → clean → featurize → scale → train → evaluate.

A generated table of mixed numeric and categorical columns (integer codes) with missing values
and heavy-tailed outliers; quantile bucketing, one-hot encoding and interactions; a logistic
regression; accuracy, log-loss and AUC on a fixed held-out fifth.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

import helix_dask as hx

from ._workflow import Iteration, Op, Workflow, variants

CATEGORIES = {
    "workclass": 8,
    "occupation": 14,
    "marital": 7,
    "relationship": 6,
    "race": 5,
    "sex": 2,
    "country": 40,
}
TEST_FRACTION = 0.2


@hx.task(name="generate")
def generate_v1(n_rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {
        name: rng.integers(0, k, n_rows).astype(np.int8) for name, k in CATEGORIES.items()
    }
    age = rng.normal(40, 13, n_rows).clip(17, 90)
    age[rng.random(n_rows) < 0.02] = np.nan
    hours = rng.normal(40, 12, n_rows).clip(1, 99)
    hours[rng.random(n_rows) < 0.03] = np.nan
    education = rng.integers(1, 17, n_rows).astype(np.int8)
    gain = rng.lognormal(2.0, 2.5, n_rows) * (rng.random(n_rows) < 0.1)
    fnlwgt = rng.lognormal(12, 0.5, n_rows)
    logit = (
        0.04 * (np.nan_to_num(age, nan=40) - 40)
        + 0.03 * (np.nan_to_num(hours, nan=40) - 40)
        + 0.25 * (education - 9)
        + 0.3 * np.log1p(gain)
        + 0.6 * (cols["sex"] == 1)
        + 0.15 * (cols["occupation"] % 5 - 2)
        - 0.4 * (cols["marital"] > 3)
        + rng.logistic(0, 1, n_rows)
    )
    cols.update(age=age, hours=hours, education=education, gain=gain, fnlwgt=fnlwgt)
    cols["income"] = (logit > 1.0).astype(np.int8)
    return pd.DataFrame(cols)


@hx.task(name="clean")
def clean_v1(df: pd.DataFrame) -> pd.DataFrame:
    df = df[df["age"].notna()].reset_index(drop=True)
    df["hours"] = df["hours"].fillna(df["hours"].median())
    df["gain"] = np.log1p(df["gain"].clip(upper=df["gain"].quantile(0.999)))
    return df


@hx.task(name="clean")
def clean_v2(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["age"] = df["age"].fillna(df["age"].median())
    df["hours"] = df["hours"].fillna(df["hours"].median()).clip(upper=80)
    df["gain"] = np.log1p(df["gain"].clip(upper=df["gain"].quantile(0.995)))
    low, high = df["fnlwgt"].quantile([0.01, 0.99])
    df["fnlwgt"] = df["fnlwgt"].clip(low, high)
    return df


@hx.task
def labels(df: pd.DataFrame) -> np.ndarray:
    return df["income"].to_numpy(dtype=np.int8)


def _one_hot(codes: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(codes), k), dtype=np.float32)
    out[np.arange(len(codes)), codes] = 1.0
    return out


def _buckets(values: np.ndarray, n: int) -> np.ndarray:
    edges = np.quantile(values, np.linspace(0, 1, n + 1)[1:-1])
    return np.searchsorted(edges, values).astype(np.int64)


@hx.task(name="featurize")
def featurize_v1(df: pd.DataFrame, n_buckets: int = 10) -> np.ndarray:
    blocks = [_one_hot(df[c].to_numpy(np.int64), k) for c, k in CATEGORIES.items()]
    blocks.append(_one_hot(_buckets(df["age"].to_numpy(), n_buckets), n_buckets))
    blocks.append(_one_hot(_buckets(df["hours"].to_numpy(), n_buckets), n_buckets))
    numeric = df[["education", "gain", "fnlwgt"]].to_numpy(np.float32)
    blocks.append(numeric)
    return np.hstack(blocks)


@hx.task(name="featurize")
def featurize_v2(df: pd.DataFrame, n_buckets: int = 10) -> np.ndarray:
    base = featurize_v1.func(df, n_buckets)
    sex = df["sex"].to_numpy(np.float32)[:, None]
    age = _one_hot(_buckets(df["age"].to_numpy(), n_buckets), n_buckets)
    occupation = _one_hot(df["occupation"].to_numpy(np.int64), CATEGORIES["occupation"])
    edu_hours = (df["education"].to_numpy(np.float32) * df["hours"].to_numpy(np.float32))[:, None]
    return np.hstack([base, age * sex, occupation * sex, edu_hours])


@hx.task
def scale(X: np.ndarray) -> np.ndarray:
    n_train = int(len(X) * (1 - TEST_FRACTION))
    mean = X[:n_train].mean(axis=0)
    std = X[:n_train].std(axis=0)
    return ((X - mean) / np.where(std > 0, std, 1)).astype(np.float32)


@hx.task(name="train")
def train_v1(X: np.ndarray, y: np.ndarray, C: float = 1.0, max_iter: int = 30):
    n_train = int(len(X) * (1 - TEST_FRACTION))
    model = LogisticRegression(C=C, max_iter=max_iter, tol=1e-6)
    return model.fit(X[:n_train], y[:n_train])


@hx.task(name="train")
def train_v2(X: np.ndarray, y: np.ndarray, C: float = 1.0, max_iter: int = 30):
    n_train = int(len(X) * (1 - TEST_FRACTION))
    model = LogisticRegression(C=C, max_iter=max_iter, tol=1e-6, class_weight="balanced")
    return model.fit(X[:n_train], y[:n_train])


@hx.task(name="evaluate", metrics=True)
def evaluate_v1(model, X: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> dict:
    n_train = int(len(X) * (1 - TEST_FRACTION))
    p = model.predict_proba(X[n_train:])[:, 1]
    return {"accuracy": float(accuracy_score(y[n_train:], p > threshold))}


@hx.task(name="evaluate", metrics=True)
def evaluate_v2(model, X: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> dict:
    n_train = int(len(X) * (1 - TEST_FRACTION))
    p = model.predict_proba(X[n_train:])[:, 1]
    return {
        "accuracy": float(accuracy_score(y[n_train:], p > threshold)),
        "log_loss": float(log_loss(y[n_train:], p)),
        "auc": float(roc_auc_score(y[n_train:], p)),
    }


@hx.task(name="evaluate", metrics=True)
def evaluate_v3(model, X: np.ndarray, y: np.ndarray, threshold: float = 0.5) -> dict:
    n_train = int(len(X) * (1 - TEST_FRACTION))
    p = model.predict_proba(X[n_train:])[:, 1]
    truth = y[n_train:]
    predicted = p > threshold
    positives = max(int(predicted.sum()), 1)
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "auc": float(roc_auc_score(truth, p)),
        "precision": float((predicted & (truth == 1)).sum() / positives),
        "recall": float((predicted & (truth == 1)).sum() / max(int(truth.sum()), 1)),
    }


def build(op: Op, p: Mapping[str, Any], size: Mapping[str, int]) -> Any:
    df = op("clean")(op("generate")(size["rows"], seed=0))
    X = op("scale")(op("featurize")(df, n_buckets=p["n_buckets"]))
    y = op("labels")(df)
    model = op("train")(X, y, C=p["C"], max_iter=size["max_iter"])
    return op("evaluate")(model, X, y, threshold=p["threshold"])


WORKFLOW = Workflow(
    name="tabular",
    title="Tabular classification (census-like)",
    sizes={
        "smoke": {"rows": 4_000, "max_iter": 10},
        "quick": {"rows": 100_000, "max_iter": 20},
        "full": {"rows": 200_000, "max_iter": 30},
        "large": {"rows": 1_000_000, "max_iter": 30},
        "paper": {"rows": 4_000_000, "max_iter": 30},
    },
    variants=variants(
        generate_v1,
        clean_v1,
        clean_v2,
        labels,
        featurize_v1,
        featurize_v2,
        scale,
        train_v1,
        train_v2,
        evaluate_v1,
        evaluate_v2,
        evaluate_v3,
    ),
    base=dict(
        generate="v1",
        clean="v1",
        labels="labels",
        featurize="v1",
        scale="scale",
        train="v1",
        evaluate="v1",
        n_buckets=10,
        C=1.0,
        threshold=0.5,
    ),
    iterations=(
        Iteration("first", "baseline"),
        Iteration("L/I", "regularization C=0.1", {"C": 0.1}),
        Iteration("PPR", "evaluate: add log-loss and AUC (code edit)", {"evaluate": "v2"}),
        Iteration("DPR", "20 quantile buckets", {"n_buckets": 20}),
        Iteration("L/I", "train: balanced class weights (code edit)", {"train": "v2"}),
        Iteration("PPR", "decision threshold 0.4", {"threshold": 0.4}),
        Iteration("DPR", "clean: impute age, cap hours, clip weights (code edit)", {"clean": "v2"}),
        Iteration("L/I", "regularization C=1.0", {"C": 1.0}),
        Iteration("PPR", "evaluate: precision and recall (code edit)", {"evaluate": "v3"}),
        Iteration("DPR", "featurize: interactions (code edit)", {"featurize": "v2"}),
    ),
    build=build,
)
