"""`dvc repro` end to end on a small embedded default, in a copy of the working tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO

BIN = Path(sys.executable).parent


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_DISABLE_TELEMETRY": "true", "TF_CPP_MIN_LOG_LEVEL": "2"}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    return res


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [f for f in out.splitlines() if (REPO / f).is_file()]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A copy of the working tree (what a clone would hold) with a small synthetic sample."""
    work = tmp_path_factory.mktemp("clone")
    for f in tracked_files():
        if f.startswith(("data/raw/", "data/validated/", "data/processed/", "reports/")):
            continue  # outputs of the pipeline: the run below must make them
        (work / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, work / f)
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["acquire"]["source"] = "synthetic"
    params["acquire"]["synthetic"]["n_stars"] = 400
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "init", "-q"], work)
    run(["dvc", "repro"], work)
    return work


def test_repro_writes_every_declared_output(workdir: Path):
    dvc = yaml.safe_load((workdir / "dvc.yaml").read_text())
    for name, stage in dvc["stages"].items():
        for out in stage.get("outs", []):
            path = out if isinstance(out, str) else next(iter(out))
            assert (workdir / path).exists(), f"stage {name} did not write {path}"
    stars = pd.read_parquet(workdir / "data/raw/stars.parquet")
    assert len(stars) == 400


def test_second_repro_has_nothing_to_do(workdir: Path):
    res = run(["dvc", "status"], workdir)
    assert "Data and pipelines are up to date" in res.stdout, res.stdout
    res = run(["dvc", "repro"], workdir)
    assert "Running stage" not in res.stdout, res.stdout


def test_metrics_are_readable_by_dvc(workdir: Path):
    res = run(["dvc", "metrics", "show", "--json"], workdir)
    assert "n_stars" in res.stdout
