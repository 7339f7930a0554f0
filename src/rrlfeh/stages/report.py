"""Stage `report`: one Markdown page of what the run measured, and the short scored table.

Per type: Table 1 (K-fold validation mean ± std, out-of-fold, and the test split used once) of
the served model, the network, the classical relation chosen on the folds and the paper's GRU
retrained here (stage `reference`), what the gate chose and why, against the truth where it is
known (synthetic stars), the published relations on the same folds and test stars (as they
stand and refitted; each also an MLflow run), the coverage of feh_std and the error against
the number of epochs (paper Fig. 7) with and without the paper's N >= 50 cut. Optionally
(`report.bands`) the G period of every star against periods derived independently from its BP
and RP epochs. The scored table
(`report.scored_csv`: source_id, feh, feh_std, status) holds every star of the catalogue.
Written: reports/<report.name>.md, its figures and tables in reports/<report.name>_files/.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rrlfeh.data import schema
from rrlfeh.evaluation import Stars, baseline_row, coverage, error_by_epochs
from rrlfeh.headline import headline
from rrlfeh.io import write_json, write_text

log = logging.getLogger(__name__)

TABLE1 = ("r2", "wrmse", "wmae", "rmse", "mae")
def _stars(data, table: pd.DataFrame) -> Stars:
    """The baselines' view of a TrainingSet: labels, weights and the relations' features (the
    stars table's period, φ31, R21; the plane's: the per-star channels of the network input)."""
    from rrlfeh.training.baseline import plane_features

    t = table.reindex(data.source_id)
    return Stars(data.y.astype(float), data.weights.astype(float), {
        "period": t["period"].to_numpy(float), "phi31": t["phi31_g"].to_numpy(float),
        "r21": t["r21_g"].to_numpy(float), "plane": plane_features(data)})


def _relation_predictors(kind: str):
    """(name, predict) of every baseline of a type: the published RRab relations as they
    stand and refitted, and the (P, φ31, R21) plane of the network's own input."""
    from rrlfeh.relations import RRAB_PUBLISHED
    from rrlfeh.training.baseline import LinearRelation

    def cols(s: Stars, i):
        return s.features["period"][i], s.features["phi31"][i], s.features["r21"][i]

    out, forms = [], set()
    if kind == "RRab":
        for rel in RRAB_PUBLISHED:
            out.append((f"{rel.name}, as published",
                        lambda fit, fi, app, ai, rel=rel: rel.predict(*cols(app, ai))))
            if rel.form in forms:  # a refit of the same linear model is the same row
                continue
            forms.add(rel.form)
            out.append((f"{rel.form} on the stars table, refitted",
                        lambda fit, fi, app, ai, rel=rel: rel.refit(
                            *cols(fit, fi), fit.y[fi], fit.weights[fi]).predict(*cols(app, ai))))
    out.append(("plane of the network input (P, φ31, R21; φ31, R21 without periods), "
                "refitted",
                lambda fit, fi, app, ai: LinearRelation().fit(
                    fit.features["plane"][fi], fit.y[fi], fit.weights[fi]).predict(
                    app.features["plane"][ai])))
    return out


def type_report(kind: str, root: Path, params: Mapping[str, Any],
                stars_table: pd.DataFrame) -> dict[str, Any]:
    """Everything the page says about one type (or why it has no model)."""
    from rrlfeh import config
    from rrlfeh.training.arrays import load_training_set
    from rrlfeh.training.kfold import stratified_folds

    pre, cv = config.section(params, "preprocess"), config.section(params, "crossval")
    r = config.section(params, "report")
    edges = list(r["epoch_bins"])
    budget = config.training_budget(params)["crossval"]
    npz = root / pre["out_dir"] / f"{kind}.npz"
    folds_json = root / cv["out_dir"] / kind / "folds.json"
    final = root / config.section(params, "train")["out_dir"] / kind
    if not folds_json.exists() or not (final / "manifest.json").exists():
        crossval = json.loads((root / "reports/crossval.json").read_text()).get(kind, {})
        return {"skipped": crossval.get("skipped", "no K-fold models")}
    # Table 1 is on the stars' own curves (the sparse copies are in the sparse-curve section)
    train = load_training_set(npz, kind).originals()
    test = load_training_set(npz, kind, part="test")
    folds = stratified_folds(train.strata, int(budget["n_splits"]), int(budget["n_repeats"]),
                             int(cv["seed"]))
    cv_metrics = json.loads(folds_json.read_text())["metrics"]
    tr, te = _stars(train, stars_table), _stars(test, stars_table)
    usable_tr = np.isfinite(np.column_stack([tr.features[k] for k in ("period", "phi31",
                                                                     "r21")])).all(1)
    rows = []
    for name, predict in _relation_predictors(kind):
        if "network input" not in name and not usable_tr.all():  # a stars-table row
            rows.append({"name": name, "note": f"{int((~usable_tr).sum())} training stars "
                                               "without a period, φ31 or R21 in the stars table"})
            continue
        rows.append(baseline_row(name, predict, tr, te, folds))
    tp_path = final / "test_predictions.parquet"
    tp = pd.read_parquet(tp_path) if tp_path.exists() else None
    oof = pd.read_parquet(root / cv["out_dir"] / kind / "predictions.parquet")
    if "copy" in oof:
        oof = oof[oof["copy"] == 0].reset_index(drop=True)
    manifest = json.loads((final / "manifest.json").read_text())
    stack = cv_metrics["stack"]
    served = {"name": f"**served model** ({_served_text(stack)})",
              "val": served_folds(train, oof, manifest, folds), "oof": stack["oof"]}
    network = {"name": "network ensemble (this run)", "val": cv_metrics["val"],
               "oof": cv_metrics["oof"]}
    relation = {"name": f"classical relation ({cv_metrics['relation']['form']}, chosen and "
                        "refitted on the training folds)",
                "val": cv_metrics["baseline_val"], "oof": cv_metrics["baseline_oof"]}
    paper = paper_gru_row(kind, root, params)
    derived = stars_table.get("phi31_derived")
    measured = bool(derived is not None and derived.reindex(train.source_id).fillna(False).all())
    out: dict[str, Any] = {"n_train": len(train), "n_test": len(test), "baselines": rows,
                           "network": network, "served": served, "relation": relation,
                           "paper_gru": paper, "stack": stack, "phi31_measured": measured,
                           "relation_fit": cv_metrics["relation"],
                           "error_bins": manifest.get("error_bins")}
    if tp is not None and len(tp):
        from rrlfeh.training.metrics import regression_metrics

        def test_metrics(col: str, frame: pd.DataFrame = tp, y: str = "feh") -> dict:
            return {k: v for k, v in regression_metrics(
                frame[y], frame[col], frame["weight"]).items() if k != "n"}

        res = tp["feh_pred"].to_numpy() - tp["feh"].to_numpy()
        served["test"] = test_metrics("feh_pred")
        network["test"] = test_metrics("network_pred")
        relation["test"] = test_metrics("plane_pred")
        out["coverage_test"] = coverage(res, tp["feh_std"].to_numpy())
        out["error_by_epochs_test"] = error_by_epochs(tp["n_epochs"].to_numpy(), res, edges,
                                                      tp["feh_std"].to_numpy())
        cut = int(r["paper_min_epochs"])
        keep = tp["n_epochs"].to_numpy() >= cut
        out["paper_cut"] = {"min_epochs": cut, "all": served["test"],
                            "n_all": len(tp), "n_kept": int(keep.sum())}
        if keep.sum() >= 3:
            out["paper_cut"]["kept"] = test_metrics("feh_pred", tp[keep])
            out["paper_cut"]["plane_kept"] = test_metrics("plane_pred", tp[keep])
        truth = stars_table.get("feh_true")
        if truth is not None and truth.reindex(tp["source_id"]).notna().all():
            t_true = tp.assign(feh_true=truth.reindex(tp["source_id"]).to_numpy(float))
            out["truth_test"] = {
                "served": test_metrics("feh_pred", t_true, "feh_true"),
                "network": test_metrics("network_pred", t_true, "feh_true"),
                "relation": test_metrics("plane_pred", t_true, "feh_true"),
                "labels": test_metrics("feh", t_true, "feh_true")}
    out["error_by_epochs_oof"] = error_by_epochs(
        oof["n_epochs"].to_numpy(), (oof["served_oof"] - oof["feh"]).to_numpy(), edges)
    out["oof_table"], out["test_table"] = oof, tp
    return out


def _served_text(stack: Mapping[str, Any]) -> str:
    """What the gate serves, in words."""
    if "bins" in stack and stack["served"] == "stack":
        return "network and relation weighed per number of epochs"
    return {"network": "the network alone", "relation": "the classical relation alone",
            "stack": f"{stack['weight']:.2f} × network + {1 - stack['weight']:.2f} × relation"
            }[stack["served"]]


def served_folds(train, oof: pd.DataFrame, manifest: Mapping[str, Any],
                 folds: Sequence[tuple[int, int, np.ndarray, np.ndarray]]
                 ) -> dict[str, dict[str, float]]:
    """K-fold figures of the served stack: per fold, the network's validation predictions of
    that repeat combined as served with the line fitted on the fold's training part (the bins'
    planes, where a bin of full curves serves one, are the final fits)."""
    from rrlfeh.training.baseline import LinearRelation, relation_features
    from rrlfeh.training.metrics import aggregate, regression_metrics
    from rrlfeh.training.served import served_predict, training_values

    form = manifest["relation"]["form"]
    f = relation_features(train, form)
    per_fold = []
    for rep, _, tr, va in folds:
        line = {"features": manifest["relation"]["features"],
                "coef": LinearRelation().fit(f[tr], train.y[tr]).coef_.tolist()}
        net = oof[f"pred_oof_r{rep}"].to_numpy()[va]
        vals = {k: np.asarray(v)[va] for k, v in training_values(train).items()
                if v is not None}
        pred, _ = served_predict(manifest["stack"], line, net, vals, train.n_epochs[va])
        per_fold.append(regression_metrics(train.y[va], pred, train.weights[va]))
    return aggregate(per_fold)


def paper_gru_row(kind: str, root: Path, params: Mapping[str, Any]) -> dict[str, Any]:
    """The paper's GRU retrained here (stage `reference`): its K-fold, out-of-fold and test
    figures on the same stars, or why there are none."""
    name = "the paper's GRU (Monti et al. 2025), retrained here: 2 channels, no per-star path"
    path = root / "reports" / "reference.json"
    if not path.exists():
        return {"name": name, "note": "not run (stage `reference` has not run)"}
    ref = json.loads(path.read_text()).get(kind, {})
    if "skipped" in ref or "val" not in ref:
        return {"name": name, "note": f"not run: {ref.get('skipped', 'no result')}"}
    return {"name": f"{name}, {ref.get('n_folds', '?')} folds", "val": ref["val"],
            "oof": ref.get("oof"), "test": ref.get("test")}


def band_periods(root: Path, params: Mapping[str, Any], stars_table: pd.DataFrame,
                 n_jobs: int) -> dict[str, Any]:
    """G periods (the pipeline's) against BP and RP periods derived independently from the
    input epochs file, with the same derive knobs."""
    from rrlfeh import config
    from rrlfeh.data.layouts import read_table, to_epochs
    from rrlfeh.lightcurve.agreement import compare_periods, summary
    from rrlfeh.lightcurve.derive import derive_light_curve_parameters

    acq = config.section(params, "acquire")
    epochs_file = root / acq["files"]["epochs"]
    raw = read_table(epochs_file)
    knobs = {k: v for k, v in dict(acq.get("derive", {})).items() if k != "n_jobs"}
    fits = {}
    for band in ("BP", "RP"):
        log.info("report: deriving %s periods of %d stars", band, raw["source_id"].nunique())
        fits[band] = derive_light_curve_parameters(to_epochs(raw, band=band), n_jobs=n_jobs,
                                                   **knobs).set_index("source_id")
    g = stars_table
    ids = pd.Index(pd.unique(raw["source_id"]))
    periods = pd.DataFrame({"source_id": ids,
                            "G": g["period"].reindex(ids).to_numpy(float),
                            **{b: fits[b]["period"].where(fits[b]["fit_ok"]).reindex(ids)
                               .to_numpy(float) for b in fits}})
    rel = compare_periods(periods, "G", ("BP", "RP"))
    out: dict[str, Any] = {"n_stars": len(ids), "n_g": int(periods["G"].notna().sum())}
    detail = periods.copy()
    for band in ("BP", "RP"):
        col = rel[f"{band}_vs_G"]
        out[band] = summary(col)
        detail[f"{band}_vs_G"] = col.to_numpy()
        detail[f"n_{band}"] = fits[band]["n_epochs_g"].reindex(ids).to_numpy()
    detail["n_G"] = g["n_epochs_g"].reindex(ids).to_numpy()
    both = (rel["BP_vs_G"] == "agree") & (rel["RP_vs_G"] == "agree")
    out["confirmed_by_both"] = int(both.sum())
    out["detail"] = detail
    return out


def peer_comparison(types: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Our out-of-fold and test predictions against a peer model's out-of-fold predictions
    (source_id[_dr2], feh_pred) on the same stars."""
    from rrlfeh.data.layouts import read_table
    from rrlfeh.training.metrics import regression_metrics

    peer = read_table(path)
    peer = peer.rename(columns={"source_id_dr2": "source_id"})[["source_id", "feh_pred"]]
    peer = peer.drop_duplicates("source_id").set_index("source_id")["feh_pred"]
    t = types["RRab"]
    parts = {"training stars (ours out of fold)": (t["oof_table"]["source_id"],
                                                   t["oof_table"]["feh"],
                                                   t["oof_table"]["served_oof"])}
    if t.get("test_table") is not None:
        tp = t["test_table"]
        parts["test stars (ours: the test split)"] = (tp["source_id"], tp["feh"], tp["feh_pred"])
    rows = []
    for name, (sid, y, ours) in parts.items():
        theirs = peer.reindex(np.asarray(sid)).to_numpy(float)
        m = np.isfinite(theirs)
        y, ours, theirs = np.asarray(y)[m], np.asarray(ours)[m], theirs[m]
        w = np.ones(m.sum())
        a, b = regression_metrics(y, ours, w), regression_metrics(y, theirs, w)
        rows.append({"stars": name, "n": int(m.sum()), "ours R²": a["r2"],
                     "ours RMSE": a["rmse"], "peer R²": b["r2"], "peer RMSE": b["rmse"],
                     "corr(ours, peer)": float(np.corrcoef(ours, theirs)[0, 1]),
                     "RMS(ours − peer)": float(np.sqrt(np.mean((ours - theirs) ** 2)))})
    return {"path": str(path), "table": pd.DataFrame(rows)}


def our_periods(root: Path, params: Mapping[str, Any]) -> str:
    """What our model knew of each folded curve's period, for the comparison with the peer: the
    training arrays' periods (NaN for a model of curves without periods)."""
    from rrlfeh import config
    from rrlfeh.training.arrays import load_training_set

    pre = config.section(params, "preprocess")
    data = load_training_set(root / pre["out_dir"] / "RRab.npz", "RRab")
    if not np.isfinite(data.period).all():
        return ("**Ours had only the shape of the folded curve** (a model without periods), "
                "so this compares unequal inputs.")
    rejected = root / pre["out_dir"] / "rejected.parquet"
    unclear = 0
    if rejected.exists():
        reasons = pd.read_parquet(rejected, columns=["reason"])["reason"].astype(str)
        unclear = int(reasons.str.contains("scan gaps").sum())
    return ("Ours had the period that Gaia's scan lags left in each curve's phases "
            "(`rrlfeh.lightcurve.scan_gaps`, no label used): "
            f"{unclear} labelled stars without a clear one are rejected with that reason "
            "(data/processed/rejected.parquet) and are not in this table.")


def _cell(v: Any, fmt: str = "{:.3f}") -> str:
    return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else fmt.format(v)


def _pm(m: Mapping[str, Any] | None, key: str) -> str:
    if not m or key not in m:
        return ""
    v = m[key]
    return f"{v['mean']:.3f} ± {v['std']:.3f}" if isinstance(v, Mapping) else f"{v:.3f}"


def _frame_md(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(_cell(v) if isinstance(v, float) else str(v)
                                       for v in r) + " |")
    return "\n".join(lines)


def _error_bins_table(eb: dict[str, Any] | None) -> list[str]:
    """The calibration of feh_std per bin of epoch counts (the manifest's `error_bins`): the
    residual scatter added and the out-of-fold coverage it gives; where the model has them,
    the scatter for stars scored without a period and its share of residual + shift pairs."""
    if not eb or "coverage_oof" not in eb:
        return []
    derived = "sigma_period_derived" in eb
    held = eb.get("coverage_held_out")
    held_derived = eb.get("coverage_period_derived_held_out") if derived else None
    scale = eb.get("quality_scale")
    two = bool(scale) and isinstance(scale[0], list)  # a scale for each of the fit's qualities
    md = ["| epochs | curves (out of fold) | s (dex) |"
          + ((" k φ31 error / k disagreement (dex/rad) |" if two else " k (dex/rad) |")
             if scale else "")
          + " within ±1 feh_std | within ±2 |"
          + (" held-out half: ±1 / ±2 |" if held else "")
          + (" period shifts | s without a period (dex) | pairs within ±1 |" if derived else "")
          + (" held-out half, no period: ±1 / ±2 |" if held_derived else ""),
          "|---|---|---|---|---|" + ("---|" if scale else "") + ("---|" if held else "")
          + ("---|---|---|" if derived else "") + ("---|" if held_derived else "")]
    edges = eb["edges"]
    for i, (s, c) in enumerate(zip(eb["sigma"], eb["coverage_oof"], strict=True)):
        hi = "" if edges[i + 1] >= 1e5 else f"{edges[i + 1]:g}"
        if c is None:
            continue
        row = (f"| {edges[i]:g}–{hi} | {c['n']} | {s:.3f} | "
               + ((" / ".join(f"{k:.2f}" for k in scale[i]) if two else f"{scale[i]:.2f}")
                  + " | " if scale else "")
               + f"{100 * c['within_1sigma']:.1f} % | {100 * c['within_2sigma']:.1f} % |")
        if held:
            h = held[i]
            row += (f" {100 * h['within_1sigma']:.1f} % / {100 * h['within_2sigma']:.1f} % |"
                    if h else " |")
        if derived:
            w = eb["coverage_period_derived"][i]
            row += (f" {eb['n_period_shifts'][i]} | {eb['sigma_period_derived'][i]:.3f} | "
                    + (f"{100 * w:.1f} % |" if w is not None else "(too few: s kept) |"))
        if held_derived:
            h = held_derived[i]
            row += (f" {100 * h['within_1sigma']:.1f} % / {100 * h['within_2sigma']:.1f} % |"
                    if h else " |")
        md.append(row)
    if two:
        md += ["", "feh_std = sqrt(spread² + (k₁·σφ31)² + (k₂·Δφ31)² + s²): per bin, k₁ the "
               "scale of each curve's φ31 error from its Fourier fit, k₂ that of Δφ31, how far "
               "its other φ31 estimates (the smooth curve's, the dense shapes') lie from it (0: "
               "it says nothing there), chosen with s as the set under which the bin's "
               "out-of-fold residuals are likeliest (`served.residual_scales`); a noisy or "
               "ambiguous fit gets a wider error than a clean curve of as many epochs."]
    elif scale:
        md += ["", "feh_std = sqrt(spread² + (k·σφ31)² + s²): k, per bin, the scale of each "
               "curve's φ31 error from its Fourier fit (0: it says nothing there), chosen "
               "with s as the pair under which the bin's out-of-fold residuals are likeliest "
               "(`served.residual_scales`); a noisy fit gets a wider error than a clean curve "
               "of as many epochs."]
    if held:
        md += ["", "Held-out half: the training stars split in two (by star, seeded), each "
               "half's out-of-fold residuals judged with the s calibrated on the other half "
               "(`train.held_out_coverage`): the coverage a star the calibration never saw "
               "gets."]
    if derived:
        md += ["", f"Without a period (`train.period_error`): {eb['period_shift_scored']} of "
               f"the {eb['period_shift_subsets']} curves above (the sparse copies and own "
               "curves the calibration holds) were scored by this type's model with and without "
               "their period; each curve's shift between the two (no label needed) is added to "
               "its own out-of-fold residual, and s set so that ±1 holds 68 % of the sums "
               "(`period_error.derived_sigmas`): a curve the period search refuses is left out, "
               "and a poorly sampled curve keeps its larger residual and shift together."
               + (" Held-out half, no period: the same, calibrated on one half of the stars "
                  "and judged on the other half's sums (`period_error.held_out_derived_coverage`)."
                  if held_derived else "")]
    return [*md, ""]


def _table1_row(row: Mapping[str, Any]) -> str:
    """One row of Table 1 (a note across the columns where the model has no figures)."""
    if "note" in row:
        return f"| {row['name']} | {row['note']} ||||||||| "
    v, o, te = row["val"], row.get("oof") or {}, row.get("test") or {}
    return (f"| {row['name']} | {_pm(v, 'r2')} | {_pm(v, 'wrmse')} | {_pm(v, 'rmse')} | "
            f"{_cell(o.get('r2'))} | {_cell(o.get('rmse'))} | {_cell(te.get('r2'))} | "
            f"{_cell(te.get('wrmse'))} | {_cell(te.get('rmse'))} | {_cell(te.get('mae'))} |")


# the bin planes' inputs as a reader knows them
PLANE_INPUTS = {"period": "P", "phi31": "φ31", "r21": "R21", "amplitude": "the amplitude",
                "phi31_template": "φ31 and R21 of the dense training curves' shapes that fit "
                                  "the curve best (`rrlfeh.lightcurve.templates`)",
                "r21_template": ""}


def _plane_inputs(features: list[str]) -> str:
    """'P, φ31, R21, ...' of a stack's features list."""
    names = [PLANE_INPUTS.get(f, f) for f in features]
    return ", ".join(n for n in names if n) or "P and φ31"


def _stack_table(stack: Mapping[str, Any]) -> list[str]:
    """The served stack per bin of epoch counts as markdown rows (out-of-fold RMSE)."""
    if "bins" not in stack:
        return [stack["reason"] + "."]
    rows = ["| epochs | curves (own) | served | out-of-fold RMSE | network | line | bin plane |",
            "|---|---|---|---|---|---|---|"]
    for e in stack["bins"]:
        hi = "" if e["hi"] >= 1e6 else f"{e['hi']:g}"
        rel = "line" if e["relation"] == "line" else "bin plane"
        what = (f"{e['weight']:.2f} network + {1 - e['weight']:.2f} {rel}"
                if 0 < e["weight"] < 1 else "network" if e["weight"] == 1 else rel)
        rows.append(f"| {e['lo']:g}–{hi} | {e['n_curves']} ({e['n_own']}) | {what} | "
                    f"{e['oof_rmse']:.3f} | {e['network_oof_rmse']:.3f} | "
                    f"{e['line_oof_rmse']:.3f} | {_cell(e.get('plane_oof_rmse'))} |")
    return rows


def _relation_text(rel: Mapping[str, Any]) -> str:
    """a + b·P + c·φ31 ... with the fitted numbers (φ31 centred as the network sees it)."""
    names = {"period": "P", "phi31": "(φ31 − 3.3)", "r21": "R21"}
    c = rel["coef"]
    return f"{c[0]:.3f}" + "".join(f" {'+' if v >= 0 else '−'} {abs(v):.3f}·{names[f]}"
                                   for v, f in zip(c[1:], rel["features"], strict=True))


def _held(table: pd.DataFrame) -> pd.DataFrame:
    """The bins of an error-by-epochs table that hold stars (empty ones say nothing)."""
    return table[table["n"] > 0]


def _sparse_metrics(root: Path, md_path: Path, files_dir: Path) -> dict[str, Any] | None:
    """reports/sparse.json (stage `sparse`) with its figure copied beside the page's own (so
    each experiment's page keeps its figure) and that copy's path from the page; None when the
    stage has not run."""
    import shutil

    path = root / "reports" / "sparse.json"
    if not path.exists():
        return None
    sparse = json.loads(path.read_text())
    figure = root / sparse["settings"]["figure"]
    if figure.exists():
        files_dir.mkdir(parents=True, exist_ok=True)
        figure = Path(shutil.copy2(figure, files_dir / figure.name))
    sparse["figure"] = os.path.relpath(figure, md_path.parent)
    return sparse


def _sparse_section(kind: str, sparse: Mapping[str, Any]) -> list[str]:
    """The type's "Sparse curves" table: RMSE per N, mode and model (stage `sparse`)."""
    from rrlfeh.sparse import cut_labels, report_table

    s = sparse["settings"]
    folded = s.get("source") == "folded"
    what = "folded points (phase, G)" if folded else "clean G epochs"
    md = ["### Sparse curves (stage `sparse`)", ""]
    t = sparse.get(kind)
    if not t or not any(m in t for m in ("with_period", "without_period")):
        return md + [f"No test star with ≥ {s['min_epochs']} {what}.", ""]
    first = next(iter(t.get("with_period") or t["without_period"]))
    n_stars = (t.get("with_period") or t["without_period"])[first]["n_stars"]
    modes = ("with the period `preprocess` gave the star's full curve and its type (P given) "
             "and without them (no P: the model finds the period in the subset's own points, "
             "from Gaia's scan gaps)" if folded else
             "with the catalogue period, epoch of maximum and type (P given) and without them "
             f"(no P: the model derives them; BP/RP epochs: {s['bands']})")
    md += [f"{n_stars} of {t['n_test_stars']} test stars have ≥ {s['min_epochs']} {what}: "
           f"each is cut to N of them ({s['n_draws']} random draws per N) and kept in "
           f"full, and every subset is scored {modes}. RMSE against the label; scored: the "
           "champion's share of the "
           "subsets (a subset not scored counts against it), the others' in parentheses where "
           "below 100 %. The line: [Fe/H] = a + b·P + c·φ31 fitted on the training stars, at "
           "the φ31 of each subset's own Fourier fit (no P: at the champion's derived period). "
           "The paper's GRU: stage `reference`'s fold models through the same scoring path ("
           f"modes {', '.join(m.replace('_', ' ') for m in s['paper_gru_modes'])}: "
           "`sparse.paper_gru_modes`). ±1σ / ±2σ: the champion's residuals within 1 and 2 "
           "feh_std (Gaussian 68 % / 95 %), ±1σ with its 95 % interval from resampling the "
           "stars (a star's draws share its label: the stars are the sample).", "",
           _frame_md(report_table(t, cut_labels(s["n_epochs"]))), ""]
    return md


def render(name: str, types: Mapping[str, Any], bands: Mapping[str, Any] | None,
           catalogue: Mapping[str, Any], figures: Mapping[str, str], context: str,
           peer: Mapping[str, Any] | None = None,
           sparse: Mapping[str, Any] | None = None) -> str:
    """The Markdown page (`sparse`: reports/sparse.json with the figure's path from the page)."""
    from rrlfeh.training.served import ONE_SIGMA_SLACK

    md = [f"# rrlfeh report: {name}", "", context, ""]
    if peer is not None:
        md += ["## Against the peer model, star by star", "",
               f"The peer's out-of-fold predictions (`{peer['path']}`) on the same stars as "
               f"ours. The peer had each star's period. {peer['ours']}", "",
               _frame_md(peer["table"]), ""]
    for kind, t in types.items():
        md += [f"## {kind}", ""]
        if "skipped" in t:
            md += [f"No model: {t['skipped']}.", ""]
            continue
        md += [f"{t['n_train']} training stars (K-fold: tune, early stopping and every choice "
               f"made on these), {t['n_test']} test stars (set aside by `preprocess`, used once "
               "by `train`).", "",
               "### Table 1: the served model, the network, the classical relation and the "
               "paper's GRU on the same stars", "",
               "K-fold validation: mean ± std over the folds of the training stars (early "
               "stopping on an inner split of each fold's training part). Out of fold: every "
               "training star predicted by the models that did not see it (mean over repeats). "
               "Test: the test split, used once. wRMSE weights by the KDE weights of the "
               "training stars' [Fe/H].", "",
               "| model | K-fold R² | K-fold wRMSE | K-fold RMSE | out-of-fold R² | "
               "out-of-fold RMSE | test R² | test wRMSE | test RMSE | test MAE |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        for row in [t["served"], t["network"], t["relation"], t["paper_gru"]]:
            md.append(_table1_row(row))
        st = t["stack"]
        md += ["", "**What the gate chose** (`register`), per number of epochs of a curve: in "
               "each bin the relation (the full curves' line, or a plane in "
               f"{_plane_inputs(st.get('features', []))} refitted on the curves of that many "
               "epochs, sparse copies of the training stars included) and the network's weight "
               "w with the lowest "
               "out-of-fold RMSE on the bin's curves, never worse than the line on the bin's "
               "own curves. " + (
                   "A bin holding stars' own curves serves the line, the network's weight "
                   "chosen on those curves alone (a label is the line of the φ31 of the star's "
                   "own epochs). " if any("chosen_on" in b for b in st.get("bins", [])) else
                   "Every bin keeps its own choice (`crossval.own_curves_line` false: the "
                   "labels are not the line of each curve's own φ31). ") +
               "The registered version's tags say which model it is and why.",
               "", *_stack_table(st), "",
               "The relation and the network read the same per-star features: φ31 and R21 of "
               "the Fourier fit of each star's own epochs at its period "
               "(`rrlfeh.lightcurve.features`; harmonics by BIC, outliers clipped); fitted "
               f"relation: [Fe/H] = {_relation_text(t['relation_fit'])}.", ""]
        if "truth_test" in t:
            tt = t["truth_test"]
            md += ["### Against the labels and against the truth (synthetic stars)", "",
                   "The embedded default's labels are made as the real ones are: a published "
                   "P–φ31 relation applied to a Fourier fit of each star's own epochs, plus the "
                   "relation's spread. The stars' true [Fe/H] is known here, so the test split "
                   "shows both what the paper reports (agreement with the labels) and what an "
                   "astronomer wants (agreement with the truth).", "",
                   "| test split | R² vs labels | RMSE vs labels | R² vs truth | RMSE vs truth |",
                   "|---|---|---|---|---|"]
            for key, label in (("served", "served model"), ("network", "network"),
                               ("relation", "classical relation")):
                lab = {"served": t["served"], "network": t["network"],
                       "relation": t["relation"]}[key].get("test", {})
                md.append(f"| {label} | {_cell(lab.get('r2'))} | {_cell(lab.get('rmse'))} | "
                          f"{_cell(tt[key]['r2'])} | {_cell(tt[key]['rmse'])} |")
            md += [f"| the labels themselves | 1 | 0 | {_cell(tt['labels']['r2'])} | "
                   f"{_cell(tt['labels']['rmse'])} |", ""]
        md += ["### More baselines: published relations on the stars table", "",
               "P, φ31 and R21 of the stars table: " + (
                   "derived from each star's G epochs by `acquire` (the same Fourier fit)."
                   if t["phi31_measured"] else
                   "the values the stars came with, a catalogue's (for the embedded default: "
                   "the Fourier fit of each star's generated epochs, as Gaia publishes its "
                   "own).") + " K-fold on the same "
               "folds, test on the same test split. These refits weight the stars by the KDE "
               "weights, as the network's loss does; the gate's relation above is fitted by "
               "ordinary least squares (it is compared on plain RMSE), hence its lower RMSE on "
               "the same features. The last row uses the network's own per-star channels: the "
               "same Fourier fit, of the epochs `preprocess` keeps.", "",
               "| relation | K-fold R² | K-fold wRMSE | K-fold RMSE | out-of-fold R² | "
               "out-of-fold RMSE | test R² | test wRMSE | test RMSE | test MAE |",
               "|---|---|---|---|---|---|---|---|---|---|"]
        for row in t["baselines"]:
            md.append(_table1_row(row))
        md.append("")
        if "coverage_test" in t:
            c = t["coverage_test"]
            least = (t.get("error_bins") or {}).get("copies_min_origin_epochs", 0)
            rows = ("every curve of the bin: the stars' own and their sparse copies" if not least
                    else f"the curves of stars with ≥ {least} epochs of their own and their "
                    "sparse copies: labels of dense curves; sparser stars' own curves only where "
                    "a bin has too few of those")
            md += ["### Uncertainties", "",
                   f"Test residuals within ±1 feh_std: {100 * c['within_1sigma']:.1f} % "
                   f"(Gaussian 68.3 %), within ±2: {100 * c['within_2sigma']:.1f} % (95.4 %), "
                   f"{c['n']} stars. feh_std = the members' spread and a residual scatter s "
                   "in quadrature, s set per bin of epoch counts on the bin's out-of-fold "
                   f"residuals ({rows}): 68.3 ± {100 * ONE_SIGMA_SLACK:g} % of them "
                   "within ±1 feh_std and, within that, as near 95.4 % as can be within ±2 "
                   "(a conformal calibration, `train`; `served.residual_scales`).", ""]
            md += _error_bins_table(t.get("error_bins"))
        if "paper_cut" in t:
            p = t["paper_cut"]
            md += ["### Error against the number of epochs (paper Fig. 7)", "",
                   f"Test stars, all {p['n_all']}: R² {p['all']['r2']:.3f}, RMSE "
                   f"{p['all']['rmse']:.3f}."]
            if "kept" in p:
                md.append(f"With the paper's cut N ≥ {p['min_epochs']} ({p['n_kept']} stars): "
                          f"served model R² {p['kept']['r2']:.3f}, RMSE {p['kept']['rmse']:.3f}; "
                          f"relation R² {p['plane_kept']['r2']:.3f}, RMSE "
                          f"{p['plane_kept']['rmse']:.3f}.")
            md += ["", "Test split:", "", _frame_md(_held(t["error_by_epochs_test"])), "",
                   "Out of fold (all training stars):", "",
                   _frame_md(_held(t["error_by_epochs_oof"])),
                   ""]
        if kind in figures:
            md += [f"![{kind} error against epochs]({figures[kind]})", ""]
        if sparse is not None:
            md += _sparse_section(kind, sparse)
    if sparse is not None:
        md += ["## Sparse curves: RMSE against the number of epochs", "",
               f"![Sparse curves: RMSE against the number of epochs]({sparse['figure']})", ""]
    if bands is not None:
        md += ["## Periods without a catalogue: G against BP and RP", "",
               f"{bands['n_stars']} stars, {bands['n_g']} with a G period. BP and RP periods "
               "are derived independently from the same stars' BP and RP epochs (same code and "
               "knobs); agreement to 0.1 % relative.", "",
               "| band | stars with both | agree | share agree | half/double | aliases "
               "(spin, precession) | unrelated |", "|---|---|---|---|---|---|---|"]
        for band in ("BP", "RP"):
            s = bands[band]
            harm = sum(s.get(f"n_{k}", 0) for k in ("half", "double", "two_thirds",
                                                     "three_halves"))
            alias = s.get("n_alias_spin", 0) + s.get("n_alias_precession", 0)
            md.append(f"| {band} | {s['n_both']} | {s.get('n_agree', 0)} | "
                      f"{100 * s['share_agree']:.1f} % | {harm} | {alias} | "
                      f"{s.get('n_unrelated', 0)} |")
        d = bands["detail"]
        bad = d[(d["BP_vs_G"] != "agree") & (d["BP_vs_G"] != "no period")]
        md += ["", f"G confirmed by both BP and RP: {bands['confirmed_by_both']} of "
               f"{bands['n_g']}. Stars where BP disagrees have a median of "
               f"{_cell(float(bad['n_BP'].median()), '{:.0f}')} BP epochs (all stars: "
               f"{_cell(float(d['n_BP'].median()), '{:.0f}')}): few epochs explain most "
               "disagreements. Every star with its relation: "
               f"`{bands['detail_path']}`.", ""]
        if len(bad):
            show = pd.DataFrame({
                "source_id": bad["source_id"].astype(str),
                "P(G) d": bad["G"].map(lambda v: _cell(v, "{:.5f}")),
                "P(BP) d": bad["BP"].map(lambda v: _cell(v, "{:.5f}")),
                "BP vs G": bad["BP_vs_G"], "G epochs": bad["n_G"].astype("Int64").astype(str),
                "BP epochs": bad["n_BP"].astype("Int64").astype(str)}).head(10)
            md += ["First disagreeing stars:", "", _frame_md(show), ""]
    md += ["## Scored stars", "",
           f"{catalogue['n']} stars in `{catalogue['path']}` (source_id, feh, feh_std, status); "
           f"{catalogue['n_ok']} scored, the others with the reason as status:", "",
           _frame_md(catalogue["statuses"]), ""]
    return "\n".join(md)


def log_baselines(kind: str, rows: Sequence[Mapping[str, Any]], root: Path,
                  params: Mapping[str, Any], inputs: Sequence[Path]) -> None:
    """Each baseline of a type as an MLflow run with its K-fold and test figures."""
    import mlflow

    from rrlfeh import config
    from rrlfeh.training.tracking import stage_run

    for row in rows:
        if "val" not in row:
            continue
        with stage_run(f"baseline {kind}: {row['name']}", stage="report", root=root,
                       params={"baseline": row["name"], "crossval": dict(config.section(
                           params, "crossval"))},
                       tags={"rr_type": kind, "baseline": row["name"]}, inputs=list(inputs)):
            mlflow.log_metrics({**{f"val_{k}_mean": v["mean"] for k, v in row["val"].items()},
                                **{f"test_{k}": v for k, v in row.get("test", {}).items()}})


def error_figure(kind: str, t: Mapping[str, Any], path: Path, cut: int) -> Path:
    """|residual| against the number of epochs, out of fold and test, with binned RMSE."""
    from rrlfeh import plots

    oof, tp = t["oof_table"], t["test_table"]
    return plots.error_vs_epochs(
        {"out of fold": (oof["n_epochs"].to_numpy(),
                         (oof["served_oof"] - oof["feh"]).to_numpy()),
         **({"test": (tp["n_epochs"].to_numpy(), (tp["feh_pred"] - tp["feh"]).to_numpy())}
            if tp is not None and len(tp) else {})},
        path, title=f"{kind}: error against the number of G epochs", cut=cut)


def run(params: Mapping[str, Any], root: Path, metrics_path: Path) -> dict[str, Any]:
    """Write the report page, its figures and the short scored table."""
    from rrlfeh import config
    from rrlfeh.io import write_table
    from rrlfeh.training.tracking import TrackingSettings, setup_tracking

    r = config.section(params, "report")
    setup_tracking(TrackingSettings.from_params(config.section(params, "tracking"), root))
    raw = config.acquire_params(params, root).out_dir
    stars_table = pd.read_parquet(raw / "stars.parquet").set_index("source_id")
    md_path = root / "reports" / f"{r['name']}.md"
    files_dir = root / "reports" / f"{r['name']}_files"  # figures and tables of the page
    types, figs, metrics = {}, {}, {}
    for kind in schema.TYPES:
        t = type_report(kind, root, params, stars_table)
        types[kind] = t
        if "skipped" in t:
            metrics[kind] = {"skipped": t["skipped"]}
            continue
        fig = error_figure(kind, t, files_dir / f"{kind}_error_vs_epochs.png",
                           int(r["paper_min_epochs"]))
        figs[kind] = os.path.relpath(fig, md_path.parent)
        pre = config.section(params, "preprocess")
        log_baselines(kind, t["baselines"], root, params,
                      [root / pre["out_dir"] / f"{kind}.npz", raw / "stars.parquet"])
        metrics[kind] = {k: t[k] for k in ("n_train", "n_test", "coverage_test", "truth_test")
                         if k in t}
        metrics[kind]["served"] = {"model": t["stack"]["served"],
                                   "network_weight": t["stack"]["weight"],
                                   **{f"test_{k}": v for k, v in t["served"].get("test",
                                                                                 {}).items()},
                                   **{f"oof_{k}": v for k, v in t["served"]["oof"].items()}}
        metrics[kind]["relation"] = {"form": t["relation_fit"]["form"],
                                     "test_rmse": t["relation"].get("test", {}).get("rmse"),
                                     "oof_rmse": t["relation"]["oof"]["rmse"]}
        metrics[kind]["baselines"] = {b["name"]: {"val_rmse": b["val"]["rmse"]["mean"],
                                                  "test_rmse": b.get("test", {}).get("rmse")}
                                      for b in t["baselines"] if "val" in b}
    bands = None
    if r.get("bands"):
        bands = band_periods(root, params, stars_table, int(config.section(
            params, "acquire").get("derive", {}).get("n_jobs", 2)))
        detail_path = files_dir / "period_bands.csv"
        write_table(bands["detail"], detail_path)
        bands["detail_path"] = os.path.relpath(detail_path, root)
        metrics["bands"] = {b: bands[b] for b in ("BP", "RP")}
    score = config.section(params, "score")
    cat = pd.read_parquet(root / score["out_dir"] / "catalogue.parquet")
    short = cat[["source_id", "feh", "feh_std", "status"]]
    csv = write_table(short, root / r["scored_csv"])
    kinds = cat["status"].str.replace(r"-?\d+(\.\d+)?", "#", regex=True)  # numbers aside
    statuses = kinds.value_counts().rename_axis("status (# a number)").reset_index(name="stars")
    catalogue = {"n": len(cat), "n_ok": int((cat["status"] == "ok").sum()),
                 "path": os.path.relpath(csv, root), "statuses": statuses.head(15)}
    metrics["scored"] = {"n": catalogue["n"], "n_ok": catalogue["n_ok"]}
    acq = config.section(params, "acquire")
    data = f"`{acq['source']}` source" + (f" ({acq['files']['epochs']}, labels "
                                          f"{acq['files']['labels']})"
                                          if acq["source"] == "files" else "")
    pre = config.section(params, "preprocess")
    if pre.get("source") == "folded":
        data = (f"folded curves ({pre['folded']['curves']}, labels "
                f"{pre['folded']['labels']})")
    context = (f"Data: {data}; budget `{params.get('budget', 'default')}`. Machine: "
               f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.system()} (the "
               "run's figures were measured there; they do not depend on its speed).")
    peer = None
    if r.get("peer_oof") and "oof_table" in types.get("RRab", {}):
        peer = peer_comparison(types, root / r["peer_oof"])
        peer["path"] = str(r["peer_oof"])
        peer["ours"] = our_periods(root, params)
        metrics["peer"] = peer["table"].to_dict(orient="records")
    files_dir.mkdir(parents=True, exist_ok=True)
    sparse = _sparse_metrics(root, md_path, files_dir)
    write_text(render(r["name"], types, bands, catalogue, figs, context, peer, sparse), md_path)
    write_json(metrics, metrics_path)
    register_json = root / "reports" / "register.json"
    write_json(headline(metrics, sparse, json.loads(register_json.read_text())
                        if register_json.exists() else None),
               root / "reports" / "headline.json")
    for kind, t in metrics.items():
        if isinstance(t, dict) and "served" in t and "test_rmse" in t["served"]:
            log.info("%s: served %s, test RMSE %.3f (relation %.3f), out of fold %.3f "
                     "(relation %.3f)", kind, t["served"]["model"], t["served"]["test_rmse"],
                     t["relation"]["test_rmse"], t["served"]["oof_rmse"],
                     t["relation"]["oof_rmse"])
    log.info("report: %s, %s (%d stars)", md_path.relative_to(root), catalogue["path"],
             catalogue["n"])
    return metrics
