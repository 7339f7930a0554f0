"""Data versioning round trip: `dvc push` to a local remote, a fresh `git clone`, `dvc pull`
restores every output of dvc.lock byte for byte, and `dvc repro` then has nothing to do."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from conftest import run

pytestmark = pytest.mark.slow

GIT = ["git", "-c", "user.name=test", "-c", "user.email=test@example.org"]


def locked_outputs(project: Path) -> list[str]:
    """Every output path that dvc.lock records: cached ones come back by `dvc pull`, those with
    cache: false (metrics, the report page) by git."""
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    return [o["path"] for stage in lock["stages"].values() for o in stage.get("outs", [])]


def file_digests(root: Path, rel: str) -> dict[str, str]:
    """md5 of every file under root/rel (one file or a folder), keyed by its relative path."""
    path = root / rel
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(f.relative_to(root)): hashlib.md5(f.read_bytes()).hexdigest() for f in files}


def test_push_clone_pull_then_repro_has_nothing_to_do(pipeline_project, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(pipeline_project, source, symlinks=True)
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "local", str(remote)], source)
    run(["git", "add", "-A"], source)
    run([*GIT, "commit", "-qm", "pipeline outputs of dvc repro"], source)
    run(["dvc", "push"], source)
    assert any(p.is_file() for p in remote.rglob("*")), "dvc push wrote nothing to the remote"

    outs = locked_outputs(source)
    assert {"data/raw/epochs.parquet", "data/processed/RRab.npz", "models/final",
            "data/scored/catalogue.parquet"} <= set(outs)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(source), str(clone)], tmp_path)
    assert not (clone / "data/raw/epochs.parquet").exists(), "an output reached git"
    run(["dvc", "pull"], clone)

    for out in outs:
        want, got = file_digests(source, out), file_digests(clone, out)
        assert want, f"{out}: nothing in the source project"
        assert got == want, f"{out}: dvc pull did not restore the same files"

    status = run(["dvc", "status"], clone)
    assert "up to date" in status.stdout, status.stdout
    repro = run(["dvc", "repro"], clone)
    assert "Running stage" not in repro.stdout, repro.stdout
    assert "up to date" in repro.stdout, repro.stdout
    assert run(["git", "status", "--porcelain"], clone).stdout == ""
