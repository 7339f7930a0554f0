"""`make compare` / `rrlfeh compare`: the headline of the commit and of named DVC experiments side
by side in one screen, read from a real `dvc exp show` of a small DVC project; and the headline
itself, built from a run's report, sparse and register figures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from rrlfeh.headline import headline

from conftest import BIN, project_env, run

STAGE = '''stages:
  report:
    cmd: python make_headline.py
    deps: [make_headline.py]
    params: [scale]
    metrics:
      - reports/headline.json:
          cache: false
'''
MAKE = '''import json, pathlib, yaml
k = yaml.safe_load(open("params.yaml"))["scale"]
pathlib.Path("reports").mkdir(exist_ok=True)
json.dump({"model": f"rrl-feh v{k}", "RRab": {"test_rmse": 0.05 * k, "test_r2": 0.9},
           "RRc": {"skipped": "12 stars < tune.min_stars 50"}},
          open("reports/headline.json", "w"))
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("compare")
    (work / "dvc.yaml").write_text(STAGE)
    (work / "make_headline.py").write_text(MAKE)
    (work / "params.yaml").write_text("scale: 1\n")
    for cmd in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"]):
        run(cmd, work)
    run([str(BIN / "dvc"), "repro", "-q"], work)
    run(["git", "add", "-A"], work)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "a"],
        work)
    for name, scale in (("gaia-dr3", 2), ("dg22", 3)):
        run([str(BIN / "dvc"), "exp", "run", "-q", "-n", name, "-S", f"scale={scale}"], work)
    return work


def test_compare_shows_the_commit_and_each_experiment_in_one_screen(project: Path):
    res = subprocess.run([str(BIN / "rrlfeh"), "compare"], cwd=project, env=project_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    header = lines[0].split()
    assert header[0] == "figure" and {"gaia-dr3", "dg22"} <= set(header) and len(header) == 4
    rows = {line.split()[0] + " " + line.split()[1]: line.split()[2:] for line in lines[2:]
            if len(line.split()) > 2}
    col = {name: header.index(name) - 1 for name in header[1:]}
    assert rows["RRab test_rmse"][col["gaia-dr3"]] == "0.100"
    assert rows["RRab test_rmse"][col["dg22"]] == "0.150"
    assert max(map(len, lines)) <= 100 and len(lines) <= 40  # a screen
    figures = [line.split()[0] for line in lines[2:]]
    assert figures[0] == "model" and figures.index("RRab") < figures.index("RRc")


def test_headline_is_table1_the_line_sparse_and_the_version():
    report = {"RRab": {"n_train": 10, "n_test": 3, "coverage_test": {"within_1sigma": 0.7},
                       "served": {"oof_rmse": 0.11111, "oof_r2": 0.9, "test_rmse": 0.08,
                                  "test_r2": 0.96},
                       "relation": {"test_rmse": 0.081, "oof_rmse": 0.116}},
              "RRc": {"skipped": "13 stars < tune.min_stars 50"}, "scored": {"n": 5}}
    sparse = {"RRab": {"with_period": {
        "20": {"champion": {"rmse": 0.22}, "line": {"rmse": 0.4}},
        "25": {"champion": {"rmse": 0.2}, "line": {"rmse": 0.29}}}}}
    h = headline(report, sparse, {"model_name": "rrl-feh", "version": 4, "promoted": False,
                                  "champion_version": 2})
    assert h["model"] == "rrl-feh v2"  # not promoted: the champion still serves
    assert h["RRab"] == {"oof_rmse": 0.1111, "oof_r2": 0.9,
                         "test_rmse": 0.08, "test_r2": 0.96, "line_test_rmse": 0.081,
                         "test_1sigma": 0.7, "n20_rmse": 0.22, "n20_line_rmse": 0.4,
                         "n25_rmse": 0.2, "n25_line_rmse": 0.29}
    assert h["RRc"] == {"skipped": "13 stars < tune.min_stars 50"} and "scored" not in h
    json.dumps(h, allow_nan=False)
