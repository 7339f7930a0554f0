"""Scoring through the registered model: the same numbers as training's own arrays, one row a
star with a status, the `score` stage resumable after a kill, `rrlfeh predict` on user files."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fourier_check import fourier_values, relation_at

from rrlfeh.preprocess.network_input import PHI31_CENTRE, PHI31_ERROR_UNKNOWN
from rrlfeh.serving.inputs import read_request
from rrlfeh.serving.pipeline import ScoringModel, score_request

from conftest import BIN, project_env, run


@pytest.fixture(scope="module")
def project(pipeline_project: Path) -> Path:
    return pipeline_project


@pytest.fixture(scope="module")
def scoring_model(project: Path) -> ScoringModel:
    return ScoringModel.load(project / "data/cache/register/model")


def params_of(project: Path) -> dict:
    return yaml.safe_load((project / "params.yaml").read_text())


def long_form(project: Path, ids, with_star_values: bool = True) -> pd.DataFrame:
    epochs = pd.read_parquet(project / "data/raw/epochs.parquet")
    stars = pd.read_parquet(project / "data/raw/stars.parquet").set_index("source_id")
    e = epochs[epochs["source_id"].isin(ids)]
    e = pd.concat([e[e["source_id"] == i] for i in ids])  # in the order asked
    df = e[["source_id", "time", "mag", "flux", "flux_error", "rejected"]].reset_index(drop=True)
    if with_star_values:
        for col in ("period", "epoch_max", "type"):
            df[col] = stars.loc[df["source_id"], col].to_numpy()
    return df


def served_by_hand(manifest: dict, net: np.ndarray, spread: np.ndarray, star: dict,
                   n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(served [Fe/H], its spread, feh_std) computed from the manifest by hand, star by star:
    the bin of the curve's epoch count, w·network + (1 − w)·(the line, or the bin's plane on
    inputs clipped to the training range), and the bin's calibrated residual sigma with its
    scales times the curve's φ31 error and the disagreement of its φ31 estimates."""
    stack, line, eb = manifest["stack"], manifest["relation"], manifest["error_bins"]
    mean, sp, std = [], [], []
    for i in range(len(n)):
        k = next(j for j in range(len(stack["bins"]))
                 if stack["edges"][j] <= n[i] < stack["edges"][j + 1])
        entry = stack["bins"][k]
        if entry["relation"] == "plane":
            x = [min(max(star[f][i], lo), hi)
                 for f, (lo, hi) in zip(stack["features"], stack["clip"], strict=True)]
            coef = entry["coef"]
        else:
            x, coef = [star[f][i] for f in line["features"]], line["coef"]
        rel = coef[0] + sum(c * v for c, v in zip(coef[1:], x, strict=True))
        w = entry["weight"]
        mean.append(w * net[i] + (1 - w) * rel)
        sp.append(w * spread[i])
        e = next(j for j in range(len(eb["sigma"])) if eb["edges"][j] <= n[i] < eb["edges"][j + 1])
        kq2 = sum((k * star[name][i]) ** 2
                  for k, name in zip(eb["quality_scale"][e], eb["quality"], strict=True))
        std.append(float(np.sqrt(sp[-1] ** 2 + kq2 + eb["sigma"][e] ** 2)))
    return np.array(mean), np.array(sp), np.array(std)


def disagreement_by_hand(curves: np.ndarray, phi31: np.ndarray,
                         template: np.ndarray) -> np.ndarray:
    """How far the smooth curve's φ31 (its discrete Fourier phases, φ3 − 3φ1, the same centre)
    and the template's lie from the served φ31, in quadrature, star by star."""
    out = []
    for i, curve in enumerate(curves.astype(float)):
        k = np.arange(len(curve)) / len(curve)
        phase = [np.angle(np.sum(curve * np.exp(-2j * np.pi * h * k))) for h in (1, 3)]
        smooth = phase[1] - 3 * phase[0] - PHI31_CENTRE
        apart = [abs(np.angle(np.exp(1j * (phi31[i] - other)))) for other in (smooth, template[i])]
        out.append(float(np.hypot(*apart)))
    return np.array(out)


def test_scores_equal_the_ensemble_on_the_training_arrays(project, scoring_model):
    """Raw epochs -> pipeline gives the numbers of the trained ensemble on the very arrays
    `preprocess` wrote for training (the stars' own curves): the served model runs the
    training code, and serves each curve its epoch-count bin's stack and calibrated error."""
    for kind, ens in scoring_model.ensembles.items():
        with np.load(project / f"data/processed/{kind}.npz") as d:
            own = np.flatnonzero(d["copy"] == 0)[:25]
            x, ids, n = d["X"][own], d["source_id"][own], d["n_epochs"][own]
            star = {"period": d["period"][own], "phi31": d["star_phi31"][own],
                    "r21": d["star_r21"][own], "amplitude": d["amplitude"][own],
                    "phi31_template": d["star_phi31_template"][own],
                    "r21_template": d["star_r21_template"][own],
                    "phi31_error": d["star_phi31_error"][own]}
        # the served bank fits templates up to its max_epochs: above, a curve has none
        bank = scoring_model.templates.get(kind)
        cap = 0 if bank is None else bank.max_epochs
        served_template = np.where(n <= cap, star["phi31_template"], star["phi31"])
        star["phi31_disagreement"] = disagreement_by_hand(x[:, :, 0], star["phi31"],
                                                          served_template)
        net, spread = ens.predict(x)  # member by member, not fused
        mean, spread, std = served_by_hand(ens.manifest, net, spread, star, n)
        out = score_request(read_request(long_form(project, ids)), scoring_model)
        assert out["source_id"].tolist() == ids.tolist()
        assert (out["status"] == "ok").all(), out["status"].tolist()
        assert np.allclose(out["feh"], mean, atol=1e-5)
        assert np.allclose(out["feh_spread"], spread, atol=1e-5)
        assert np.allclose(out["feh_std"], std, atol=1e-5)
        assert (out["n_epochs"].to_numpy() == n).all()


def test_the_network_runs_only_where_its_weight_is_not_zero(project, scoring_model,
                                                           monkeypatch):
    """Dense curves in a bin that serves the relation alone skip the network, sparse ones in a
    bin that weighs it do not: the answers equal those of the network run on every curve."""
    from rrlfeh.serving import pipeline

    kind, ens = "RRab", scoring_model.ensembles["RRab"]
    bins = ens.manifest["stack"]["bins"]
    assert bins[-1]["weight"] == 0 and bins[0]["weight"] > 0, "the test project's stack changed"
    with np.load(project / f"data/processed/{kind}.npz") as d:
        ids = d["source_id"][d["copy"] == 0][:12]
    frame = long_form(project, ids)
    first = frame.groupby("source_id").cumcount()
    sparse = frame["source_id"].isin(ids[:5]) & (first >= 20)  # 5 stars cut to 20 epochs
    req = read_request(frame[~sparse].reset_index(drop=True))
    sizes: list[int] = []
    predict = ens.predict
    monkeypatch.setattr(ens, "predict", lambda x, **kw: (sizes.append(len(x)), predict(x, **kw))[1])
    out = score_request(req, scoring_model)
    assert sizes == [5]
    monkeypatch.setattr(pipeline, "_network_rows", lambda m, n: np.ones(len(n), bool))
    every = score_request(req, scoring_model)
    assert sizes == [5, 12]
    assert (out["status"] == "ok").all() and (out["n_epochs"].to_numpy()[:5] <= 20).all()
    for col in ("feh", "feh_spread", "feh_std"):
        assert np.allclose(out[col], every[col], atol=1e-6, rtol=0), col
    assert (out["feh_spread"].to_numpy()[5:] == 0).all()


def test_derived_periods_when_the_request_has_none(project, scoring_model):
    stars = pd.read_parquet(project / "data/raw/stars.parquet")
    ids = stars.sort_values("n_epochs_g")["source_id"].to_numpy()[-12:]
    out = score_request(read_request(long_form(project, ids, with_star_values=False)),
                        scoring_model)
    assert out["period_derived"].all() and (out["status"] == "ok").all()
    truth = stars.set_index("source_id").loc[ids, "period"].to_numpy()
    assert np.mean(np.abs(out["period"] / truth - 1) < 1e-3) >= 0.9
    # feh_std of a derived period: its bin's scatter calibrated with the derived periods'
    # shifts (train.period_error), never below the one with the period given
    given = score_request(read_request(long_form(project, ids)), scoring_model)
    for i in range(len(out)):
        eb = scoring_model.ensembles[out["type"][i]].manifest["error_bins"]
        assert len(eb["sigma_period_derived"]) == len(eb["sigma"])
        b = next(j for j in range(len(eb["sigma"]))
                 if eb["edges"][j] <= out["n_epochs"][i] < eb["edges"][j + 1])
        # beside the bin's scatter, its scales times the curve's φ31 error (at most the
        # unknown's) and disagreement
        # (the disagreement of φ31 estimates is at most π√2)
        most = [PHI31_ERROR_UNKNOWN, np.pi * np.sqrt(2)]
        for answer, sigma in ((out, eb["sigma_period_derived"][b]), (given, eb["sigma"][b])):
            kq2 = answer["feh_std"][i] ** 2 - answer["feh_spread"][i] ** 2 - sigma**2
            limit = sum((k * m) ** 2 for k, m in zip(eb["quality_scale"][b], most, strict=True))
            assert -1e-9 <= kq2 <= limit + 1e-9
        assert eb["sigma_period_derived"][b] >= eb["sigma"][b]


def test_sparse_curves_with_their_period_alone_are_fitted_not_searched(project, scoring_model):
    """Curves cut to 13 epochs, sent with the catalogue period but no epoch of maximum or type:
    every one scored at that period (not lost to a search its few epochs cannot win), about as
    the same curves with the catalogue's epoch of maximum and type."""
    stars = pd.read_parquet(project / "data/raw/stars.parquet")
    ids = stars.sort_values("n_epochs_g")["source_id"].to_numpy()[-8:]
    full = long_form(project, ids)
    full = full[~full["rejected"]]
    keep = full.assign(r=np.random.default_rng(5).random(len(full))).groupby(
        "source_id")["r"].rank(method="first") <= 13
    cut = full[keep.to_numpy()].reset_index(drop=True)
    alone = cut.assign(epoch_max=np.nan, type=None)
    out = score_request(read_request(alone), scoring_model)
    assert (out["status"] == "ok").all(), out["status"].tolist()
    assert not out["period_derived"].any() and (out["n_epochs"] == 13).all()
    truth = stars.set_index("source_id").loc[out["source_id"]]
    assert np.array_equal(out["period"].to_numpy(), truth["period"].to_numpy())
    given = score_request(read_request(cut), scoring_model)
    assert np.median(np.abs(out["feh"] - given["feh"])) < 0.1
    assert np.mean(out["type"].to_numpy() == truth["type"].to_numpy()) >= 0.75


def test_bad_stars_get_a_status_and_leave_the_good_ones_alone(project, scoring_model):
    stars = pd.read_parquet(project / "data/raw/stars.parquet")
    good = stars["source_id"].to_numpy()[:3]
    alone = score_request(read_request(long_form(project, good)), scoring_model)
    df = long_form(project, good)
    three = df[df["source_id"] == good[0]].head(3).assign(source_id=111, type="RRab")
    rrd = df[df["source_id"] == good[1]].assign(source_id=222, type="RRd")
    nan_times = df[df["source_id"] == good[2]].assign(source_id=333, time=np.nan)
    mixed = pd.concat([three, df, rrd, nan_times], ignore_index=True)
    out = score_request(read_request(mixed), scoring_model)
    assert out["source_id"].tolist() == [111, *good.tolist(), 222, 333]
    by = out.set_index("source_id")
    assert "too few points: 3 usable < 12" in by.loc[111, "status"]
    assert "unknown type 'RRd'" in by.loc[222, "status"]
    assert "unusable" in by.loc[333, "status"] and not by.loc[333, "in_domain"]
    assert np.isnan(by.loc[[111, 222, 333], "feh"]).all()
    assert np.array_equal(by.loc[good, "feh"].to_numpy(), alone["feh"].to_numpy())


def test_stars_outside_the_training_domain_are_flagged(project, scoring_model):
    stars = pd.read_parquet(project / "data/raw/stars.parquet")
    sid = stars.sort_values("n_epochs_g")["source_id"].iloc[-1]
    df = long_form(project, [sid])
    good = df[~df["rejected"]]
    # the domain reaches the fewest epochs the model was trained on (its sparse copies)
    fewest = scoring_model.settings["domain"]["min_epochs"]
    assert fewest == min(params_of(project)["preprocess"]["augment"]["n_epochs"])
    few = good.iloc[::len(good) // (fewest - 2) + 1]  # below the fewest: out of the domain
    assert len(few) < fewest
    row = score_request(read_request(few), scoring_model).iloc[0]
    assert row["status"] == "ok" and not row["in_domain"]
    assert f"{row['n_epochs']} epochs < {fewest} (training cut)" in row["domain_reason"]
    enough = good.iloc[::len(good) // (fewest + 5)]  # a sparse curve within the domain
    row = score_request(read_request(enough), scoring_model).iloc[0]
    assert row["status"] == "ok" and row["in_domain"], row["domain_reason"]


def test_a_type_without_a_model_is_scored_by_the_other_out_of_domain(project, scoring_model):
    one = ScoringModel({"RRab": scoring_model.ensembles["RRab"]}, scoring_model.settings)
    stars = pd.read_parquet(project / "data/raw/stars.parquet")
    sid = stars.loc[stars["type"] == "RRc", "source_id"].iloc[0]
    req = read_request(long_form(project, [sid]))
    out = score_request(req, one).iloc[0]
    assert out["status"] == "ok" and np.isfinite(out["feh"]) and not out["in_domain"]
    assert out["type"] == "RRc"
    assert "type RRc has no model: scored by the RRab model" in out["domain_reason"]
    # the value is the RRab model's: the same star sent as RRab gets the same number
    as_rrab = long_form(project, [sid]).assign(type="RRab")
    assert score_request(read_request(as_rrab), one)["feh"].item() == pytest.approx(out["feh"])
    none = ScoringModel({}, scoring_model.settings)
    assert score_request(req, none)["status"].item() == ("no RRc model (too few RRc training "
                                                         "stars)")


def test_catalogue_covers_every_star_of_data_raw_once(project):
    cat = pd.read_parquet(project / "data/scored/catalogue.parquet")
    raw_ids = set(pd.read_parquet(project / "data/raw/epochs.parquet")["source_id"]) | set(
        pd.read_parquet(project / "data/raw/stars.parquet")["source_id"]) | set(
        pd.read_parquet(project / "data/raw/rejected.parquet")["source_id"])
    assert cat["source_id"].is_unique and set(cat["source_id"]) == raw_ids
    csv = pd.read_csv(project / "data/scored/catalogue.csv")
    assert len(csv) == len(cat)
    assert np.allclose(csv["feh"], cat["feh"], atol=1e-5, equal_nan=True)
    for name in ("catalogue_feh", "catalogue_sky"):
        assert (project / f"reports/figures/{name}.png").stat().st_size > 5000
    metrics = json.loads((project / "reports/score.json").read_text())
    assert metrics["n_stars"] == len(cat) and metrics["model_version"] == "1"


def test_a_fresh_process_loading_the_champion_gives_the_catalogue(project):
    cat = pd.read_parquet(project / "data/scored/catalogue.parquet").set_index("source_id")
    ids = cat[cat["status"] == "ok"].index[:20].tolist()
    long_form(project, ids).to_parquet(project / "request.parquet")
    code = ("import mlflow, pandas as pd; "
            "m = mlflow.pyfunc.load_model('models:/rrl-feh@champion'); "
            "m.predict(pd.read_parquet('request.parquet')).to_parquet('answer.parquet')")
    env = project_env(MLFLOW_TRACKING_URI=f"sqlite:///{project / 'mlflow.db'}")
    subprocess.run([str(BIN / "python"), "-c", code], cwd=project, env=env, check=True,
                   capture_output=True, timeout=300)
    got = pd.read_parquet(project / "answer.parquet").set_index("source_id")
    assert got.index.tolist() == ids
    for col in ("feh", "feh_std", "feh_spread"):
        assert np.allclose(got[col], cat.loc[ids, col], atol=1e-6), col


def test_batch_scoring_answers_as_mlflows_own_predict(project):
    """`predict_frame` (the batch paths, without MLflow's per-value input check) gives what
    MLflow's predict gives, for a user's frame with upper-case names, a column the signature
    does not know and no periods (derived inside), and for the catalogue's form."""
    import mlflow

    from rrlfeh.serving.inputs import signature_columns
    from rrlfeh.serving.pyfunc import predict_frame

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/rrl-feh@champion")
    stars = pd.read_parquet(project / "data/raw/stars.parquet")
    ids = stars["source_id"].to_numpy()[:25]
    bare = long_form(project, ids[:6], with_star_values=False).assign(note="x")
    for frame in (bare.rename(columns=str.upper), long_form(project, ids)):
        want = model.predict(signature_columns(frame))
        got = predict_frame(model, frame)
        pd.testing.assert_frame_equal(got, want)
        assert (got["status"] == "ok").sum() >= len(got) // 2  # not a table of errors


def test_killed_score_resumes_from_its_finished_chunks(project, tmp_path):
    work = tmp_path / "p"
    shutil.copytree(project, work, symlinks=True)
    shutil.rmtree(work / "data/cache/score")
    (work / "data/scored/catalogue.parquet").unlink()
    params = (work / "params.yaml").read_text().replace("chunk_stars: 2000", "chunk_stars: 25")
    (work / "params.yaml").write_text(params)
    env = project_env()
    proc = subprocess.Popen([str(BIN / "rrlfeh"), "score"], cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and len(list(work.glob("data/cache/score/*/chunk_*"))) < 3:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = {p.name: p.stat().st_mtime_ns for p in work.glob("data/cache/score/*/chunk_*")}
    n_chunks = -(-400 // 25)
    assert 3 <= len(first) < n_chunks, "the kill came too late to test a resume"
    assert not (work / "data/scored/catalogue.parquet").exists()
    res = run([str(BIN / "rrlfeh"), "score"], work)
    assert f"resuming, {len(first)} finished chunk(s)" in res.stderr
    after = {p.name: p.stat().st_mtime_ns for p in work.glob("data/cache/score/*/chunk_*")}
    assert all(after[k] == v for k, v in first.items())  # finished chunks were not redone
    cat = pd.read_parquet(work / "data/scored/catalogue.parquet")
    ref = pd.read_parquet(project / "data/scored/catalogue.parquet")
    assert cat["source_id"].is_unique and cat["source_id"].tolist() == ref["source_id"].tolist()
    assert np.allclose(cat["feh"], ref["feh"], atol=1e-6, equal_nan=True)


def test_predict_a_users_files(project, tmp_path):
    cat = pd.read_parquet(project / "data/scored/catalogue.parquet").set_index("source_id")
    ids = cat[cat["status"] == "ok"].index[:6].tolist()
    df = long_form(project, ids)
    df.to_csv(tmp_path / "long.csv", index=False)
    df.rename(columns=str.upper).to_csv(tmp_path / "upper.csv", index=False)  # SOURCE_ID, MAG...
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    champion = mlflow.MlflowClient().get_model_version_by_alias("rrl-feh", "champion").version
    for name in ("long.csv", "upper.csv"):
        res = run([str(BIN / "rrlfeh"), "predict", str(tmp_path / name), "-o",
                   str(tmp_path / "out.parquet"), "--chunk-stars", "4"], project)
        out = pd.read_parquet(tmp_path / "out.parquet").set_index("source_id")
        assert out.index.tolist() == ids
        assert np.allclose(out["feh"], cat.loc[ids, "feh"], atol=1e-5)
        # the model that gave the numbers is named, in the log and beside each result
        assert f"models:/rrl-feh@champion (version {champion})" in res.stderr
        assert (out["model_uri"] == "models:/rrl-feh@champion").all()
        assert (out["model_version"] == str(champion)).all()
    # the archive's INDIVIDUAL layout (G + a BP row each), no periods: derived, flagged
    ind = pd.DataFrame({"source_id": df["source_id"], "transit_id": np.arange(len(df)),
                        "band": "G", "time": df["time"], "mag": df["mag"], "flux": df["flux"],
                        "flux_error": df["flux_error"], "rejected_by_photometry": False,
                        "rejected_by_variability": df["rejected"]})
    bp = ind.groupby("source_id").head(1).assign(band="BP", mag=99.0,
                                                 transit_id=lambda d: d["transit_id"] + 10**6)
    pd.concat([ind, bp]).to_csv(tmp_path / "individual.csv", index=False)
    run([str(BIN / "rrlfeh"), "predict", str(tmp_path / "individual.csv"), "-o",
         str(tmp_path / "out.csv")], project)
    got = pd.read_csv(tmp_path / "out.csv").set_index("source_id")
    assert got.index.tolist() == ids and got["period_derived"].all()
    assert (got["status"] == "ok").all()
    assert np.allclose(got["period"], cat.loc[ids, "period"], rtol=1e-3)


def test_predict_an_unreadable_file_is_one_line(project, tmp_path):
    (tmp_path / "bad.csv").write_text("source_id,time\n1,2.0\n")
    res = subprocess.run([str(BIN / "rrlfeh"), "predict", str(tmp_path / "bad.csv"), "-o",
                          str(tmp_path / "o.csv")], cwd=project, capture_output=True, text=True,
                         env=project_env())
    assert res.returncode == 1
    assert "missing column(s) mag" in res.stderr.strip().splitlines()[-1]


def test_a_curve_with_a_phase_gap_gets_the_relation_alone_out_of_domain(project, scoring_model):
    """The spline refuses a curve with a hole in phase; the classical relation still takes P and
    φ31 of the Fourier fit of its epochs: a value, flagged, never a silent gap. Several such
    stars in one request are fitted together, each to its own epochs."""
    stars = pd.read_parquet(project / "data/raw/stars.parquet").set_index("source_id")
    sids = [int(s) for s in stars.sort_values("n_epochs_g").index[-3:]]
    gaps = []
    for sid in sids:
        df, star = long_form(project, [sid]), stars.loc[sid]
        phase = np.mod((df["time"] - star["epoch_max"]) / star["period"], 1.0)
        gaps.append(df[~df["rejected"] & ((phase < 0.3) | (phase > 0.65))])  # 0.35 empty
    request = pd.concat([gaps[1], gaps[0], gaps[2]])  # not in the order of the stars table
    out = score_request(read_request(request), scoring_model).set_index("source_id")
    for sid, gap in zip(sids, gaps, strict=True):
        row, star = out.loc[sid], stars.loc[sid]
        assert row["status"] == "ok" and not row["in_domain"]
        assert "phase gap" in row["domain_reason"]
        assert "[Fe/H] from the classical relation alone" in row["domain_reason"]
        assert row["feh_spread"] == 0 and row["feh_std"] > 0
        assert row["n_epochs"] == len(gap)
        # independently: the relation the model carries at an unclipped least-squares fit's φ31
        ens = scoring_model.ensembles[str(star["type"])]
        t, mag = gap["time"].to_numpy(), gap["mag"].to_numpy()
        sigma = 1.0857 * gap["flux_error"].to_numpy() / gap["flux"].to_numpy()
        values = {"period": star["period"],
                  **fourier_values(2 * np.pi * t / star["period"], mag, sigma)}
        expected = relation_at(ens.manifest["relation"], values)
        assert row["feh"] == pytest.approx(expected, abs=0.02)  # outliers clipped by the model


def test_template_bank_holds_dense_training_stars_only(project, scoring_model):
    """The shapes the template features come from: dense training stars' own curves, never a
    test star; dense curves keep their fit's φ31, sparse copies get the bank's; the model folder
    carries the bank as far as a bin plane is served."""
    from rrlfeh.lightcurve.templates import TemplateBank
    from rrlfeh.preprocess.network_input import centred_phi31

    p = params_of(project)["preprocess"]["templates"]
    for kind, ens in scoring_model.ensembles.items():
        path = project / f"data/processed/{kind}.npz"
        bank = TemplateBank.from_npz(path)
        with np.load(path) as d:
            own, n, sid = d["copy"] == 0, d["n_epochs"], d["source_id"]
            dense = set(sid[own & ~d["is_test"] & (n >= p["min_epochs"])].tolist())
            tests = set(sid[d["is_test"]].tolist())
            phi, phi_t = d["star_phi31"], d["star_phi31_template"]
        assert set(bank.source_id.tolist()) <= dense and not tests & set(bank.source_id.tolist())
        assert len(bank) == min(p["max_templates"], len(dense))
        big = own & (n > p["max_epochs"])
        np.testing.assert_array_equal(phi_t[big], phi[big])
        small = n <= p["max_epochs"]
        assert small.sum() > 0 and np.mean(phi_t[small] != phi[small]) > 0.9
        lo, hi = centred_phi31(bank.phi31).min(), centred_phi31(bank.phi31).max()
        assert np.all((phi_t[small] >= lo - 1e-9) & (phi_t[small] <= hi + 1e-9))
        his = [b["hi"] for b in ens.manifest["stack"]["bins"] if b["relation"] == "plane"]
        served = scoring_model.templates.get(kind)
        if his:
            assert served.max_epochs == min(p["max_epochs"], int(np.ceil(max(his))) - 1)
        else:
            assert served is None


def test_a_folded_curve_without_its_period_gets_it_from_gaias_scan_lags(project, scoring_model):
    """Folded curves sent without a period (DG22's kind): the pyfunc finds it in the phases'
    scan lags and scores them as if it had been given. The curves: project stars' own folded
    shapes, sampled at transit times with Gaia's cadence (tests/test_scan_gaps.gaia_times)."""
    from test_scan_gaps import gaia_times

    stars = pd.read_parquet(project / "data/raw/stars.parquet")
    epochs = pd.read_parquet(project / "data/raw/epochs.parquet")
    epochs = epochs[~epochs["rejected"] & np.isfinite(epochs["mag"])]
    counts = epochs["source_id"].value_counts()
    chosen = stars[(stars["type"] == "RRab")
                   & stars["source_id"].isin(counts[counts >= 45].index)].head(4)
    rng = np.random.default_rng(5)
    rows = []
    for _, s in chosen.iterrows():
        e = epochs[epochs["source_id"] == s["source_id"]]
        own = np.mod((e["time"] - s["epoch_max"]) / s["period"], 1.0).to_numpy()
        order = np.argsort(own)
        phase = np.mod((gaia_times(rng, 45) - s["epoch_max"]) / s["period"], 1.0)
        mag = np.interp(phase, own[order], e["mag"].to_numpy()[order], period=1.0)
        rows.append(pd.DataFrame({"source_id": s["source_id"], "phase": phase, "mag": mag,
                                  "type": "RRab", "period": s["period"]}))
    given = pd.concat(rows, ignore_index=True)
    found = score_request(read_request(given.drop(columns="period")), scoring_model)
    known = score_request(read_request(given), scoring_model)
    assert (found["status"] == "ok").all() and found["period_derived"].all()
    assert np.allclose(found["period"], chosen["period"].to_numpy(), rtol=1e-3)
    assert np.allclose(found["feh"], known["feh"], atol=0.02)
    assert not known["period_derived"].any()


def test_chunks_scored_in_threads_are_those_of_one_at_a_time(project):
    """`predict_chunks` with threads (the score stage's score.threads) answers every chunk as
    one at a time does, to the last bit and in order, holding at most threads + 1 chunks, with
    BLAS at one thread meanwhile and back to its setting after."""
    import mlflow
    from threadpoolctl import ThreadpoolController

    from rrlfeh.serving.pyfunc import predict_chunks

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/rrl-feh@champion")
    ids = pd.read_parquet(project / "data/raw/stars.parquet")["source_id"].to_numpy()[:60]
    frames = [long_form(project, ids[i:i + 10]) for i in range(0, 50, 10)]
    frames.append(long_form(project, ids[50:], with_star_values=False))  # periods derived
    controller = ThreadpoolController()
    blas = lambda: {lib["num_threads"] for lib in controller.select(user_api="blas").info()}  # noqa: E731
    before = blas()
    one = [out for _, out in predict_chunks(model, enumerate(frames))]
    taken = {"ahead": 0, "blas": set()}

    def items():
        for i, frame in enumerate(frames):
            if i:  # the pool is running: its BLAS setting is the one the chunks see
                taken["blas"] |= blas()
            taken["ahead"] += 1
            yield i, frame

    got = []
    for key, out in predict_chunks(model, items(), threads=3):
        assert taken["ahead"] - len(got) <= 4  # threads + 1 held at once
        got.append((key, out))
    assert [k for k, _ in got] == list(range(len(frames)))
    for (_, out), want in zip(got, one, strict=True):
        pd.testing.assert_frame_equal(out, want)
    assert sum((out["status"] == "ok").sum() for out in one) >= 40  # not a table of errors
    assert taken["blas"] <= {1} and blas() == before


def test_chunks_scored_in_worker_processes_are_those_of_one_at_a_time(project):
    """`predict_chunks` in worker processes (score.processes: each loads the registered model
    from its pinned URI) answers every chunk as one at a time in this process does, in order,
    holding at most processes + 1 chunks."""
    import mlflow

    from rrlfeh.serving.model_uri import resolve
    from rrlfeh.serving.pyfunc import predict_chunks

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    pinned = resolve("models:/rrl-feh@champion").pinned
    assert pinned.startswith("models:/rrl-feh/")
    model = mlflow.pyfunc.load_model(pinned)
    ids = pd.read_parquet(project / "data/raw/stars.parquet")["source_id"].to_numpy()[:50]
    frames = [long_form(project, ids[i:i + 10]) for i in range(0, 40, 10)]
    frames.append(long_form(project, ids[40:], with_star_values=False))  # periods derived
    one = [out for _, out in predict_chunks(model, enumerate(frames))]
    ahead = []

    def items():
        for i, frame in enumerate(frames):
            ahead.append(i)
            yield i, frame

    got = []
    for key, out in predict_chunks(model, items(), processes=2, source=pinned):
        assert len(ahead) - len(got) <= 3  # processes + 1 held at once
        got.append((key, out))
    assert [k for k, _ in got] == list(range(len(frames)))
    for (_, out), want in zip(got, one, strict=True):
        pd.testing.assert_frame_equal(out, want, check_exact=False, rtol=0, atol=1e-7)
    assert sum((out["status"] == "ok").sum() for out in one) >= 35  # not a table of errors


def test_score_in_worker_processes_gives_the_catalogue(project, tmp_path):
    """The score stage with score.processes 2 on more chunks than workers scores them in
    worker processes (said in its log): the catalogue of the stage in threads, star for star."""
    work = tmp_path / "p"
    shutil.copytree(project, work, symlinks=True)
    shutil.rmtree(work / "data/cache/score")
    params = params_of(work)
    params["score"].update(chunk_stars=40, processes=2)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    res = run([str(BIN / "rrlfeh"), "score"], work)
    assert "at once, in worker processes" in res.stderr
    cat = pd.read_parquet(work / "data/scored/catalogue.parquet")
    ref = pd.read_parquet(project / "data/scored/catalogue.parquet")
    assert cat["source_id"].tolist() == ref["source_id"].tolist()
    assert (cat["status"] == ref["status"]).all()
    for col in ("feh", "feh_std", "feh_spread"):
        assert np.allclose(cat[col], ref[col], rtol=0, atol=1e-6, equal_nan=True), col
