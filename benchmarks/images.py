"""MNIST-like image classification: augment → preprocess → kernel feature map → train → evaluate.

scikit-learn's bundled 8x8 digits, augmented with one-pixel shifts and noise to the requested
number of images; random Fourier features (RBFSampler) or a Nystroem map; a ridge or a linear
SGD classifier; accuracy on a fixed held-out fifth.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.kernel_approximation import Nystroem, RBFSampler
from sklearn.linear_model import RidgeClassifier, SGDClassifier
from sklearn.metrics import accuracy_score, f1_score

import helix_dask as hx

from ._workflow import Iteration, Op, Workflow, variants

TEST_FRACTION = 0.2


@hx.task(name="augment")
def augment_v1(n_images: int, noise: float = 1.0, seed: int = 0) -> np.ndarray:
    """Images as rows of 64 pixels (0..16) followed by the label, float32."""
    digits = load_digits()
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(digits.target), n_images)
    images = digits.images[pick].astype(np.float32)
    shifts = rng.integers(-1, 2, (n_images, 2))
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            sel = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            images[sel] = np.roll(images[sel], (dy, dx), axis=(1, 2))
    images += rng.normal(0, noise, images.shape).astype(np.float32)
    out = np.empty((n_images, 65), dtype=np.float32)
    out[:, :64] = images.reshape(n_images, 64).clip(0, 16)
    out[:, 64] = digits.target[pick]
    return out


@hx.task
def target(data: np.ndarray) -> np.ndarray:
    return data[:, 64].astype(np.int64)


@hx.task(name="preprocess")
def preprocess_v1(data: np.ndarray) -> np.ndarray:
    return data[:, :64] / 16.0


@hx.task(name="preprocess")
def preprocess_v2(data: np.ndarray) -> np.ndarray:
    """Normalize, then a 3x3 box blur (each pixel averaged with its neighbours)."""
    images = (data[:, :64] / 16.0).reshape(-1, 8, 8)
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1)), mode="edge")
    blurred = sum(padded[:, dy : dy + 8, dx : dx + 8] for dy in range(3) for dx in range(3)) / 9
    return (0.5 * images + 0.5 * blurred).reshape(-1, 64)


@hx.task(name="features")
def features_rff(X: np.ndarray, n_components: int = 500, gamma: float = 0.05) -> np.ndarray:
    rff = RBFSampler(n_components=n_components, gamma=gamma, random_state=0)
    return rff.fit_transform(X).astype(np.float32)


@hx.task(name="features")
def features_nystroem(X: np.ndarray, n_components: int = 500, gamma: float = 0.05) -> np.ndarray:
    n_train = int(len(X) * (1 - TEST_FRACTION))
    nys = Nystroem(gamma=gamma, n_components=n_components, random_state=0).fit(X[:n_train])
    return nys.transform(X).astype(np.float32)


@hx.task(name="train")
def train_ridge(F: np.ndarray, y: np.ndarray, alpha: float = 1.0):
    n_train = int(len(F) * (1 - TEST_FRACTION))
    return RidgeClassifier(alpha=alpha).fit(F[:n_train], y[:n_train])


@hx.task(name="train")
def train_sgd(F: np.ndarray, y: np.ndarray, alpha: float = 1.0):
    n_train = int(len(F) * (1 - TEST_FRACTION))
    model = SGDClassifier(alpha=alpha * 1e-5, max_iter=5, tol=None, random_state=0)
    return model.fit(F[:n_train], y[:n_train])


@hx.task(name="evaluate", metrics=True)
def evaluate_v1(model, F: np.ndarray, y: np.ndarray) -> dict:
    n_train = int(len(F) * (1 - TEST_FRACTION))
    return {"accuracy": float(accuracy_score(y[n_train:], model.predict(F[n_train:])))}


@hx.task(name="evaluate", metrics=True)
def evaluate_v2(model, F: np.ndarray, y: np.ndarray) -> dict:
    n_train = int(len(F) * (1 - TEST_FRACTION))
    predicted = model.predict(F[n_train:])
    per_class = [float((predicted[y[n_train:] == c] == c).mean()) for c in range(10)]
    return {
        "accuracy": float(accuracy_score(y[n_train:], predicted)),
        "macro_f1": float(f1_score(y[n_train:], predicted, average="macro")),
        "worst_class_accuracy": min(per_class),
    }


def build(op: Op, p: Mapping[str, Any], size: Mapping[str, int]) -> Any:
    data = op("augment")(size["images"], noise=p["noise"], seed=0)
    y = op("target")(data)
    F = op("features")(op("preprocess")(data), n_components=size["components"], gamma=p["gamma"])
    model = op("train")(F, y, alpha=p["alpha"])
    return op("evaluate")(model, F, y)


WORKFLOW = Workflow(
    name="images",
    title="Image classification (MNIST-like digits)",
    sizes={
        # smoke: tests/test_benchmarks_smoke.py only; small, as its results are not timed
        "smoke": {"images": 500, "components": 30},
        "quick": {"images": 20_000, "components": 300},
        "full": {"images": 30_000, "components": 500},
        "large": {"images": 100_000, "components": 800},
        "paper": {"images": 400_000, "components": 800},
    },
    variants=variants(
        augment_v1,
        target,
        preprocess_v1,
        preprocess_v2,
        features_rff,
        features_nystroem,
        train_ridge,
        train_sgd,
        evaluate_v1,
        evaluate_v2,
    ),
    base=dict(
        augment="v1",
        target="target",
        preprocess="v1",
        features="rff",
        train="ridge",
        evaluate="v1",
        noise=1.0,
        gamma=0.05,
        alpha=1.0,
    ),
    iterations=(
        Iteration("first", "baseline"),
        Iteration("L/I", "ridge alpha=10", {"alpha": 10.0}),
        Iteration("PPR", "evaluate: macro-F1 and worst class (code edit)", {"evaluate": "v2"}),
        Iteration("DPR", "preprocess: blur (code edit)", {"preprocess": "v2"}),
        Iteration("L/I", "train: linear SGD classifier (code edit)", {"train": "sgd"}),
        Iteration("DPR", "kernel width gamma=0.03", {"gamma": 0.03}),
        Iteration("L/I", "train: back to ridge (code edit)", {"train": "ridge"}),
        Iteration("DPR", "features: Nystroem map (code edit)", {"features": "nystroem"}),
        Iteration("L/I", "ridge alpha=1", {"alpha": 1.0}),
        Iteration("DPR", "augment: noise 1.5", {"noise": 1.5}),
    ),
    build=build,
)
