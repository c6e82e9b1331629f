"""Text pipeline: corpus → tokenize → TF-IDF → TruncatedSVD → clustering and classifier → evaluate.

A generated corpus of topic-mixture documents over a synthetic vocabulary; stop-word removal
and an optional crude stemmer; TF-IDF; a truncated SVD; k-means and a logistic regression on
the SVD space; adjusted Rand index, NMI and held-out accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, adjusted_rand_score, normalized_mutual_info_score

import helix_dask as hx

from ._workflow import Iteration, Op, Workflow, variants

N_TOPICS = 20
SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "ta", "vo", "shi", "pe", "do", "ga", "zu")
SUFFIXES = ("", "", "", "s", "ing", "ed")
STOPWORDS = frozenset(f"stop{i}" for i in range(40))
TEST_FRACTION = 0.2


@hx.task(name="corpus")
def corpus_v1(n_docs: int, vocabulary: int = 4000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    stems = {"".join(rng.choice(SYLLABLES, rng.integers(2, 5))) for _ in range(vocabulary * 2)}
    stems = sorted(stems)[:vocabulary]
    words = np.array(
        [s + SUFFIXES[i % len(SUFFIXES)] for i, s in enumerate(stems)] + sorted(STOPWORDS)
    )
    n_words = len(words)
    topic_words = [rng.permutation(len(stems))[:400] for _ in range(N_TOPICS)]
    topic = rng.integers(0, N_TOPICS, n_docs)
    lengths = rng.integers(30, 70, n_docs)
    own = rng.random(lengths.sum()) < 0.2  # a fifth of the words come from the topic
    doc_of = np.repeat(np.arange(n_docs), lengths)
    table = np.stack(topic_words)
    idx = np.where(
        own,
        table[topic[doc_of], rng.integers(0, table.shape[1], len(doc_of))],
        rng.integers(0, n_words, len(doc_of)),
    )
    tokens = words[idx].tolist()
    ends = np.cumsum(lengths).tolist()
    docs = [" ".join(tokens[a:b]) for a, b in zip([0, *ends[:-1]], ends, strict=True)]
    return pd.DataFrame({"text": docs, "topic": topic.astype(np.int8)})


@hx.task
def topics(df: pd.DataFrame) -> np.ndarray:
    return df["topic"].to_numpy(np.int64)


@hx.task(name="tokenize")
def tokenize_v1(df: pd.DataFrame) -> list:
    return [" ".join(w for w in doc.split() if w not in STOPWORDS) for doc in df["text"]]


def _stem(word: str) -> str:
    for suffix in ("ing", "ed", "s"):
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            return word[: -len(suffix)]
    return word


@hx.task(name="tokenize")
def tokenize_v2(df: pd.DataFrame) -> list:
    return [" ".join(_stem(w) for w in doc.split() if w not in STOPWORDS) for doc in df["text"]]


@hx.task
def tfidf(docs: list, min_df: int = 5, sublinear: bool = False):
    vectorizer = TfidfVectorizer(
        tokenizer=str.split,
        token_pattern=None,
        lowercase=False,
        min_df=min_df,
        sublinear_tf=sublinear,
        dtype=np.float32,
    )
    return vectorizer.fit_transform(docs)


@hx.task
def svd(X, n_components: int = 100) -> np.ndarray:
    return TruncatedSVD(n_components, n_iter=4, random_state=0).fit_transform(X).astype(np.float32)


@hx.task
def cluster(Z: np.ndarray, k: int = N_TOPICS) -> np.ndarray:
    return KMeans(k, n_init=1, max_iter=50, random_state=0).fit_predict(Z)


@hx.task
def classify(Z: np.ndarray, y: np.ndarray, C: float = 1.0):
    n_train = int(len(Z) * (1 - TEST_FRACTION))
    return LogisticRegression(C=C, max_iter=100).fit(Z[:n_train], y[:n_train])


@hx.task(name="evaluate", metrics=True)
def evaluate_v1(clusters: np.ndarray, model, Z: np.ndarray, y: np.ndarray) -> dict:
    n_train = int(len(Z) * (1 - TEST_FRACTION))
    return {
        "ari": float(adjusted_rand_score(y, clusters)),
        "accuracy": float(accuracy_score(y[n_train:], model.predict(Z[n_train:]))),
    }


@hx.task(name="evaluate", metrics=True)
def evaluate_v2(clusters: np.ndarray, model, Z: np.ndarray, y: np.ndarray) -> dict:
    n_train = int(len(Z) * (1 - TEST_FRACTION))
    return {
        "ari": float(adjusted_rand_score(y, clusters)),
        "nmi": float(normalized_mutual_info_score(y, clusters)),
        "accuracy": float(accuracy_score(y[n_train:], model.predict(Z[n_train:]))),
    }


def build(op: Op, p: Mapping[str, Any], size: Mapping[str, int]) -> Any:
    df = op("corpus")(size["docs"], vocabulary=size["vocabulary"], seed=0)
    y = op("topics")(df)
    X = op("tfidf")(op("tokenize")(df), min_df=p["min_df"], sublinear=p["sublinear"])
    Z = op("svd")(X, n_components=p["n_components"])
    clusters = op("cluster")(Z, k=p["k"])
    model = op("classify")(Z, y, C=p["C"])
    return op("evaluate")(clusters, model, Z, y)


WORKFLOW = Workflow(
    name="text",
    title="Text pipeline (TF-IDF, SVD, clustering and a classifier)",
    sizes={
        # smoke: tests/test_benchmarks_smoke.py only; small, as its results are not timed
        "smoke": {"docs": 400, "vocabulary": 250},
        "quick": {"docs": 8_000, "vocabulary": 2000},
        "full": {"docs": 16_000, "vocabulary": 4000},
        "large": {"docs": 80_000, "vocabulary": 4000},
        "paper": {"docs": 200_000, "vocabulary": 4000},
    },
    variants=variants(
        corpus_v1,
        topics,
        tokenize_v1,
        tokenize_v2,
        tfidf,
        svd,
        cluster,
        classify,
        evaluate_v1,
        evaluate_v2,
    ),
    base=dict(
        corpus="v1",
        topics="topics",
        tokenize="v1",
        tfidf="tfidf",
        svd="svd",
        cluster="cluster",
        classify="classify",
        evaluate="v1",
        min_df=5,
        sublinear=False,
        n_components=60,
        k=N_TOPICS,
        C=1.0,
    ),
    iterations=(
        Iteration("first", "baseline"),
        Iteration("L/I", "classifier C=0.1", {"C": 0.1}),
        Iteration("PPR", "evaluate: add NMI (code edit)", {"evaluate": "v2"}),
        Iteration("DPR", "sublinear TF", {"sublinear": True}),
        Iteration("L/I", "k-means with 30 clusters", {"k": 30}),
        Iteration("DPR", "tokenize: stemming (code edit)", {"tokenize": "v2"}),
        Iteration("L/I", "classifier C=1.0", {"C": 1.0}),
        Iteration("DPR", "SVD with 80 components", {"n_components": 80}),
        Iteration("L/I", "k-means with 20 clusters", {"k": N_TOPICS}),
        Iteration("PPR", "evaluate: back to ARI and accuracy (code edit)", {"evaluate": "v1"}),
    ),
    build=build,
)
