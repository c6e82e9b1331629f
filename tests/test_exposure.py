"""What helix writes down and serves: argument values that look like secrets never are."""

from __future__ import annotations

from pathlib import Path

import dask
import pytest

import helix_dask as hx
from helix_dask.catalog import CatalogWriter


@hx.task
def fetch(url: str, api_key: str, retries: int = 3) -> str:
    return f"{url}:{len(api_key)}:{retries}"


def test_secret_looking_arguments_are_redacted_in_the_catalog_but_still_signed(
    threaded_client, tmp_path
):
    assert fetch("u", api_key="s3cr3t-value").compute() == "u:12:3"
    run = hx.last_run(threaded_client)
    assert run.node("fetch").arg_values == {
        "url": "'u'",
        "api_key": "<redacted>",
        "retries": "3",
    }
    catalog_bytes = b"".join(p.read_bytes() for p in (tmp_path / "store").glob("catalog*"))
    assert b"s3cr3t-value" not in catalog_bytes
    # The value still decides reuse: another key is another result.
    assert fetch("u", api_key="other").signature != fetch("u", api_key="s3cr3t-value").signature


@pytest.mark.parametrize(("mode", "expected"), [("all", "<redacted>"), ("none", "'u'")])
def test_redaction_can_cover_every_argument_or_none(mode, expected):
    with dask.config.set({"helix.redact": mode}):
        assert fetch("u", api_key="k").meta.arg_values["url"] == expected


def test_the_catalog_and_its_journal_files_are_owner_only_even_when_made_before(
    tmp_path: Path,
) -> None:
    loose = tmp_path / "old"
    loose.mkdir(mode=0o700)
    (loose / "catalog.sqlite").touch(mode=0o644)  # made by a version that did not care
    for root in (tmp_path / "new", loose):
        cat = CatalogWriter(root)
        try:
            cat.begin_version("w", "", [])
            files = sorted(root.glob("catalog.sqlite*"))
            assert [f.name for f in files] == [
                "catalog.sqlite",
                "catalog.sqlite-shm",
                "catalog.sqlite-wal",
            ]
            assert {oct(f.stat().st_mode & 0o777) for f in files} == {"0o600"}
        finally:
            cat.close()
