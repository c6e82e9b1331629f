"""The artifact store: a contract every backend passes, then the Zarr backend's own promises."""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import zarr

import helix_dask._codec_arrays as arrays_module
import helix_dask._codecs as codecs_module
import helix_dask._packed as packed_module
import helix_dask._store_access as access_module
import helix_dask.store as store_module
from helix_dask._errors import HelixConfigError, HelixCorruptArtifact, HelixStoreError
from helix_dask._integrity import MANIFEST, digest_buffer
from helix_dask._store_access import load_artifact, write_artifact
from helix_dask._store_base import MISSING, ArtifactInfo, ArtifactStore
from helix_dask.store import ZarrArtifactStore

SIG = "0123456789abcdef0123456789abcdef"
UNPICKLABLE = r"cannot be pickled.*return a picklable value or mark the task materialize=False"


def sig(i: int) -> str:
    return f"{i:032x}"


@pytest.fixture
def zarr_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Store every value as a Zarr group, however small: no packed artifacts."""
    monkeypatch.setattr(packed_module, "LIMIT", -1)


@dataclass
class Point:
    """A plain user object: stored as a pickle."""

    x: int
    y: float


class ExplodesOnPickle:
    """Stands for a write that dies halfway (a full disk, a killed worker)."""

    def __reduce__(self) -> Any:
        raise RuntimeError("disk full (simulated)")


class Gate:
    """Holds up pickling until released, so a test can look at the store mid-write."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()

    def __reduce__(self) -> Any:
        self.reached.set()
        if not self.release.wait(10):
            raise TimeoutError("gate never released")
        return (Gate, ())


def assert_same(expected: Any, got: Any) -> None:
    """``got`` is exactly ``expected``: same types all the way down, floats bit for bit."""
    assert type(got) is type(expected)
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(got, expected, check_exact=True, check_flags=True)
    elif isinstance(expected, pd.Series):
        pd.testing.assert_series_equal(got, expected, check_exact=True)
    elif isinstance(expected, np.ma.MaskedArray):
        np.testing.assert_array_equal(got.mask, expected.mask)
        np.testing.assert_array_equal(got.data, expected.data)
    elif isinstance(expected, np.ndarray):
        assert (got.dtype, got.shape) == (expected.dtype, expected.shape)
        np.testing.assert_array_equal(got, expected)  # NaN and NaT compare equal here
        if expected.dtype.kind in "biufcmM":  # and native values are stored bit for bit
            assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(expected).tobytes()
    elif isinstance(expected, float):
        assert struct.pack(">d", got) == struct.pack(">d", expected)
    elif isinstance(expected, list | tuple):
        assert len(got) == len(expected)
        for e, g in zip(expected, got, strict=True):
            assert_same(e, g)
    elif isinstance(expected, dict):
        assert list(got) == list(expected)
        for key in expected:
            assert_same(expected[key], got[key])
    else:
        assert got == expected


rng = np.random.default_rng(0)
NAN_WITH_PAYLOAD = struct.unpack(">d", bytes.fromhex("7ff8000000000123"))[0]


def mixed_frame() -> pd.DataFrame:
    n = 6
    return pd.DataFrame(
        {
            "i": np.arange(n, dtype=np.int64) * 7,
            "f": [0.5, np.nan, -np.inf, 1e300, -0.0, 3.0],
            "b": [True, False] * 3,
            "t": pd.to_datetime(
                ["2024-01-01", None, "2024-03-01", "1970-01-01", "2262-04-11", "2001-09-09"]
            ).astype("datetime64[ns]"),
            "o": pd.Series(["a", None, "ccc", "", "é", "f"], dtype=object),
            "s": ["x", "y", None, "z", "x", "y"],
            "c": pd.Categorical(
                ["lo", "hi", "lo", None, "hi", "lo"], categories=["lo", "hi"], ordered=True
            ),
            "n": pd.array([1, None, 3, 4, None, 6], dtype="Int64"),
            "z": pd.date_range("2024-01-01", periods=n, freq="h", tz="Europe/Paris"),
        }
    )


# (make the value, the kind the store should pick)
CASES: list[Any] = [
    # ndarrays
    pytest.param(lambda: np.array(3.5), "ndarray", id="0d-float"),
    pytest.param(lambda: np.array(-7, dtype=np.int16), "ndarray", id="0d-int16"),
    pytest.param(lambda: np.empty(0, dtype=np.float32), "ndarray", id="empty-1d"),
    pytest.param(lambda: np.empty((0, 3), dtype=np.int64), "ndarray", id="empty-2d"),
    pytest.param(
        lambda: rng.standard_normal((40, 7)).astype(np.float32), "ndarray", id="2d-float32-C"
    ),
    pytest.param(
        lambda: np.asfortranarray(rng.standard_normal((40, 7)).astype(np.float32)),
        "ndarray",
        id="2d-float32-F",
    ),
    pytest.param(lambda: np.arange(-128, 128, dtype=np.int8), "ndarray", id="int8"),
    pytest.param(lambda: np.array([0, 2**64 - 1], dtype=np.uint64), "ndarray", id="uint64"),
    pytest.param(lambda: rng.random((3, 4, 5)) < 0.5, "ndarray", id="bool-3d"),
    pytest.param(lambda: np.array([1 + 2j, np.nan * 1j, -0.0]), "ndarray", id="complex128"),
    pytest.param(
        lambda: np.array([np.nan, np.inf, -np.inf, 0.0, -0.0]), "ndarray", id="float-nonfinite"
    ),
    pytest.param(lambda: np.arange(5, dtype=">f8"), "ndarray", id="big-endian"),
    pytest.param(
        lambda: np.array(["2024-01-01", "NaT"], dtype="datetime64[ns]"), "ndarray", id="datetime64"
    ),
    pytest.param(lambda: np.array([1, -2], dtype="timedelta64[ms]"), "ndarray", id="timedelta64"),
    pytest.param(
        lambda: np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")]),
        "pickle",
        id="structured-falls-back",
    ),
    pytest.param(lambda: np.array(["ab", "c"]), "pickle", id="unicode-falls-back"),
    pytest.param(lambda: np.array([1, "a", None], dtype=object), "pickle", id="object-falls-back"),
    pytest.param(
        lambda: np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]), "pickle", id="masked-falls-back"
    ),
    # pandas
    pytest.param(mixed_frame, "dataframe", id="frame-mixed-dtypes"),
    pytest.param(
        lambda: (
            mixed_frame()
            .set_index(pd.Index(list("abcdef"), name="row"))
            .rename_axis(columns="cols")
        ),
        "dataframe",
        id="frame-string-index",
    ),
    pytest.param(
        lambda: pd.DataFrame({"a": [1.5, np.nan]}, index=[10, 3]), "dataframe", id="frame-int-index"
    ),
    pytest.param(
        lambda: pd.DataFrame([[1, 2], [3, 4]], columns=["a", "a"]), "dataframe", id="frame-dup-cols"
    ),
    pytest.param(
        lambda: pd.DataFrame(
            np.arange(6).reshape(2, 3),
            columns=pd.MultiIndex.from_tuples([("a", 1), ("a", 2), ("b", 1)]),
        ),
        "dataframe",
        id="frame-multiindex-cols",
    ),
    pytest.param(lambda: pd.DataFrame(), "dataframe", id="frame-empty"),
    pytest.param(
        lambda: pd.DataFrame({"a": pd.Series([], dtype="int64")}), "dataframe", id="frame-no-rows"
    ),
    pytest.param(lambda: pd.Series([1.0, np.nan, 3.0], name="score"), "series", id="series-float"),
    pytest.param(
        lambda: pd.Series(
            pd.Categorical(["u", "v"]), index=pd.Index(["r1", "r2"], name="k"), name=("a", 1)
        ),
        "series",
        id="series-categorical-tuple-name",
    ),
    # JSON
    pytest.param(lambda: None, "none", id="none"),
    pytest.param(lambda: True, "json", id="bool"),
    pytest.param(lambda: 2**70, "json", id="big-int"),
    pytest.param(lambda: -0.0, "json", id="negative-zero"),
    pytest.param(lambda: float("nan"), "json", id="nan"),
    pytest.param(lambda: NAN_WITH_PAYLOAD, "json", id="nan-payload"),
    pytest.param(lambda: [float("inf"), -float("inf"), 0.1], "json", id="inf-list"),
    pytest.param(lambda: "héllo\n", "json", id="str"),
    pytest.param(lambda: (1, "a", 2.0, None), "json", id="tuple"),
    pytest.param(lambda: [True, 1, 1.0, [False, 0]], "json", id="bool-vs-int"),
    pytest.param(
        lambda: {"a": [1, {"b": (2, None)}], "t": [1], "d": {"f": "x"}, "": {}},
        "json",
        id="nested-with-tag-keys",
    ),
    # mappings: str-keyed dicts of arrays (at least 512 KiB of them per key), entry by entry
    pytest.param(
        lambda: {"X": rng.random((512, 256)), "y": np.arange(512)}, "mapping", id="dict-of-arrays"
    ),
    # pickle
    pytest.param(lambda: {1: "int keys"}, "pickle", id="dict-int-keys"),
    pytest.param(
        lambda: {"acc": np.float64(0.9), "p": Point(1, 2.0), "w": np.arange(3)},
        "pickle",
        id="dict-of-small-values",
    ),
    pytest.param(lambda: list(range(100_000)), "pickle", id="json-too-large"),
    pytest.param(lambda: np.float64(1.5), "pickle", id="numpy-scalar"),
    pytest.param(lambda: [np.array(2.5), 1], "pickle", id="list-with-0d-array"),
    pytest.param(lambda: Point(1, 2.5), "pickle", id="dataclass"),
    pytest.param(lambda: {1, 2, 3}, "pickle", id="set"),
    pytest.param(lambda: b"\x00bytes", "pickle", id="bytes"),
]


class ArtifactStoreContract:
    """What every ArtifactStore backend promises; a subclass supplies the ``store`` fixture."""

    @pytest.fixture
    def store(self) -> ArtifactStore:
        raise NotImplementedError("a backend's test class provides the store fixture")

    def temporaries(self, store: ArtifactStore) -> list[str]:
        """Leftovers of unfinished writes the backend can see; none unless a subclass says."""
        return []

    @pytest.mark.parametrize(("make", "kind"), CASES)
    def test_get_returns_exactly_what_put_stored(
        self, store: ArtifactStore, make: Callable[[], Any], kind: str
    ) -> None:
        value = make()
        info = store.put(SIG, value, name="task")
        assert isinstance(info, ArtifactInfo)
        assert (info.signature, info.kind) == (SIG, kind)
        assert info.nbytes == store.nbytes(SIG) > 0
        assert_same(value, store.get(SIG))
        assert_same(value, store.get(SIG))  # reading does not consume or alter the artifact

    def test_fitted_model_round_trips_with_same_predictions(self, store: ArtifactStore) -> None:
        from sklearn.datasets import make_classification
        from sklearn.linear_model import LogisticRegression

        x, y = make_classification(n_samples=200, n_features=5, random_state=0)
        model = LogisticRegression().fit(x, y)
        assert store.put(SIG, model, name="fit").kind == "pickle"
        loaded = store.get(SIG)
        assert type(loaded) is LogisticRegression
        np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
        np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))

    def test_dict_of_arrays_round_trips_with_dtypes_layouts_and_key_order(
        self, store: ArtifactStore
    ) -> None:
        value = {
            "X": rng.random((4096, 128)),
            "C": rng.standard_normal((64, 9)).astype(np.float32),
            "F": np.asfortranarray(rng.standard_normal((64, 9)).astype(np.float32)),
            "labels": np.arange(64, dtype=np.int64)[::-1].copy(),
            "mask": rng.random(64) < 0.5,
            "scale": np.array(2.5),
        }
        for iteration, keys in enumerate([list(value), list(value)[::-1]]):
            reordered = {key: value[key] for key in keys}
            assert store.put(sig(iteration), reordered, name="split").kind == "mapping"
            assert_same(reordered, store.get(sig(iteration)))  # key order included

    def test_mixed_dict_round_trips_with_a_fitted_model(self, store: ArtifactStore) -> None:
        from sklearn.datasets import make_classification
        from sklearn.linear_model import LogisticRegression

        x, y = make_classification(n_samples=200, n_features=5, random_state=0)
        value = {
            "X": rng.random((4096, 128)),
            "model": LogisticRegression().fit(x, y),
            "name": "baseline",
            "note": None,
            "cv": {"scores": rng.random((1024, 128)), "folds": 5},
            "params": {"C": 1.0, "penalty": "l2"},
            "frame": mixed_frame(),
        }
        assert store.put(SIG, value, name="train").kind == "mapping"
        loaded = store.get(SIG)
        assert type(loaded) is dict and list(loaded) == list(value)
        assert type(loaded["model"]) is LogisticRegression
        np.testing.assert_array_equal(
            loaded["model"].predict_proba(x), value["model"].predict_proba(x)
        )
        assert_same(
            {k: v for k, v in value.items() if k != "model"},
            {k: v for k, v in loaded.items() if k != "model"},
        )

    def test_dict_keys_may_be_any_str(self, store: ArtifactStore) -> None:
        keys = ["a/b", "/", "", ".", "..", "zarr.json", "c/0", "0", "日本語", "e\u0301", "\ud800"]
        value = {key: np.full(3, i) for i, key in enumerate(keys)}
        for iteration, x_first in enumerate([True, False]):
            x = {"X": rng.random(2**20)}
            entries = {**x, **value} if x_first else {**value, **x}
            assert store.put(sig(iteration), entries).kind == "mapping"
            assert_same(entries, store.get(sig(iteration)))

    def test_failed_dict_entry_commits_nothing(self, store: ArtifactStore) -> None:
        value = {"X": rng.random(2**17), "bad": ExplodesOnPickle()}
        with pytest.raises(HelixStoreError, match=r"RuntimeError: disk full \(simulated\)"):
            store.put(SIG, value)
        assert not store.contains(SIG)
        assert self.temporaries(store) == []

    def test_absent_signature_raises_key_error(self, store: ArtifactStore) -> None:
        with pytest.raises(KeyError, match=SIG):
            store.get(SIG)
        with pytest.raises(KeyError, match=SIG):
            store.nbytes(SIG)
        assert not store.contains(SIG)
        assert store.delete(SIG) == 0
        assert list(store.signatures()) == []

    def test_malformed_signature_is_rejected(self, store: ArtifactStore) -> None:
        for bad in ["../../etc/passwd", SIG.upper(), SIG[:-1], SIG + "0"]:
            with pytest.raises(HelixStoreError, match="is not 32 lowercase hex digits"):
                store.put(bad, 1)

    def test_second_put_keeps_the_first_committed_artifact(self, store: ArtifactStore) -> None:
        first = store.put(SIG, np.arange(3), name="v1")
        again = store.put(SIG, "something else", name="v2")
        assert (again.location, again.kind, again.nbytes) == (
            first.location,
            "ndarray",
            first.nbytes,
        )
        assert_same(np.arange(3), store.get(SIG))

    def test_concurrent_puts_of_one_signature_leave_one_valid_artifact(
        self, store: ArtifactStore
    ) -> None:
        frame = pd.DataFrame({"a": np.arange(50_000), "b": rng.random(50_000)})
        for iteration in range(3):
            signature, start = sig(iteration), threading.Barrier(4)
            infos: list[ArtifactInfo] = []

            def put(
                signature: str = signature,
                start: threading.Barrier = start,
                infos: list[ArtifactInfo] = infos,
            ) -> None:
                start.wait(timeout=10)
                infos.append(store.put(signature, frame))

            threads = [threading.Thread(target=put) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=30)
            assert len(infos) == 4
            assert {(i.location, i.kind, i.nbytes) for i in infos} == {
                (infos[0].location, "dataframe", infos[0].nbytes)
            }
            assert_same(frame, store.get(signature))
        assert sorted(store.signatures()) == [sig(0), sig(1), sig(2)]
        assert self.temporaries(store) == []

    def test_failed_write_commits_nothing_and_leaves_nothing(self, store: ArtifactStore) -> None:
        # The integer column is written before the object column fails to pickle.
        frame = pd.DataFrame(
            {"a": np.arange(3), "b": pd.Series([1, ExplodesOnPickle(), 3], dtype=object)}
        )
        with pytest.raises(HelixStoreError, match=r"RuntimeError: disk full \(simulated\)") as err:
            store.put(SIG, frame)
        assert isinstance(err.value.__cause__, RuntimeError)
        assert not store.contains(SIG)
        assert list(store.signatures()) == []
        assert self.temporaries(store) == []
        with pytest.raises(KeyError):
            store.get(SIG)
        store.put(SIG, frame.drop(columns="b"))  # the next iteration can write it
        assert_same(frame.drop(columns="b"), store.get(SIG))

    def test_reader_never_sees_half_written_artifact(self, store: ArtifactStore) -> None:
        gate = Gate()
        value = {"payload": np.arange(1000), "gate": gate}
        writer = threading.Thread(target=store.put, args=(SIG, value))
        writer.start()
        assert gate.reached.wait(10)
        try:
            assert not store.contains(SIG)
            assert list(store.signatures()) == []
            with pytest.raises(KeyError):
                store.get(SIG)
        finally:
            gate.release.set()
            writer.join(timeout=30)
        loaded = store.get(SIG)
        assert_same(value["payload"], loaded["payload"])
        assert type(loaded["gate"]) is Gate

    def test_delete_frees_bytes_and_forgets_signature(self, store: ArtifactStore) -> None:
        store.put(sig(1), np.arange(10_000))
        info = store.put(sig(2), rng.random(10_000))
        assert store.delete(sig(2)) == info.nbytes > 80_000
        assert not store.contains(sig(2))
        assert list(store.signatures()) == [sig(1)]
        assert store.delete(sig(2)) == 0
        with pytest.raises(KeyError):
            store.get(sig(2))

    def test_signatures_lists_committed_artifacts_only(self, store: ArtifactStore) -> None:
        for i in (3, 1, 2):
            store.put(sig(i), i)
        gate = Gate()
        writer = threading.Thread(target=store.put, args=(sig(4), gate))
        writer.start()
        assert gate.reached.wait(10)
        try:
            assert sorted(store.signatures()) == [sig(1), sig(2), sig(3)]
        finally:
            gate.release.set()
            writer.join(timeout=30)
        assert sorted(store.signatures()) == [sig(1), sig(2), sig(3), sig(4)]

    @pytest.mark.parametrize(
        ("make", "type_name"),
        [
            pytest.param(lambda: (i for i in range(3)), "generator", id="generator"),
            pytest.param(threading.Lock, "lock", id="lock"),
            pytest.param(lambda: [1, threading.Lock()], "list", id="lock-in-list"),
            pytest.param(
                lambda: {"X": rng.random(2**17), "lock": threading.Lock()},
                "lock",
                id="lock-in-dict-of-arrays",
            ),
        ],
    )
    def test_unpicklable_value_raises_store_error(
        self, store: ArtifactStore, make: Callable[[], Any], type_name: str
    ) -> None:
        with pytest.raises(HelixStoreError, match=rf"type \S*{type_name}\b.*{UNPICKLABLE}"):
            store.put(SIG, make())
        assert not store.contains(SIG)
        assert self.temporaries(store) == []

    def test_store_travels_to_workers_by_pickle(self, store: ArtifactStore) -> None:
        store.put(SIG, [1, 2])
        clone = pickle.loads(pickle.dumps(store))
        assert type(clone) is type(store)
        assert clone.get(SIG) == [1, 2]


class TestZarrArtifactStore(ArtifactStoreContract):
    """The Zarr layout, which small values leave for one packed file (see TestPackedArtifacts)."""

    @pytest.fixture
    def store(self, tmp_path: Path, zarr_layout: None) -> ZarrArtifactStore:
        return ZarrArtifactStore(tmp_path / "store")

    def temporaries(self, store: ArtifactStore) -> list[str]:
        assert isinstance(store, ZarrArtifactStore)
        return sorted(p.name for p in (store.root / "artifacts").glob("*/.tmp-*"))

    def test_artifact_is_a_zarr_v3_group_with_helix_attributes(
        self, store: ZarrArtifactStore
    ) -> None:
        info = store.put(SIG, np.arange(10, dtype=np.int32), name="featurize")
        assert info.location == f"artifacts/{SIG[:2]}/{SIG}"
        group = zarr.open_group(store.root / info.location, mode="r", zarr_format=3)
        helix = group.attrs["helix"]
        assert {k: helix[k] for k in ("kind", "type", "name", "format")} == {
            "kind": "ndarray",
            "type": "numpy.ndarray",
            "name": "featurize",
            "format": 1,
        }
        np.testing.assert_array_equal(group["data"][...], np.arange(10))

    def test_codecs_follow_dtype(self, store: ZarrArtifactStore) -> None:
        def compressors(value: np.ndarray, i: int) -> list[Any]:
            info = store.put(sig(i), value)
            return list(zarr.open_group(store.root / info.location, mode="r")["data"].compressors)

        assert compressors(rng.random(100), 1) == []  # floats do not compress: keep write speed
        [ints] = compressors(np.arange(100), 2)
        assert (ints.cname.value, ints.shuffle.value) == ("lz4", "shuffle")
        [bools] = compressors(np.zeros(100, dtype=bool), 3)
        assert (bools.cname.value, bools.shuffle.value) == ("lz4", "bitshuffle")

    def test_large_arrays_are_chunked_along_first_axis(
        self, store: ZarrArtifactStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(arrays_module, "_CHUNK_BYTES", 8 * 1024)
        value = rng.random((5000, 4))
        info = store.put(SIG, value)
        array = zarr.open_group(store.root / info.location, mode="r")["data"]
        assert array.chunks == (256, 4)
        assert_same(value, store.get(SIG))

    def test_crash_mid_write_leaves_no_artifact_and_no_temp_dir(
        self, store: ZarrArtifactStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        write_array, calls = codecs_module._write_array, []

        def dies_on_second_column(*args: Any) -> Any:
            calls.append(args[1])
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
            return write_array(*args)

        monkeypatch.setattr(codecs_module, "_write_array", dies_on_second_column)
        frame = pd.DataFrame({"a": [1, 2], "b": [3, 4], "c": [5, 6]})
        with pytest.raises(HelixStoreError, match=r"nothing was committed") as err:
            store.put(SIG, frame)
        assert "No space left on device" in str(err.value)
        assert calls == ["col0", "col1"]
        assert not store.contains(SIG)
        assert self.temporaries(store) == []
        assert list((store.root / "artifacts" / SIG[:2]).iterdir()) == []

    def test_losing_writer_discards_its_copy_and_returns_the_winner(
        self, store: ZarrArtifactStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Both writers finish their temporary copy before either renames: a true race.
        both_written, write_array = threading.Barrier(2), codecs_module._write_array

        def write_then_wait(*args: Any) -> Any:
            result = write_array(*args)
            both_written.wait(timeout=10)
            return result

        monkeypatch.setattr(codecs_module, "_write_array", write_then_wait)
        infos: list[ArtifactInfo] = []
        threads = [
            threading.Thread(target=lambda: infos.append(store.put(SIG, np.arange(100))))
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert len(infos) == 2 and infos[0].location == infos[1].location
        assert infos[0].nbytes == infos[1].nbytes == store.nbytes(SIG)
        assert self.temporaries(store) == []
        assert_same(np.arange(100), store.get(SIG))

    def test_corrupt_artifact_says_what_is_wrong_and_leaves_the_store(
        self, store: ZarrArtifactStore
    ) -> None:
        info = store.put(SIG, np.arange(4))
        metadata = store.root / info.location / "zarr.json"
        document = json.loads(metadata.read_text())
        document["attributes"] = {}
        metadata.write_text(json.dumps(document))
        with pytest.raises(HelixCorruptArtifact, match=rf"{SIG} .* zarr.json holds \d+ bytes"):
            store.get(SIG)
        assert not store.contains(SIG)
        assert [p.name[:32] for p in (store.root / "quarantine").iterdir()] == [SIG]
        store.put(SIG, np.arange(4))
        metadata.unlink()
        with pytest.raises(HelixCorruptArtifact, match=r"file zarr.json is missing"):
            store.get(SIG)
        store.put(SIG, np.arange(4))
        assert_same(np.arange(4), store.get(SIG))

    def test_sweep_removes_only_stale_temporaries(self, store: ZarrArtifactStore) -> None:
        folder = store.root / "artifacts" / "ab"
        stale, fresh = folder / f".tmp-{'ab' * 16}-old", folder / f".tmp-{'ab' * 16}-new"
        for path in (stale / "data", fresh / "data"):
            path.mkdir(parents=True)
        old = time.time() - 7200
        for path in (stale / "data", stale):
            os.utime(path, (old, old))
        store.put(SIG, 1)
        assert store.sweep_temporaries(older_than=3600) == 1
        assert self.temporaries(store) == [fresh.name]
        assert store.contains(SIG)
        assert store.sweep_temporaries(older_than=0) == 1
        with pytest.raises(HelixConfigError, match=r"older_than=-1 is negative"):
            store.sweep_temporaries(older_than=-1)

    def test_store_pickles_as_its_root_only(self, store: ZarrArtifactStore) -> None:
        reduced = store.__reduce__()
        assert reduced == (ZarrArtifactStore, (str(store.root),))

    def test_lambda_is_stored_with_cloudpickle(self, store: ZarrArtifactStore) -> None:
        pytest.importorskip("cloudpickle")
        offset = 3
        info = store.put(SIG, lambda x: x + offset)
        group = zarr.open_group(store.root / info.location, mode="r")
        assert group.attrs["helix"]["pickler"] == "cloudpickle"
        assert store.get(SIG)(1) == 4

    def test_dict_of_arrays_is_a_group_of_native_arrays(self, store: ZarrArtifactStore) -> None:
        value = {"X": rng.random((1024, 128)), "y": rng.random(1024)}
        info = store.put(SIG, value, name="split")
        assert info.kind == "mapping"
        group = zarr.open_group(store.root / info.location, mode="r")
        helix = group.attrs["helix"]
        assert (helix["type"], helix["keys"]) == ("builtins.dict", ["X", "y"])
        for i, array in enumerate(value.values()):
            entry = group[str(i)]
            assert entry.attrs["helix"]["kind"] == "ndarray"
            data = entry["data"]
            assert (data.dtype, data.shape, list(data.compressors)) == (
                np.float64,
                array.shape,
                [],
            )
            np.testing.assert_array_equal(data[...], array)
        with pytest.warns(zarr.errors.ZarrUserWarning, match="helix-manifest.json"):
            nodes = dict(group.members(max_depth=None))  # plain Zarr sees the manifest file
        assert sorted(nodes) == ["0", "0/data", "1", "1/data"]  # no pickle anywhere

    def test_dicts_nested_deeper_than_eight_are_pickled(
        self, store: ZarrArtifactStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(codecs_module, "_MAPPING_BYTES_PER_KEY", 0)  # small values suffice
        value: dict[str, Any] = {"leaf": np.arange(3)}
        for level in range(10):
            value = {"x": np.arange(level), "inner": value}
        info = store.put(SIG, value)
        group, kinds = zarr.open_group(store.root / info.location, mode="r"), []
        while True:
            kinds.append(group.attrs["helix"]["kind"])
            if kinds[-1] != "mapping":
                break
            assert group["0"].attrs["helix"]["kind"] == "ndarray"
            group = group["1"]
        assert kinds == ["mapping"] * 8 + ["pickle"]
        assert_same(value, store.get(SIG))

    def test_dask_array_in_a_dict_is_stored_chunk_wise_and_loaded_lazily(
        self, store: ZarrArtifactStore
    ) -> None:
        import dask.array as da

        value = {"x": da.arange(1000, chunks=100), "name": "noise"}
        info = store.put(SIG, value, scheduler="sync")
        assert info.kind == "mapping"
        group = zarr.open_group(store.root / info.location, mode="r")
        assert group["0"].attrs["helix"]["kind"] == "dask_array"
        assert group["0/data"].chunks == (100,)
        loaded = store.get(SIG)
        assert isinstance(loaded["x"], da.Array) and loaded["x"].chunks == ((100,) * 10,)
        np.testing.assert_array_equal(loaded["x"].compute(), np.arange(1000))
        assert loaded["name"] == "noise"

    def test_unpicklable_dict_entry_is_named_by_its_keys(self, store: ZarrArtifactStore) -> None:
        value = {"X": rng.random(2**17), "cv": {"s": rng.random(2**17), "lock": threading.Lock()}}
        with pytest.raises(
            HelixStoreError,
            match=r"cannot store the value at \['cv'\]\['lock'\] of type _thread\.lock: it "
            "cannot be pickled",
        ):
            store.put(SIG, value)
        assert self.temporaries(store) == []

    def test_worker_functions_share_one_store_per_root(self, tmp_path: Path) -> None:
        root = str(tmp_path / "store")
        info = write_artifact(root, SIG, {"k": (1, 2)}, name="task")
        assert info.kind == "json"
        assert load_artifact(root, SIG) == {"k": (1, 2)}
        assert access_module._STORES[root] is access_module._store_for(root)
        with pytest.raises(KeyError):
            load_artifact(root, sig(9))


class TestPackedArtifacts(ArtifactStoreContract):
    """Small values as one checked file beside the manifest; larger ones stay Zarr groups."""

    @pytest.fixture
    def store(self, tmp_path: Path) -> ZarrArtifactStore:
        return ZarrArtifactStore(tmp_path / "store")

    def temporaries(self, store: ArtifactStore) -> list[str]:
        assert isinstance(store, ZarrArtifactStore)
        return sorted(p.name for p in (store.root / "artifacts").glob("*/.tmp-*"))

    @staticmethod
    def files(store: ZarrArtifactStore, info: ArtifactInfo) -> list[str]:
        folder = store.root / info.location
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())

    @pytest.mark.parametrize(
        ("value", "kind"),
        [
            (None, "none"),
            ({"acc": 0.5}, "json"),
            (np.arange(5.0), "ndarray"),
            (Point(1, 2.0), "pickle"),
        ],
    )
    def test_small_value_is_one_data_file_and_its_manifest(
        self, store: ZarrArtifactStore, value: object, kind: str
    ) -> None:
        info = store.put(SIG, value, name="score")
        assert (info.kind, self.files(store, info)) == (kind, ["data", MANIFEST])
        assert info.nbytes == store.nbytes(SIG)
        manifest = json.loads((store.root / info.location / MANIFEST).read_bytes())
        helix = manifest["attributes"]
        assert (helix["layout"], helix["kind"], helix["name"]) == ("packed", kind, "score")
        assert ("hmac" in helix) == (kind in ("ndarray", "pickle"))
        assert store.verify(SIG) is None
        assert_same(value, store.get(SIG))

    def test_small_array_loads_writeable(self, store: ZarrArtifactStore) -> None:
        store.put(SIG, np.arange(6.0).reshape(2, 3))
        loaded = store.get(SIG)
        loaded[0, 0] = 9.0  # as a Zarr load: the caller owns the array
        assert loaded.flags.writeable and store.get(SIG)[0, 0] == 0.0

    @pytest.mark.parametrize(
        ("value", "kind"),
        [
            (np.zeros(packed_module.LIMIT // 8 + 1), "ndarray"),
            (list(range(packed_module.LIMIT // 2)), "pickle"),
            ({"big": b"x" * (packed_module.LIMIT + 1)}, "pickle"),
        ],
        ids=["array", "list", "dict-of-bytes"],
    )
    def test_values_past_the_limit_are_zarr_groups(
        self, store: ZarrArtifactStore, value: object, kind: str
    ) -> None:
        info = store.put(SIG, value)
        assert info.kind == kind and "zarr.json" in self.files(store, info)
        assert_same(value, store.get(SIG))

    def damage_cases() -> dict[str, tuple[object, Callable[[Path], None], str]]:  # type: ignore[misc]
        def flip(file: Path) -> None:
            data = bytearray(file.read_bytes())
            data[len(data) // 2] ^= 0x01
            file.write_bytes(bytes(data))

        def edit_manifest(folder: Path, **attributes: object) -> None:
            manifest = json.loads((folder / MANIFEST).read_bytes())
            manifest["attributes"].update(attributes)
            manifest["attributes"] = {k: v for k, v in manifest["attributes"].items() if v}
            (folder / MANIFEST).write_text(json.dumps(manifest))

        def replace_pickle(folder: Path) -> None:
            """An attacker's pickle with a checksum to match (checksums are no secret)."""
            payload = pickle.dumps(Point(666, 6.0))
            (folder / "data").write_bytes(payload)
            manifest = json.loads((folder / MANIFEST).read_bytes())
            manifest["files"]["data"] = list(digest_buffer(payload))
            (folder / MANIFEST).write_text(json.dumps(manifest))

        return {
            "json-flipped": ({"n": 12345}, lambda a: flip(a / "data"), "fails its checksum"),
            "pickle-flipped": (Point(1, 2.0), lambda a: flip(a / "data"), "fails its checksum"),
            "data-deleted": (Point(1, 2.0), lambda a: (a / "data").unlink(), "data is missing"),
            "data-grown": (5, lambda a: (a / "data").open("ab").write(b"0"), r"holds \d+ bytes"),
            "pickle-replaced": (Point(1, 2.0), replace_pickle, "not signed with this store's key"),
            "tag-dropped": (Point(1, 2.0), lambda a: edit_manifest(a, hmac=None), "not signed"),
            "pickle-read-as-json": (
                Point(1, 2.0),
                lambda a: edit_manifest(a, kind="json", pickler=None, hmac=None),
                "corrupt",
            ),
            "kind-unknown": (Point(1, 2.0), lambda a: edit_manifest(a, pickler=None), "not a pick"),
            "layout-dropped": (3, lambda a: edit_manifest(a, layout=None), "no layout"),
            "manifest-garbage": (3, lambda a: (a / MANIFEST).write_text("{"), "unreadable"),
        }

    DAMAGE = damage_cases()

    @pytest.mark.parametrize("case", list(DAMAGE))
    def test_damaged_packed_artifact_is_never_returned_and_leaves_the_store(
        self, store: ZarrArtifactStore, case: str
    ) -> None:
        value, damage, reason = self.DAMAGE[case]
        info = store.put(SIG, value)
        damage(store.root / info.location)
        assert isinstance(store.verify(SIG), HelixCorruptArtifact)  # found without unpickling
        with pytest.raises(HelixCorruptArtifact, match=rf"{SIG} .*{reason}"):
            store.get(SIG)
        assert not store.contains(SIG)
        assert [p.name[:32] for p in (store.root / "quarantine").iterdir()] == [SIG]
        store.put(SIG, value)
        assert_same(value, store.get(SIG))

    def test_artifact_deleted_while_it_is_read_is_absent_not_corrupt(
        self, store: ZarrArtifactStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store.put(SIG, Point(1, 2.0))
        read = packed_module.PackedValue.payload

        def evicted_meanwhile(self: packed_module.PackedValue) -> bytes:
            store.delete(SIG)  # another process's eviction, between the manifest and the data
            return read(self)

        monkeypatch.setattr(packed_module.PackedValue, "payload", evicted_meanwhile)
        with pytest.raises(KeyError):
            store.get(SIG)
        assert not (store.root / "quarantine").exists()  # nothing was called corrupt

    def test_pickle_from_another_artifact_with_its_tag_does_not_verify(
        self, store: ZarrArtifactStore
    ) -> None:
        mine, theirs = store.put(sig(1), Point(1, 2.0)), store.put(sig(2), Point(3, 4.0))
        for name in ("data", MANIFEST):
            (store.root / mine.location / name).write_bytes(
                (store.root / theirs.location / name).read_bytes()
            )
        manifest = json.loads((store.root / mine.location / MANIFEST).read_bytes())
        manifest["signature"] = sig(1)  # the whole of the other artifact, renamed
        (store.root / mine.location / MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(HelixCorruptArtifact, match=r"not signed with this store's key"):
            store.get(sig(1))
        assert_same(Point(3, 4.0), store.get(sig(2)))


def test_missing_is_a_singleton_distinct_from_none() -> None:
    assert MISSING is not None
    assert pickle.loads(pickle.dumps(MISSING)) is MISSING
    assert repr(MISSING) == "MISSING"


def test_pandas_is_imported_only_when_a_pandas_object_is_seen(tmp_path: Path) -> None:
    code = f"""
import sys
import numpy as np
import helix_dask.store as s
if "pandas" in sys.modules:
    print("preloaded")
    raise SystemExit
store = s.ZarrArtifactStore({str(tmp_path)!r})
for i, value in enumerate([np.arange(3), {{"a": 1}}, None, object]):
    store.put(f"{{i:032x}}", value)
    store.get(f"{{i:032x}}")
print("pandas" in sys.modules)
"""
    package_parent = str(Path(store_module.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_parent, *sys.path])}
    command = [sys.executable, "-W", "error", "-c", code]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    if done.stdout.strip() == "preloaded":
        pytest.skip("importing helix_dask already imports pandas; laziness cannot be observed")
    assert done.stdout.strip() == "False"


@pytest.mark.usefixtures("zarr_layout")
def test_raw_chunk_files_are_what_zarr_itself_reads_and_writes(tmp_path):
    """The direct chunk-file path and Zarr's own codec pipeline agree, both ways."""
    import zarr

    store = ZarrArtifactStore(tmp_path)
    sig = "c" * 32
    data = np.random.default_rng(3).random((1001, 7))
    store.put(sig, data)
    group = zarr.open_group(tmp_path / "artifacts" / sig[:2] / sig, mode="r")
    np.testing.assert_array_equal(group["data"][...], data)  # written raw, read by Zarr
    written_by_zarr = zarr.open_group(tmp_path / "by-zarr", mode="w", zarr_format=3)
    arr = written_by_zarr.create_array(
        "data", shape=data.shape, dtype=data.dtype, chunks=(300, 7), compressors=None
    )
    arr[...] = data
    from helix_dask._codec_raw import _read_raw

    np.testing.assert_array_equal(_read_raw(arr), data)  # written by Zarr, read raw


@pytest.mark.usefixtures("zarr_layout")
@pytest.mark.parametrize("dtype", ["float64", "complex128", "float32"])
@pytest.mark.parametrize("shape", [(0, 3), (5,), (1001, 7)])
def test_raw_arrays_load_exactly_into_page_aligned_memory(tmp_path, dtype, shape):
    # Uncompressed (floating-point) arrays are read from their chunk files directly, into
    # page-aligned memory: it fills from the page cache about 3x faster than np.empty's.
    store = ZarrArtifactStore(tmp_path)
    sig = "d" * 32
    data = (np.random.default_rng(4).random(shape) * 100).astype(dtype)
    store.put(sig, data)
    loaded = store.get(sig)
    assert loaded.dtype == data.dtype and loaded.shape == data.shape
    np.testing.assert_array_equal(loaded, data)
    assert loaded.flags.c_contiguous and loaded.flags.writeable
    if loaded.size:
        assert loaded.ctypes.data % 4096 == 0
