"""A library counts by its version and the files it installed.

A local package rebuilt, or a git install of another commit, often keeps its version; the
hashes its installer listed in ``RECORD`` change with its code, so the identity a node records
for the library changes too (statically, and as a verified run-time requirement)."""

from __future__ import annotations

import importlib
import os
import sys
import uuid
from pathlib import Path

import pytest

from helix_dask import _origin
from helix_dask._dependency_digests import dependency_digest


def _install(site: Path, name: str, module: str, version: str, code: str) -> None:
    """Install ``module`` as distribution ``name`` the way an installer leaves it: a fresh
    metadata directory, with RECORD listing the module's hash and the installer's own files."""
    import base64
    import hashlib

    for old in site.glob(f"{name}-*.dist-info"):
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    (site / module).mkdir(exist_ok=True)
    (site / module / "__init__.py").write_text(code)
    digest = base64.urlsafe_b64encode(hashlib.sha256(code.encode()).digest()).rstrip(b"=")
    meta = site / f"{name}-{version}.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (meta / "top_level.txt").write_text(f"{module}\n")
    (meta / "INSTALLER").write_text("pip\n")
    (meta / "direct_url.json").write_text(f'{{"url": "file:///build/{uuid.uuid4().hex}"}}')
    (meta / "RECORD").write_text(
        f"{module}/__init__.py,sha256={digest.decode()},{len(code)}\n"
        f"{meta.name}/INSTALLER,sha256=abc,4\n"
        f"{meta.name}/direct_url.json,sha256={uuid.uuid4().hex},40\n"
        f"{meta.name}/RECORD,,\n"
    )
    later = site.stat().st_mtime_ns + 10**9  # a tick later, however coarse the clock
    os.utime(site, ns=(later, later))
    importlib.invalidate_caches()
    sys.modules.pop(module, None)


def test_a_reinstall_under_the_same_version_is_another_identity(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"hxrecord{uuid.uuid4().hex[:8]}"
    module = name.replace("-", "_")
    monkeypatch.syspath_prepend(str(tmp_path))
    _install(tmp_path, name, module, "0.1", "def f():\n    return 1\n")
    first = dependency_digest(f"dist:{name}")
    assert first.startswith("0.1+files.")
    assert _origin.package_versions(module) == ((name, first),)
    # Reinstalled from another build directory with the same code: the same identity.
    _install(tmp_path, name, module, "0.1", "def f():\n    return 1\n")
    assert dependency_digest(f"dist:{name}") == first
    # Rebuilt with other code, version unchanged: another identity.
    _install(tmp_path, name, module, "0.1", "def f():\n    return 2\n")
    second = dependency_digest(f"dist:{name}")
    assert second.startswith("0.1+files.") and second != first
    _origin.package_versions.cache_clear()  # a new client process, as the next iteration is
    assert _origin.package_versions(module) == ((name, second),)
