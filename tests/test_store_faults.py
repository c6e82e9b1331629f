"""Fault injection on a real cluster with worker processes: a damaged store never yields a wrong
result. Each case stores a result, damages its artifact as a disk, an operator or an attacker
could, and runs again: the load notices, warns naming the artifact, recomputes the node in the
same run, and moves the artifact out, so the run after that does not meet it again."""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr
from conftest import CALL_LOG, Calls, log_call
from distributed import Client, LocalCluster

import helix_dask as hx
from helix_dask import HelixCorruptArtifact, HelixNode, HelixStoreError, Materialization, cli
from helix_dask._integrity import MANIFEST, digest_buffer, seal
from helix_dask.catalog import ArtifactRow, CatalogWriter
from helix_dask.store import ZarrArtifactStore

N = 4096
WORK = 0.05
"""Seconds each task takes: well above a load, so the second run plans to load its target."""


@dataclass
class Model:
    """A fitted-model stand-in: stored as a signed pickle (a Zarr array past 1 KiB, see
    _small_chunks; else one packed file)."""

    weights: list[float]
    name: str


@hx.task
def base(n: int) -> np.ndarray:
    log_call("base")
    time.sleep(WORK)
    return np.arange(n, dtype="float64")


@hx.task
def floats(x: np.ndarray) -> np.ndarray:
    log_call("floats")
    time.sleep(WORK)
    return x * 0.5  # float64: raw chunk files, several of them (see _small_chunks)


@hx.task
def ints(x: np.ndarray) -> np.ndarray:
    log_call("ints")
    time.sleep(WORK)
    return (x * 3).astype("int64")  # blosc-compressed chunks, read by Zarr


@hx.task
def model(x: np.ndarray) -> Model:
    log_call("model")
    time.sleep(WORK)
    return Model([float(v) for v in x[:256]], f"fit on {len(x)}")


@hx.task
def score(x: np.ndarray) -> Model:
    log_call("score")
    time.sleep(WORK)
    return Model([float(x.mean())], f"fit on {len(x)}")  # packed: one signed file


@hx.task
def frame(x: np.ndarray) -> pd.DataFrame:
    log_call("frame")
    time.sleep(WORK)
    return pd.DataFrame({"v": x[:64], "label": [f"row{i}" for i in range(64)]})


@hx.task
def summary(x: np.ndarray) -> dict:
    log_call("summary")
    time.sleep(WORK)
    return {"mean": float(x.mean()), "n": len(x)}  # packed: one JSON file


@hx.task
def parts(x: np.ndarray) -> dict:
    log_call("parts")
    time.sleep(WORK)
    return {"a": np.tile(x, 16), "b": np.tile(-x, 16)}  # a mapping, entry by entry


@hx.task(materialize=True)
def noise(rows: int) -> da.Array:
    log_call("noise")
    time.sleep(WORK)
    return da.random.default_rng(0).random((rows, 64), chunks=(64, 64))


TASKS = {"floats": floats, "ints": ints, "model": model, "frame": frame}
TASKS |= {"summary": summary, "parts": parts, "score": score}


def node(name: str, n: int = N) -> hx.HelixNode:
    return noise(n // 16) if name == "noise" else TASKS[name](base(n))


# -- what the damage is --------------------------------------------------------------------------


def artifact(store: Path, signature: str) -> Path:
    return store / "artifacts" / signature[:2] / signature


def chunks(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("c/**/*") if p.is_file())


def flip(file: Path, at: int = 0) -> None:
    data = bytearray(file.read_bytes())
    data[at % len(data)] ^= 0x01
    file.write_bytes(bytes(data))


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: len(file.read_bytes()) // 2])


def poison(path: Path, marker: Path, tag: str | None) -> None:
    """Replace the pickle by one that would create ``marker`` when unpickled; fix the
    checksums (they are no secret) and set the tag to ``tag``."""

    class Evil:
        def __reduce__(self) -> tuple:
            return (open, (str(marker), "w"))

    group = zarr.open_group(path, mode="r+", zarr_format=3)
    payload = np.frombuffer(pickle.dumps(Evil()), dtype=np.uint8)
    del group["data"]
    blosc = zarr.codecs.BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    group.create_array("data", data=payload, compressors=blosc)  # as helix writes pickles
    helix = dict(group.attrs["helix"])
    helix.pop("hmac")
    group.attrs["helix"] = helix if tag is None else {**helix, "hmac": tag}
    reseal(path)


def graft(path: Path, donor: Path) -> None:
    """Give the artifact the pickle and tag of another one, with checksums to match."""
    shutil.rmtree(path / "data")
    shutil.copytree(donor / "data", path / "data")
    group = zarr.open_group(path, mode="r+", zarr_format=3)
    tag = zarr.open_group(donor, mode="r", zarr_format=3).attrs["helix"]["hmac"]
    group.attrs["helix"] = {**group.attrs["helix"], "hmac": tag}
    reseal(path)


def reseal(path: Path) -> None:
    (path / MANIFEST).unlink()
    seal(path, path.name)


def edit_json(path: Path) -> None:
    document = json.loads((path / "data").read_text())
    document["d"]["n"] = 7  # valid, plausible, wrong
    (path / "data").write_text(json.dumps(document))


def poison_packed(path: Path, marker: Path, tag: str | None) -> None:
    """``poison`` for a packed artifact: the pickle is its ``data`` file, the tag in the
    manifest's attributes."""

    class Evil:
        def __reduce__(self) -> tuple:
            return (open, (str(marker), "w"))

    payload = pickle.dumps(Evil())
    manifest = json.loads((path / MANIFEST).read_bytes())
    manifest["files"]["data"] = list(digest_buffer(payload))
    manifest["attributes"].pop("hmac")
    if tag is not None:
        manifest["attributes"]["hmac"] = tag
    (path / "data").write_bytes(payload)
    (path / MANIFEST).write_text(json.dumps(manifest))


def unpickling_codec(path: Path) -> None:
    """Make the array's metadata name a codec that unpickles, with checksums to match."""
    document = json.loads((path / "data/zarr.json").read_text())
    document["codecs"].insert(0, {"name": "numcodecs.pickle", "configuration": {"protocol": 5}})
    (path / "data/zarr.json").write_text(json.dumps(document))
    reseal(path)


def swap(a: Path, b: Path) -> None:
    a.rename(a.with_name("swap"))
    b.rename(a)
    a.with_name("swap").rename(b)


Damage = Callable[[Path, Path], None]
"""(artifact directory, test directory) -> None."""

CASES: dict[str, tuple[str, Damage, str]] = {
    "raw-chunk-flipped": ("floats", lambda a, t: flip(chunks(a)[1], 100), "fails its checksum"),
    "raw-chunk-truncated": ("floats", lambda a, t: truncate(chunks(a)[2]), r"holds \d+ bytes"),
    "raw-chunk-deleted": ("floats", lambda a, t: chunks(a)[0].unlink(), "is missing"),
    "raw-chunk-grown": ("floats", lambda a, t: chunks(a)[3].open("ab").write(b"x"), "holds"),
    "array-metadata-deleted": ("floats", lambda a, t: (a / "data/zarr.json").unlink(), "missing"),
    "group-metadata-flipped": ("floats", lambda a, t: flip(a / "zarr.json", 40), "checksum"),
    "manifest-deleted": ("floats", lambda a, t: (a / MANIFEST).unlink(), "manifest .* missing"),
    "manifest-garbage": ("floats", lambda a, t: (a / MANIFEST).write_text("{"), "unreadable"),
    "artifact-emptied": ("floats", lambda a, t: [f.unlink() for f in chunks(a)], "missing"),
    "codec-that-unpickles": ("ints", lambda a, t: unpickling_codec(a), "codec|unusable"),
    "compressed-chunk-flipped": ("ints", lambda a, t: flip(chunks(a)[0], 50), "checksum"),
    "compressed-chunk-truncated": ("ints", lambda a, t: truncate(chunks(a)[0]), "holds"),
    "compressed-chunk-deleted": ("ints", lambda a, t: chunks(a)[0].unlink(), "is missing"),
    "pickle-flipped": ("model", lambda a, t: flip(chunks(a)[0], 30), "checksum"),
    "pickle-replaced-wrong-tag": (
        "model",
        lambda a, t: poison(a, t / "pwned", secrets.token_hex(32)),
        "not signed",
    ),
    "pickle-replaced-no-tag": ("model", lambda a, t: poison(a, t / "pwned", None), "not signed"),
    "frame-object-column-flipped": ("frame", lambda a, t: flip(chunks(a / "col1")[0]), "checksum"),
    "frame-labels-deleted": ("frame", lambda a, t: (a / "zarr.json").unlink(), "missing"),
    "json-value-edited": ("summary", lambda a, t: edit_json(a), "holds|checksum"),
    "packed-pickle-flipped": ("score", lambda a, t: flip(a / "data", 9), "checksum"),
    "packed-data-deleted": ("score", lambda a, t: (a / "data").unlink(), "is missing"),
    "packed-pickle-replaced-wrong-tag": (
        "score",
        lambda a, t: poison_packed(a, t / "pwned", secrets.token_hex(32)),
        "not signed",
    ),
    "packed-pickle-replaced-no-tag": (
        "score",
        lambda a, t: poison_packed(a, t / "pwned", None),
        "not signed",
    ),
    "packed-manifest-garbage": ("score", lambda a, t: (a / MANIFEST).write_text("{"), "unread"),
    "mapping-entry-metadata-deleted": ("parts", lambda a, t: (a / "1/zarr.json").unlink(), "miss"),
    "mapping-entry-chunk-flipped": ("parts", lambda a, t: flip(chunks(a / "0")[0], 8), "checksum"),
    "dask-chunk-deleted": ("noise", lambda a, t: chunks(a)[2].unlink(), "is missing"),
    "dask-chunk-truncated": ("noise", lambda a, t: truncate(chunks(a)[2]), "holds"),
}


# -- the cluster ---------------------------------------------------------------------------------


def _small_chunks() -> None:
    """Split stored arrays into 4 KiB chunks, so a raw array has several chunk files, and
    pack only values under 1 KiB, so the arrays and the model above are Zarr groups."""
    import helix_dask._codec_arrays
    import helix_dask._packed

    helix_dask._codec_arrays._CHUNK_BYTES = 4096
    helix_dask._packed.LIMIT = 1024  # type: ignore[misc]


def _log_calls_to(path: str) -> None:
    os.environ[CALL_LOG] = path


def _capture_warnings(path: str | None) -> None:
    """Send this worker's helix warnings to ``path`` (None: stop)."""
    logger = logging.getLogger("helix_dask")
    for handler in [h for h in logger.handlers if getattr(h, "helix_test", False)]:
        logger.removeHandler(handler)
        handler.close()
    if path is not None:
        handler = logging.FileHandler(path)
        handler.setLevel(logging.WARNING)
        handler.helix_test = True  # type: ignore[attr-defined]
        logger.addHandler(handler)


def _chunk_sizes(sizes: tuple[int, int] | None = None) -> tuple[int, int]:
    """This worker's chunk size and packing limit, set to ``sizes`` first when given."""
    import helix_dask._codec_arrays
    import helix_dask._packed

    if sizes is not None:
        helix_dask._codec_arrays._CHUNK_BYTES, helix_dask._packed.LIMIT = sizes  # type: ignore[misc]
    return helix_dask._codec_arrays._CHUNK_BYTES, helix_dask._packed.LIMIT


@pytest.fixture(scope="module")
def cluster_client(processes_cluster: LocalCluster) -> Iterator[Client]:
    """A client of the run's shared cluster of worker processes, whose workers store in small
    chunks while this module runs (see ``_small_chunks``)."""
    with Client(processes_cluster) as client:
        (defaults,) = set(client.run(_chunk_sizes).values())
        client.run(_small_chunks)
        try:
            yield client
        finally:
            # A test kills the workers: the next module finds both back, with the defaults.
            client.wait_for_workers(2, timeout=60)
            client.run(_chunk_sizes, defaults)


@dataclass
class Helix:
    client: Client
    store: Path
    warnings: Path
    calls: Calls
    identities: dict[str, str] = field(default_factory=dict)
    """Key -> the identity its artifact was stored under (its effective signature)."""

    def stored_as(self, n: HelixNode) -> str:
        return self.identities[n.key]

    def warned(self) -> str:
        text = self.warnings.read_text()
        self.warnings.write_text("")
        return text


@pytest.fixture
def helix(cluster_client: Client, calls: Calls, tmp_path: Path) -> Iterator[Helix]:
    client, warnings = cluster_client, tmp_path / "warnings.log"
    warnings.touch()
    hx.setup(client, store=tmp_path / "store", budget="1 GiB", policy="all")
    client.run(_log_calls_to, str(calls.path))
    client.run(_capture_warnings, str(warnings))
    try:
        yield Helix(client, tmp_path / "store", warnings, calls)
    finally:
        client.run(_capture_warnings, None)
        client.unregister_scheduler_plugin("helix")  # the next test installs its own


def assert_same(expected: object, got: object) -> None:
    assert type(got) is type(expected)
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(got, expected, check_exact=True)
    elif isinstance(expected, np.ndarray | da.Array):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
    elif isinstance(expected, dict) and any(isinstance(v, np.ndarray) for v in expected.values()):
        assert list(got) == list(expected)  # type: ignore[call-overload]
        for k in expected:
            np.testing.assert_array_equal(got[k], expected[k])  # type: ignore[index]
    else:
        assert got == expected


def store_once(h: Helix, name: str, n: int = N) -> object:
    """Run 1: compute ``name`` and store it; return its value (computed, so fresh)."""
    value = node(name, n).compute()
    h.identities.update((r.key, r.stored_as) for r in hx.last_run(h.client).nodes)
    h.calls.take()
    return value.compute() if isinstance(value, da.Array) else value


# -- the cases -----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_artifact_recomputes_in_the_same_run_and_is_not_met_again(
    helix: Helix, tmp_path: Path, case: str
) -> None:
    name, damage, reason = CASES[case]
    expected = store_once(helix, name)
    signature = helix.stored_as(node(name))
    damage(artifact(helix.store, signature), tmp_path)

    got = node(name).compute()
    assert hx.last_run(helix.client).loaded == [name]  # planned as a load...
    assert_same(expected, got.compute() if isinstance(got, da.Array) else got)
    assert helix.calls.take()[name] == 1  # ...and recomputed when the load found the damage
    warned = helix.warned()
    assert signature in warned
    assert any(signature in line and re.search(reason, line) for line in warned.splitlines())
    assert not (tmp_path / "pwned").exists()  # a replaced pickle is never unpickled

    again = node(name).compute()
    assert_same(expected, again.compute() if isinstance(again, da.Array) else again)
    assert helix.warned() == ""


def test_artifacts_swapped_between_signatures_are_both_recomputed(helix: Helix) -> None:
    expected = {n: store_once(helix, "floats", n) for n in (N, N + 64)}
    a, b = (artifact(helix.store, helix.stored_as(node("floats", n))) for n in expected)
    swap(a, b)  # each is whole and matches its own checksums, under the other's name
    for n, value in expected.items():
        assert_same(value, node("floats", n).compute())
        assert hx.last_run(helix.client).loaded == ["floats"]
        identity = helix.stored_as(node("floats", n))
        assert re.search(rf"{identity} .*manifest belongs to", helix.warned())
    assert helix.calls.take()["floats"] == 2
    for n, value in expected.items():
        assert_same(value, node("floats", n).compute())
    assert helix.warned() == ""


def test_pickle_with_another_artifacts_valid_tag_is_never_unpickled(helix: Helix) -> None:
    expected = store_once(helix, "model")
    store_once(helix, "model", N + 64)
    target = artifact(helix.store, helix.stored_as(node("model")))
    graft(target, artifact(helix.store, helix.stored_as(node("model", N + 64))))
    assert_same(expected, node("model").compute())  # not the other model
    assert "not signed with this store's key" in helix.warned()
    assert helix.calls.take()["model"] == 1
    assert_same(expected, node("model").compute())
    assert helix.warned() == ""


def test_flipped_chunk_of_a_lazily_loaded_dask_array_raises_the_typed_error_then_heals(
    helix: Helix,
) -> None:
    expected = store_once(helix, "noise")
    signature = helix.stored_as(node("noise"))
    flip(chunks(artifact(helix.store, signature))[2], 7)
    lazy = node("noise").compute()  # the load itself only checks sizes: chunks are read later
    # Workers read chunks in parallel: the first bad read quarantines the artifact, so another
    # read may find its chunk gone instead. Either way: the typed error, never wrong data.
    damaged = r"(fails its checksum|is missing)"
    with pytest.raises(HelixCorruptArtifact, match=rf"{signature} .*{damaged}"):
        lazy.compute()
    assert re.search(rf"{signature} .*{damaged}.*moved it to", helix.warned())
    healed = node("noise").compute()
    assert hx.last_run(helix.client).computed == ["noise"]
    assert_same(expected, healed.compute())
    assert helix.warned() == ""


# -- the store on its own: layout, permissions, leftovers, `helix verify` -------------------------

SIG = "0123456789abcdef0123456789abcdef"


def stored(root: Path, values: dict[str, object]) -> tuple[ZarrArtifactStore, CatalogWriter]:
    """A store holding ``values`` by signature, each with its catalog row."""
    store, catalog = ZarrArtifactStore(root), CatalogWriter(root)
    for signature, value in values.items():
        info = store.put(signature, value)
        now = time.time()
        row = ArtifactRow(
            signature, "t", info.location, info.kind, info.nbytes, 0.1, None, now, now
        )
        catalog.add_artifact(row)
    return store, catalog


@pytest.mark.parametrize("dtype", ["float64", "int32"])
def test_fortran_ordered_array_comes_back_fortran_ordered_and_equal(
    tmp_path: Path, dtype: str
) -> None:
    value = np.asfortranarray(np.arange(24, dtype=dtype).reshape(2, 3, 4))
    store = ZarrArtifactStore(tmp_path)
    store.put(SIG, value)
    got = store.get(SIG)
    assert got.flags.f_contiguous and not got.flags.c_contiguous
    np.testing.assert_array_equal(got, value)


def test_store_root_and_pickle_key_are_owner_only(tmp_path: Path) -> None:
    store = ZarrArtifactStore(tmp_path / "store")
    store.put(SIG, Model([1.0], "m"))
    modes = {p: (tmp_path / "store" / p).stat().st_mode & 0o777 for p in ("", "keys")}
    assert modes == {"": 0o700, "keys": 0o700}
    assert (tmp_path / "store" / "keys" / "pickle.key").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_store_path_that_is_a_file_names_the_setting(tmp_path: Path, where: str) -> None:
    (tmp_path / "f").touch()
    path = tmp_path / "f" if where == "a file" else tmp_path / "f" / "store"
    with pytest.raises(HelixStoreError, match=r"helix.store is '.*f.*', which is a file"):
        ZarrArtifactStore(path)
    with pytest.raises(HelixStoreError, match=r"helix.store is .* which is a file"):
        hx.Catalog(path)


def test_pickle_signed_with_another_key_is_never_unpickled(tmp_path: Path) -> None:
    store = ZarrArtifactStore(tmp_path / "store")
    with dask.config.set({"helix.key-file": str(tmp_path / "mine" / "key")}):
        store.put(SIG, Model([1.0], "m"))
        assert store.get(SIG) == Model([1.0], "m")
    assert not (tmp_path / "store" / "keys").exists()
    with dask.config.set({"helix.key-file": str(tmp_path / "theirs" / "key")}):
        with pytest.raises(HelixCorruptArtifact, match=r"pickle data is not signed"):
            store.get(SIG)
    assert not store.contains(SIG)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_temporaries_of_dead_writers_go_at_once_and_live_ones_stay(tmp_path: Path) -> None:
    store = ZarrArtifactStore(tmp_path)
    folder = tmp_path / "artifacts" / "01"
    host = socket.gethostname()
    dead = folder / f".tmp-{SIG}-{'d' * 32}-{_dead_pid()}@{host}"
    live = folder / f".tmp-{SIG}-{'e' * 32}-{os.getpid()}@{host}"
    trash = folder / f".tmp-{SIG}-{'f' * 32}-deleted"
    for path in (dead, live, trash):
        (path / "data").mkdir(parents=True)
    assert store.sweep_temporaries(older_than=3600) == 2
    assert [p.name for p in folder.iterdir()] == [live.name]


def test_plugin_start_and_gc_sweep_temporaries_of_killed_writers(tmp_path: Path) -> None:
    root = tmp_path / "store"
    stored(root, {})
    leftover = root / "artifacts" / "01" / f".tmp-{SIG}-{'d' * 32}-{_dead_pid()}@x"
    (leftover / "data").mkdir(parents=True)
    os.utime(leftover / "data", (0, 0))
    os.utime(leftover, (0, 0))
    assert cli.main(["gc", "--keep", "1", "--store", str(root)], out=io.StringIO()) == 0
    assert not leftover.exists()
    leftover = (
        root / "artifacts" / "01" / f".tmp-{SIG}-{'d' * 32}-{_dead_pid()}@{socket.gethostname()}"
    )
    (leftover / "data").mkdir(parents=True)
    with (
        LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        hx.setup(client, store=root, budget="1 GiB")
    assert not leftover.exists()


def test_helix_verify_reports_then_repairs_corrupt_artifacts_and_stale_rows(
    tmp_path: Path,
) -> None:
    good, bad, packed, gone = (f"{i:032x}" for i in range(4))
    big = Model([float(i) for i in range(50_000)], "big")  # a Zarr group, past the pack limit
    values = {good: np.arange(10.0), bad: big, packed: Model([1.0], "m"), gone: np.arange(3)}
    store, catalog = stored(tmp_path, values)
    flip(chunks(artifact(tmp_path, bad))[0], 5)
    flip(artifact(tmp_path, packed) / "data", 5)
    store.delete(gone)
    out = io.StringIO()
    assert cli.main(["verify", "--store", str(tmp_path)], out=out) == 2
    assert f"corrupt {bad}: file data/c/0 fails its checksum" in out.getvalue()
    assert f"corrupt {packed}: file data fails its checksum" in out.getvalue()
    assert f"no artifact for catalog row {gone}" in out.getvalue()
    assert store.contains(bad) and store.contains(packed)  # reported, not touched
    out = io.StringIO()
    assert cli.main(["verify", "--repair", "--store", str(tmp_path)], out=out) == 0
    assert f"quarantined {bad}" in out.getvalue() and f"quarantined {packed}" in out.getvalue()
    assert sorted(store.signatures()) == [good]
    assert [a.signature for a in catalog.artifacts()] == [good]
    assert cli.main(["verify", "--store", str(tmp_path)], out=io.StringIO()) == 0


class SlowToWrite:
    """A result whose pickling takes long enough to kill its worker in the middle."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __reduce__(self):
        time.sleep(2.0)
        return SlowToWrite, (self.n,)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlowToWrite) and other.n == self.n


@hx.task(name="slow_write", materialize=True)
def slow_write(n: int) -> SlowToWrite:
    log_call("slow_write")
    return SlowToWrite(n)


def _writing_pids(dask_worker) -> int:
    return os.getpid()


def _plugin_leftovers(dask_scheduler) -> dict:
    return dask_scheduler.plugins["helix"].leftovers()


def test_worker_killed_mid_write_releases_its_reservation_and_ends_the_run(
    helix: Helix,
) -> None:
    import signal

    fut = helix.client.compute(slow_write(3))  # not fetched: that would pickle it meanwhile
    deadline = time.monotonic() + 30
    while not list((helix.store / "artifacts").rglob(".tmp-*")):  # the write has begun
        assert time.monotonic() < deadline, "the write never started"
        time.sleep(0.05)
    for pid in helix.client.run(_writing_pids).values():
        os.kill(pid, signal.SIGKILL)  # the nanny starts a new worker
    del fut
    started = time.monotonic()
    run = hx.last_run(helix.client, timeout=60)
    assert time.monotonic() - started < 30, "the report waited for a write that cannot come"
    assert run.status == "done"
    assert run.node("slow_write").materialization is Materialization.FAILED
    assert "left while writing" in run.node("slow_write").reason
    left = helix.client.run_on_scheduler(_plugin_leftovers)
    assert left == {}  # no reservation, write or run outstanding: the budget is exact
    assert hx.Catalog(helix.store).artifacts() == []  # nothing partial was committed
    helix.client.wait_for_workers(2, timeout=60)
    helix.calls.take()
    assert slow_write(3).compute() == SlowToWrite(3)
    assert hx.last_run(helix.client).computed == ["slow_write"]
    helix.warned()


def test_a_key_handed_over_by_the_scheduler_replaces_the_key_file_until_withdrawn(
    tmp_path: Path,
) -> None:
    from helix_dask._keys import provide_key, withdraw_key

    store = ZarrArtifactStore(tmp_path / "store")
    theirs = bytes(range(32))
    provide_key(tmp_path / "store", theirs)
    provide_key(str(tmp_path / "store") + "/", theirs)  # a second worker of the same store
    try:
        store.put(SIG, Model([1.0], "m"))
        assert not (tmp_path / "store" / "keys").exists()  # no key file was made or read
        withdraw_key(tmp_path / "store")
        assert store.get(SIG) == Model([1.0], "m")  # still held by the other
    finally:
        withdraw_key(tmp_path / "store")
    with pytest.raises(HelixCorruptArtifact, match=r"pickle data is not signed"):
        store.get(SIG)  # the file's key, made now, is another
    with pytest.raises(HelixStoreError, match=r"not a key of at least 16 bytes"):
        provide_key(tmp_path / "store", b"short")


def test_sweeping_a_temporary_that_its_writer_commits_meanwhile_leaves_it_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # helix gc walks each temporary to see whether it is idle; a writer renaming it into
    # place (or removing it) during that walk must not fail the sweep.
    import helix_dask.store as store_module

    tmp = tmp_path / ".tmp-writing"
    (tmp / "c").mkdir(parents=True)
    walk = os.walk

    def committed_meanwhile(path, *args, **kwargs):
        for entry in walk(path, *args, **kwargs):
            shutil.rmtree(tmp, ignore_errors=True)  # renamed away by its writer
            yield entry

    monkeypatch.setattr(store_module.os, "walk", committed_meanwhile)
    assert store_module._idle(tmp, cutoff=time.time() + 60) is False
    assert store_module._idle(tmp_path / ".tmp-gone", cutoff=time.time() + 60) is False
