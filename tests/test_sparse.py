"""Stage `sparse` (test stars cut to few epochs): the seeded draws, the metrics and the line
against independent computations, and the stage end to end on the session's tiny `dvc repro`
project."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from rrlfeh.sparse import (
    FULL,
    check_cuts,
    coverage_interval,
    cut_labels,
    draw_subsets,
    fit_line,
    line_predict,
    metrics_table,
    report_table,
    summarise,
)

from conftest import BIN, run

SIZES = (15, 20, 25, 30, 40)


def _epochs(counts: dict[int, tuple[int, int]], seed: int = 0) -> pd.DataFrame:
    """Epoch rows of stars {source_id: (clean, rejected)} in shuffled order, unique transits."""
    rng = np.random.default_rng(seed)
    rows = []
    for sid, (clean, bad) in counts.items():
        n = clean + bad
        rows.append(pd.DataFrame({
            "source_id": np.int64(sid), "transit_id": sid * 1000 + np.arange(n),
            "time": np.sort(rng.uniform(0, 1000, n)), "mag": rng.normal(17, 0.3, n),
            "flux": 1e3, "flux_error": 5.0, "rejected": np.r_[np.zeros(clean), np.ones(bad)]
            .astype(bool)[rng.permutation(n)]}))
    df = pd.concat(rows, ignore_index=True)
    return df.iloc[rng.permutation(len(df))].reset_index(drop=True)


STARS = {11: (60, 5), 22: (49, 12), 33: (50, 0), 44: (80, 0), 55: (120, 3)}
ASKED = [11, 22, 33, 55, 66]  # 44 is not a test star; 66 has no epochs


def test_draws_are_subsets_of_each_stars_clean_epochs_of_the_right_sizes():
    epochs = _epochs(STARS)
    subsets, chosen = draw_subsets(epochs, ASKED, SIZES, 3, 7, 50)
    # independently: the asked stars with >= 50 epochs not rejected
    clean = {sid: set(epochs.loc[(epochs["source_id"] == sid) & ~epochs["rejected"],
                                 "transit_id"]) for sid in ASKED}
    kept = sorted(sid for sid in ASKED if len(clean[sid]) >= 50)
    assert kept == [11, 33, 55]
    assert sorted(subsets["source_id"].unique()) == kept
    assert subsets["subset_id"].tolist() == list(range(len(subsets)))
    assert len(subsets) == len(kept) * (len(SIZES) * 3 + 1)
    for _, s in subsets.iterrows():
        mine = chosen[chosen["subset_id"] == s["subset_id"]]
        transits = list(mine["transit_id"])
        assert len(transits) == len(set(transits)) == s["n_epochs"]
        assert set(transits) <= clean[s["source_id"]]
        assert not mine["rejected"].any() and (mine["source_id"] == s["source_id"]).all()
        assert mine["time"].is_monotonic_increasing
        if s["cut"] == FULL:
            assert set(transits) == clean[s["source_id"]] and s["draw"] == 0
        else:
            assert s["n_epochs"] == int(s["cut"]) and 0 <= s["draw"] < 3
    per_star = subsets.groupby(["source_id", "cut"]).size()
    assert (per_star.xs(FULL, level="cut") == 1).all()
    assert (per_star.drop(FULL, level="cut") == 3).all()


def test_draws_follow_the_documented_seeding_and_do_not_depend_on_the_other_stars():
    epochs = _epochs(STARS)
    subsets, chosen = draw_subsets(epochs, ASKED, SIZES, 2, 7, 50)
    # the rule of the docstring, written out: default_rng([seed, source_id]).choice over the
    # star's clean epochs in time order, for each N ascending, each draw
    for sid in (11, 55):
        mine = epochs[(epochs["source_id"] == sid) & ~epochs["rejected"]].sort_values("time")
        rng = np.random.default_rng([7, sid])
        expected = [set(mine["transit_id"].to_numpy()[rng.choice(len(mine), n, replace=False)])
                    for n in SIZES for _ in range(2)]
        got = [set(chosen.loc[chosen["subset_id"] == i, "transit_id"])
               for i in subsets.loc[(subsets["source_id"] == sid)
                                    & (subsets["cut"] != FULL), "subset_id"]]
        assert got == expected
    alone_s, alone_c = draw_subsets(epochs, [55], SIZES, 2, 7, 50)
    ours = subsets[subsets["source_id"] == 55]
    for a, b in zip(alone_s["subset_id"], ours["subset_id"], strict=True):
        assert list(alone_c.loc[alone_c["subset_id"] == a, "transit_id"]) == list(
            chosen.loc[chosen["subset_id"] == b, "transit_id"])
    again = draw_subsets(epochs, ASKED, SIZES, 2, 7, 50)
    pd.testing.assert_frame_equal(again[1], chosen)
    other = draw_subsets(epochs, ASKED, SIZES, 2, 8, 50)[1]
    assert not other["transit_id"].equals(chosen["transit_id"])


def test_cuts_are_checked_and_ordered():
    assert cut_labels([30, 15]) == ["15", "30", FULL]
    with pytest.raises(ValueError, match="sparse.min_epochs 50"):
        check_cuts([15, 60], 3, 50)
    with pytest.raises(ValueError, match="distinct positive"):
        check_cuts([15, 15], 3, 50)
    with pytest.raises(ValueError, match="n_draws"):
        check_cuts([15], 0, 50)
    subsets, chosen = draw_subsets(_epochs({1: (20, 0)}), [1], [15], 1, 0, 50)
    assert subsets.empty and chosen.empty and "subset_id" in chosen


def test_summarise_counts_unscored_subsets_against_the_share():
    label = np.array([-1.0, -1.5, -2.0, -0.5, -1.2, -1.8])
    feh = np.array([-1.1, np.nan, -1.7, -0.5, -1.6, np.nan])
    std = np.array([0.2, 0.2, 0.2, 0.1, 0.3, 0.2])
    got = summarise(label, feh, std)
    ok = [0, 2, 3, 4]
    r = feh[ok] - label[ok]  # 0.1 (z 0.5), 0.3 (1.5), 0 (0), -0.4 (1.33)
    ss_tot = sum((v - np.mean(label[ok])) ** 2 for v in label[ok])
    assert got["share"] == pytest.approx(4 / 6) and got["n_scored"] == 4
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean(r**2)))
    assert got["mae"] == pytest.approx(np.mean(np.abs(r)))
    assert got["r2"] == pytest.approx(1 - np.sum(r**2) / ss_tot)
    assert got["within_1sigma"] == pytest.approx(2 / 4)
    assert got["within_2sigma"] == pytest.approx(4 / 4)
    assert "within_1sigma" not in summarise(label, feh)
    none = summarise(label, np.full(6, np.nan), std)
    assert none["share"] == 0 and none["rmse"] is None and none["within_1sigma"] is None


def test_the_coverage_interval_counts_stars_not_draws():
    """Stars whose draws all land in or all out are as many samples as stars: the interval's
    width is the binomial one of 200 stars (±1.96 sqrt(p(1-p)/200)), whatever the draws a star;
    draws that land independently narrow it to that of the subsets."""
    rng = np.random.default_rng(5)
    stars = np.repeat(np.arange(200), 5)
    p = 0.7
    clustered = np.repeat(rng.random(200) < p, 5)
    lo, hi = coverage_interval(clustered, stars)
    share = clustered.mean()
    assert lo < share < hi
    assert hi - lo == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / 200), rel=0.2)
    independent = rng.random(1000) < p
    lo2, hi2 = coverage_interval(independent, stars)
    assert hi2 - lo2 == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / 1000), rel=0.25)
    assert coverage_interval(clustered[:5], stars[:5]) is None  # one star: no interval
    label = np.zeros(1000)
    got = summarise(label, np.where(clustered, 0.05, 0.5), np.full(1000, 0.1), stars)
    assert got["within_1sigma"] == pytest.approx(share)
    assert got["within_1sigma_ci"] == pytest.approx([lo, hi])


def test_metrics_table_groups_by_type_mode_and_cut():
    rows = []
    for sub, (sid, kind, cut) in enumerate([(1, "RRab", "15"), (1, "RRab", FULL),
                                            (2, "RRab", "15"), (3, "RRc", "15")]):
        for mode in ("with_period", "without_period"):
            for model, feh in (("champion", -1.0), ("line", np.nan if sub == 2 else -1.2)):
                rows.append({"subset_id": sub, "source_id": sid, "type": kind, "cut": cut,
                             "mode": mode, "model": model, "label": -1.1, "feh": feh,
                             "feh_std": 0.2})
    table = metrics_table(pd.DataFrame(rows), ["15", FULL])
    assert set(table) == {"RRab", "RRc"}
    ab = table["RRab"]["without_period"]["15"]
    assert (ab["n_stars"], ab["n_subsets"]) == (2, 2)
    assert ab["champion"]["share"] == 1 and ab["champion"]["rmse"] == pytest.approx(0.1)
    assert ab["line"]["share"] == 0.5 and ab["line"]["n_scored"] == 1
    assert ab["line"]["rmse"] is None and "within_1sigma" not in ab["line"]
    assert "paper_gru" not in ab and FULL in table["RRab"]["with_period"]
    shown = report_table(table["RRab"], ["15", FULL])
    assert shown["N"].tolist() == ["15", FULL]
    assert shown.loc[0, "line RMSE (no P)"] == "– (50 %)"
    assert shown.loc[0, "champion RMSE (P given)"] == "0.100"


def test_the_line_is_recovered_from_noiseless_stars_and_skips_incomplete_rows():
    rng = np.random.default_rng(1)
    period, phi31 = rng.uniform(0.4, 0.8, 40), rng.normal(0, 0.3, 40)
    y = -1.0 - 4.0 * period + 1.5 * phi31
    period[3], y[7] = np.nan, np.nan
    coef = fit_line(period, phi31, y)
    assert coef == pytest.approx([-1.0, -4.0, 1.5])
    assert line_predict(coef, np.array([0.5, np.nan]), np.array([0.1, 0.1]))[0] == \
        pytest.approx(-1.0 - 2.0 + 0.15)
    with pytest.raises(ValueError, match=">= 3 stars"):
        fit_line(period[:2], phi31[:2], y[:2])


def test_band_rows_are_the_chosen_transits_without_period():
    from rrlfeh.sparse_requests import request

    epochs = _epochs({11: (60, 0)})
    subsets, chosen = draw_subsets(epochs, [11], [15], 1, 3, 50)
    stars = pd.DataFrame({"source_id": [11], "period": [0.55], "epoch_max": [1.0],
                          "type": ["RRab"]})
    bp = epochs.assign(band="BP", mag=epochs["mag"] + 0.3)
    bands = pd.concat([bp, epochs.assign(band="RP", mag=epochs["mag"] - 0.4)])
    with_p = request(chosen, subsets, stars, "with_period", bands)
    assert "band" not in with_p and (with_p["period"] == 0.55).all()
    frame = request(chosen, subsets, stars, "without_period", bands)
    assert {"period", "epoch_max", "type"}.isdisjoint(frame.columns)
    assert frame["source_id"].is_monotonic_increasing
    for sub in subsets["subset_id"]:
        mine = frame[frame["source_id"] == sub]
        g = chosen[chosen["subset_id"] == sub]
        assert mine["band"].value_counts().to_dict() == {"G": len(g), "BP": len(g),
                                                         "RP": len(g)}
        assert sorted(mine.loc[mine["band"] == "BP", "time"]) == sorted(g["time"])


def test_a_request_with_bands_is_read_by_the_serving_input():
    from rrlfeh.serving.inputs import Request, read_request
    from rrlfeh.sparse_requests import request

    if "bands" not in {f.name for f in dataclasses.fields(Request)}:
        pytest.skip("rrlfeh.serving.inputs.Request has no `bands` field yet (being added "
                    "beside this stage): the stage sends G epochs only until it has")
    epochs = _epochs({11: (60, 0)})
    subsets, chosen = draw_subsets(epochs, [11], [15], 1, 3, 50)
    stars = pd.DataFrame({"source_id": [11], "period": [0.55], "epoch_max": [1.0],
                          "type": ["RRab"]})
    bands = pd.concat([epochs.assign(band=b) for b in ("BP", "RP")])
    req = read_request(request(chosen, subsets, stars, "without_period", bands))
    assert req.bands is not None and len(req.bands)


# --------------------------------------------------------------------------------------------
# the stage on the session's tiny pipeline project


@pytest.fixture(scope="module")
def workdir(pipeline_project: Path) -> Path:
    """The session's tiny `dvc repro` project (tests/conftest.py); read-only here."""
    return pipeline_project


def test_every_eligible_test_star_is_cut_and_scored_in_both_modes(workdir: Path):
    metrics = json.loads((workdir / "reports/sparse.json").read_text())
    pred = pd.read_parquet(workdir / "data/sparse/predictions.parquet")
    epochs = pd.read_parquet(workdir / "data/raw/epochs.parquet")
    clean = epochs[~epochs["rejected"]].groupby("source_id").size()
    cuts = cut_labels(SIZES)
    draws = yaml.safe_load((workdir / "params.yaml").read_text())["sparse"]["n_draws"]
    for kind in ("RRab", "RRc"):
        with np.load(workdir / f"data/processed/{kind}.npz") as d:
            original = d["copy"] == 0 if "copy" in d.files else True  # augmented copies aside
            test = d["source_id"][d["is_test"] & original]
        eligible = set(test[clean.reindex(test).fillna(0).to_numpy() >= 50])
        assert metrics[kind]["n_test_stars"] == len(test)
        for mode in ("with_period", "without_period"):
            models = ["champion", "line"] + (["paper_gru"] if mode == "with_period" else [])
            for model in models:
                rows = pred[(pred["type"] == kind) & (pred["mode"] == mode)
                            & (pred["model"] == model)]
                assert set(rows["source_id"]) == eligible  # nobody dropped
                assert len(rows) == len(eligible) * (len(SIZES) * draws + 1)
            for cut in cuts:
                m = metrics[kind][mode][cut]
                assert m["n_stars"] == len(eligible)
                assert m["n_subsets"] == len(eligible) * (1 if cut == FULL else draws)
                rows = pred[(pred["type"] == kind) & (pred["mode"] == mode)
                            & (pred["model"] == "champion") & (pred["cut"] == cut)]
                assert m["champion"]["share"] == pytest.approx((rows["status"] == "ok").mean())
                assert set(m) >= {"champion", "line"}
    assert (workdir / "reports/figures/sparse_error_vs_epochs.png").stat().st_size > 5000
    assert "## Sparse curves" in (workdir / "reports/report.md").read_text()
    assert "### Sparse curves (stage `sparse`)" in (workdir / "reports/report.md").read_text()


def test_full_curves_with_period_score_as_the_catalogue_does(workdir: Path):
    """The same champion and scoring path as `rrlfeh score`: a full clean curve with the
    catalogue period gets the catalogue's [Fe/H] (score sends the rejected epochs too, which
    the model leaves out)."""
    pred = pd.read_parquet(workdir / "data/sparse/predictions.parquet")
    cat = pd.read_parquet(workdir / "data/scored/catalogue.parquet").set_index("source_id")
    full = pred[(pred["cut"] == FULL) & (pred["mode"] == "with_period")
                & (pred["model"] == "champion")]
    assert len(full) and (full["status"] == "ok").all()
    assert full["feh"].to_numpy() == pytest.approx(
        cat["feh"].reindex(full["source_id"]).to_numpy(), abs=1e-4)


def test_a_rerun_reads_every_chunk_from_the_cache(workdir: Path, tmp_path: Path):
    work = tmp_path / "again"
    shutil.copytree(workdir, work, symlinks=True)
    res = run([str(BIN / "rrlfeh"), "sparse", "--metrics", str(tmp_path / "sparse.json")], work)
    assert " chunk " not in res.stderr, res.stderr  # nothing scored again
    pd.testing.assert_frame_equal(pd.read_parquet(work / "data/sparse/predictions.parquet"),
                                  pd.read_parquet(workdir / "data/sparse/predictions.parquet"))


def test_without_period_the_bp_rp_epochs_of_the_chosen_transits_reach_the_champion(
        workdir: Path, tmp_path: Path):
    """`sparse.bands` with the files source: the BP epochs of an INDIVIDUAL-layout file join
    the without-period requests (a small cut: 15 epochs, one draw, no paper GRU)."""
    import yaml
    from test_acquire import individual_layout

    from rrlfeh.serving.inputs import Request

    if "bands" not in {f.name for f in dataclasses.fields(Request)}:
        pytest.skip("rrlfeh.serving.inputs.Request has no `bands` field: the served model "
                    "cannot take BP/RP epochs, the stage sends G only")
    work = tmp_path / "bands"
    shutil.copytree(workdir, work, symlinks=True)
    (work / "inputs").mkdir()
    individual_layout(pd.read_parquet(work / "data/raw/epochs.parquet")).to_parquet(
        work / "inputs/epochs.parquet")
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["acquire"]["source"] = "files"
    params["acquire"]["files"]["epochs"] = "inputs/epochs.parquet"
    params["sparse"].update(bands=True, n_epochs=[15], n_draws=1, paper_gru_modes=[],
                            out_dir="data/sparse_bands")
    (work / "bands.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    metrics_path = tmp_path / "sparse.json"
    res = run([str(BIN / "rrlfeh"), "sparse", "--params", "bands.yaml", "--metrics",
               str(metrics_path)], work)
    metrics = json.loads(metrics_path.read_text())
    assert metrics["settings"]["bands"] == "sent without period", res.stderr
    assert "BP/RP epochs of the chosen stars" in res.stderr
    pred = pd.read_parquet(work / "data/sparse_bands/predictions.parquet")
    assert set(pred["model"]) == {"champion", "line"}
    assert set(pred["cut"]) == {"15", FULL}
    no_p = pred[(pred["mode"] == "without_period") & (pred["model"] == "champion")]
    assert (no_p["status"] == "ok").mean() > 0.5
