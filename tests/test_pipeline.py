"""`dvc repro` end to end on a small embedded default, in a copy of the working tree: data
stages, then tune -> crossval -> train on the tiny budget, tracked in the project's MLflow store."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import BIN, project_env, run


@pytest.fixture(scope="module")
def workdir(pipeline_project: Path) -> Path:
    """The session's tiny `dvc repro` project (tests/conftest.py); read-only here."""
    return pipeline_project


def test_repro_writes_every_declared_output(workdir: Path):
    dvc = yaml.safe_load((workdir / "dvc.yaml").read_text())
    params = yaml.safe_load((workdir / "params.yaml").read_text())

    def resolve(path: str) -> str:  # ${section.key} templating from params.yaml
        import re

        def value(m):
            v = params
            for part in m.group(1).split("."):
                v = v[part]
            return str(v)
        return re.sub(r"\$\{([^}]+)\}", value, path)

    for name, stage in dvc["stages"].items():
        for out in stage.get("outs", []):
            path = resolve(out if isinstance(out, str) else next(iter(out)))
            assert (workdir / path).exists(), f"stage {name} did not write {path}"
    stars = pd.read_parquet(workdir / "data/raw/stars.parquet")
    assert len(stars) == 400


def test_second_repro_has_nothing_to_do(workdir: Path):
    res = run(["dvc", "status"], workdir)
    assert "Data and pipelines are up to date" in res.stdout, res.stdout
    res = run(["dvc", "repro"], workdir)
    assert "Running stage" not in res.stdout, res.stdout


def test_dvc_metrics_are_the_headline_alone(workdir: Path):
    """`dvc metrics show` reads one file, the run's headline, in lines a terminal can show; the
    stages' own figures stay in their reports (DVC outputs, in git)."""
    res = run(["dvc", "metrics", "show", "--json"], workdir)
    files = {f for v in json.loads(res.stdout).values() for f in v["data"]}
    assert files == {"reports/headline.json"}
    shown = run(["dvc", "metrics", "show"], workdir).stdout
    assert max(map(len, shown.splitlines())) < 450, shown[:800]  # it was 6,827 characters
    assert "RRab.test_rmse" in shown and "RRc.n25_rmse" in shown


def runs_of(workdir: Path):
    """All runs of the project's MLflow store (SQLite inside the project), as a DataFrame."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["rrlfeh"], max_results=10_000)


def children(runs, parent_id: str):
    return runs[runs["tags.mlflow.parentRunId"] == parent_id]


def test_tracking_store_lives_in_the_project_and_is_git_ignored(workdir: Path):
    assert (workdir / "mlflow.db").is_file() and (workdir / "mlartifacts").is_dir()
    res = run(["git", "check-ignore", "mlflow.db", "mlartifacts"], workdir)
    assert res.stdout.split() == ["mlflow.db", "mlartifacts"]


def test_every_hyperband_trial_is_a_nested_run_with_metrics(workdir: Path):
    best = json.loads((workdir / "models/best_hparams.json").read_text())
    runs = runs_of(workdir)
    for kind in ("RRab", "RRc"):
        parent = runs[runs["tags.mlflow.runName"] == f"tune {kind}"]
        assert len(parent) == 1 and parent["status"].item() == "FINISHED"
        assert parent["tags.mlflow.source.git.commit"].notna().all()
        assert parent["params.budget.name"].item() == "tiny"
        assert parent["params.tune.space.learning_rate"].item() == "[0.001, 0.01, 0.1]"
        trials = children(runs, parent["run_id"].item())
        assert len(trials) == best[kind]["n_trials"] == 2  # hyperband_budget(2, 3)
        assert trials["metrics.best_val_loss"].notna().all()
        assert trials["metrics.val_r2"].notna().all()
        assert trials["params.learning_rate"].isin(["0.001", "0.01", "0.1"]).all()
        assert trials["params.batch_size"].notna().all()
        # per-epoch losses of a trial are a metric series
        history = mlflow_history(workdir, trials["run_id"].iloc[-1], "val_loss")
        assert len(history) >= 1
        assert best[kind]["network"]["learning_rate"] in (0.001, 0.01, 0.1)


def mlflow_history(workdir: Path, run_id: str, key: str) -> list[float]:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    return [m.value for m in client.get_metric_history(run_id, key)]


def test_every_fold_is_a_nested_run_with_learning_curves(workdir: Path):
    runs = runs_of(workdir)
    for kind in ("RRab", "RRc"):
        parent = runs[runs["tags.mlflow.runName"] == f"crossval {kind}"]
        assert len(parent) == 1
        for stat in ("mean", "std"):
            assert parent[f"metrics.val_r2_{stat}"].notna().all()
        folds = children(runs, parent["run_id"].item())
        assert len(folds) == 4  # tiny budget: 2 splits x 2 repeats
        assert sorted(zip(folds["tags.repeat"], folds["tags.fold"], strict=True)) == [
            ("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
        for col in ("val_r2", "val_wrmse", "val_wmae", "val_rmse", "val_mae", "train_r2",
                    "best_epoch"):
            assert folds[f"metrics.{col}"].notna().all(), col
        for run_id, epochs in zip(folds["run_id"], folds["metrics.epochs_run"], strict=True):
            assert len(mlflow_history(workdir, run_id, "loss")) == int(epochs)
            assert len(mlflow_history(workdir, run_id, "stop_loss")) == int(epochs)


def test_headline_is_the_reports_table1_and_the_champion(workdir: Path):
    head = json.loads((workdir / "reports/headline.json").read_text())
    report = json.loads((workdir / "reports/report.json").read_text())
    sparse = json.loads((workdir / "reports/sparse.json").read_text())
    register = json.loads((workdir / "reports/register.json").read_text())
    assert head["model"] == f"rrl-feh v{register['version']}"  # the first run promotes
    for kind in ("RRab", "RRc"):
        served = report[kind]["served"]
        assert head[kind]["test_rmse"] == pytest.approx(served["test_rmse"], abs=1e-4)
        assert head[kind]["oof_r2"] == pytest.approx(served["oof_r2"], abs=1e-4)
        assert head[kind]["line_test_rmse"] == pytest.approx(
            report[kind]["relation"]["test_rmse"], abs=1e-4)
        assert head[kind]["n25_line_rmse"] == pytest.approx(
            sparse[kind]["with_period"]["25"]["line"]["rmse"], abs=1e-4)
    cv = json.loads((workdir / "reports/crossval.json").read_text())  # Table 1 in full
    for kind in ("RRab", "RRc"):
        for part in ("train", "val"):
            assert set(cv[kind][part]) == {"r2", "wrmse", "wmae", "rmse", "mae"}
            assert all(set(v) == {"mean", "std"} for v in cv[kind][part].values())


def test_crossval_figures_are_dvc_plots(workdir: Path):
    for kind in ("RRab", "RRc"):
        for name in ("learning_curves", "true_vs_predicted", "residuals_vs_epochs"):
            assert (workdir / f"reports/figures/{kind}_{name}.png").stat().st_size > 1000


def test_final_model_is_the_fold_ensemble_with_a_spread(workdir: Path):
    from rrlfeh.training.arrays import load_training_set
    from rrlfeh.training.ensemble import Ensemble

    for kind in ("RRab", "RRc"):
        ens = Ensemble.load(workdir / "models/final" / kind)
        assert len(ens.models) == 4 and ens.manifest["strategy"] == "ensemble"
        data = load_training_set(workdir / f"data/processed/{kind}.npz", kind)
        mean, spread = ens.predict(data.X[:20])
        members = ens.member_predictions(data.X[:20])
        assert np.allclose(mean, members.mean(axis=0)) and (spread > 0).all()
    train = json.loads((workdir / "reports/train.json").read_text())
    assert train["RRab"]["n_members"] == 4


def test_copies_epochs_are_kept_and_scored_without_a_period(workdir: Path):
    """preprocess writes every kept sparse copy's epochs (a subset of its star's clean ones);
    train scores the calibration curves, copies included, with and without their period."""
    from rrlfeh.training.arrays import load_training_set

    copies = pd.read_parquet(workdir / "data/processed/copies.parquet")
    raw = pd.read_parquet(workdir / "data/raw/epochs.parquet")
    clean = raw.loc[~raw["rejected"], ["source_id", "transit_id"]]
    for kind in ("RRab", "RRc"):
        data = load_training_set(workdir / f"data/processed/{kind}.npz", kind)
        made = {(int(s), int(k)) for s, k in zip(data.source_id[data.is_copy],
                                                 data.copy[data.is_copy], strict=True)}
        mine = copies[copies["source_id"].isin(data.source_id)]
        assert set(zip(mine["source_id"], mine["copy"], strict=True)) == made and made
        eb = json.loads((workdir / f"models/final/{kind}/manifest.json").read_text())[
            "error_bins"]
        assert 0 < eb["period_shift_scored"] <= eb["period_shift_subsets"]
        assert sum(eb["n_period_shifts"]) == eb["period_shift_scored"]
    inside = copies.merge(clean, on=["source_id", "transit_id"], how="left", indicator=True)
    assert (inside["_merge"] == "both").all()


def test_a_stopped_crossval_resumes_only_the_missing_fold(workdir: Path, tmp_path: Path):
    work = tmp_path / "resume"
    shutil.copytree(workdir, work, symlinks=True)
    before = runs_of(work)
    results = sorted((work / "data/cache/crossval").glob("RRc-*/r2_k1.json"))
    assert len(results) == 1
    results[0].unlink()  # as if the job had died before finishing this fold
    run([str(BIN / "rrlfeh"), "crossval"], work)
    after = runs_of(work)
    new = after[~after["run_id"].isin(before["run_id"])]
    assert list(zip(new["tags.rr_type"], new["tags.repeat"], new["tags.fold"], strict=True)) == [
        ("RRc", "2", "1")]
    assert results[0].exists()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_ui_serves_the_runs_on_localhost(workdir: Path):
    """The README's `make ui` command: the UI's server answers with the search and fold runs."""
    import signal
    import time
    import urllib.request

    port = free_port()
    env = project_env()
    proc = subprocess.Popen([str(BIN / "mlflow"), "ui", "--backend-store-uri",
                             "sqlite:///mlflow.db", "-h", "127.0.0.1", "-p", str(port)],
                            cwd=workdir, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("mlflow ui did not come up in 60 s")
        url = f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=rrlfeh"
        with urllib.request.urlopen(url, timeout=10) as r:
            exp_id = json.load(r)["experiment"]["experiment_id"]
        body = json.dumps({"experiment_ids": [exp_id], "max_results": 1000}).encode()
        req = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            runs = json.load(r)["runs"]
        names = [next(t["value"] for t in run["data"]["tags"] if t["key"] == "mlflow.runName")
                 for run in runs]
        assert {"tune RRab", "tune RRc", "crossval RRab", "crossval RRc"} <= set(names)
        assert sum(n.startswith("RRab fold") for n in names) == 4
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_experiment_opens_on_runs_and_every_run_names_its_data(workdir: Path):
    """MLflow 3's UI opens a typed experiment on its runs; every run logs its input files with
    the DVC hash (dvc.lock md5) as the dataset digest."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rrlfeh")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    lock = yaml.safe_load((workdir / "dvc.lock").read_text())
    md5 = {o["path"]: o["md5"] for st in lock["stages"].values() for o in st.get("outs", [])
           if "md5" in o}
    runs = client.search_runs([exp.experiment_id], max_results=10_000)
    checked = 0
    for r in runs:
        inputs = r.inputs.dataset_inputs
        assert inputs, f"run {r.info.run_name} names no data"
        for d in inputs:
            name = d.dataset.name if "/" in d.dataset.name else f"data/processed/{d.dataset.name}"
            if name in md5:
                assert d.dataset.digest == md5[name], (r.info.run_name, name)
                checked += 1
    assert checked >= len(runs)
