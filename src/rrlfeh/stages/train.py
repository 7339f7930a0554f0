"""Stage `train`: the final model of each type, the K-fold models kept as an ensemble.

The test split that `preprocess` set aside is used here once: the ensemble's figures on it,
beside the classical plane fitted on all training stars, and the coverage of feh_std.

Why an ensemble and not a refit on all stars: on held-out stars the mean of the fold models is
at least as accurate as one model refit on everything for the median best epoch (which has no
validation set left for early stopping), and the members' spread gives each star an uncertainty
(benchmarks/ensemble_vs_refit.py prints the comparison). Each type's folder under models/final/
holds the members and manifest.json; one MLflow run a type logs it with its figures.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rrlfeh.data import schema
from rrlfeh.evaluation import coverage
from rrlfeh.io import write_json, write_parquet
from rrlfeh.lightcurve.templates import FILE as TEMPLATES
from rrlfeh.lightcurve.templates import TemplateBank
from rrlfeh.training.arrays import load_training_set
from rrlfeh.training.ensemble import MANIFEST, Ensemble, residual_model
from rrlfeh.training.metrics import regression_metrics
from rrlfeh.training.served import (
    MIN_BIN_ROWS,
    QUALITY,
    bin_index,
    gaussian_nll,
    merge_sparse_bins,
    quality_spread,
    residual_scales,
    served_predict,
    training_values,
)

log = logging.getLogger(__name__)


def assemble(kind: str, crossval_dir: Path, processed: Path, dest: Path,
             members: str) -> dict[str, Any]:
    """Copy the chosen fold models to `dest` with a manifest; returns the manifest."""
    folds = json.loads((crossval_dir / "folds.json").read_text())
    chosen = [f for f in folds["folds"] if members == "all" or f["repeat"] == 1]
    names = [f"r{f['repeat']}_k{f['fold']}.keras" for f in chosen]
    data = load_training_set(processed, kind, part="all")
    with np.load(processed) as d:
        phase_grid = d["phase_grid"].tolist() if "phase_grid" in d.files else None
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in names:
        shutil.copy2(crossval_dir / name, dest / name)
    bank = served_bank(TemplateBank.from_npz(processed), folds["metrics"]["stack"],
                       data.channels)
    if bank is not None:  # the dense shapes the bin planes' template features come from
        bank.save(dest / TEMPLATES)
    manifest = {
        "rr_type": kind, "strategy": "ensemble", "members": names,
        "input_shape": list(data.input_shape), "channels": list(data.channels),
        "phase_grid": phase_grid,
        "network": folds["network"], "crossval_run_id": folds["mlflow_run_id"],
        "crossval_metrics": folds["metrics"],
        # what is served: stack weight·network + (1 - weight)·relation, chosen out of fold
        "relation": {k: folds["metrics"]["relation"][k] for k in ("form", "features", "coef")},
        # per bin of epoch counts (rrlfeh.training.served): relation, weight, bin planes
        "stack": {k: v for k, v in folds["metrics"]["stack"].items() if k != "oof"},
    }
    write_json(manifest, dest / MANIFEST)
    return manifest


HELD_OUT_SEED = 7  # the halves of the training stars for the held-out check of feh_std

# full curves' residuals shrink with their epochs (real DR3, out of fold: 0.078 dex at 45-55,
# 0.060 at 55-70, 0.035 above 70), so feh_std is calibrated in finer bins there
FULL_CURVE_EDGES = (55.0, 70.0, 90.0)


def served_bank(bank: TemplateBank | None, stack: Mapping[str, Any],
                channels: tuple[str, ...]) -> TemplateBank | None:
    """The bank the served model needs: where only the bin planes read the template features,
    up to the most epochs a plane is served for (a curve of more epochs gets the line, which
    does not read them: the same predictions, without the template fits' cost), none where no
    bin serves a plane."""
    if bank is None or any(c.endswith("_template") for c in channels):
        return bank
    his = [b["hi"] for b in stack.get("bins", []) if b.get("relation") == "plane"]
    if not his:
        return None
    most = int(np.ceil(max(his))) - 1  # bins hold lo <= n < hi
    return replace(bank, max_epochs=min(bank.max_epochs, most))


def calibration_rows(data, bins: np.ndarray, min_origin_epochs: int) -> np.ndarray:
    """The curves `feh_std` is calibrated on: the curves of stars with at least
    `min_origin_epochs` epochs of their own, theirs and their sparse copies (a label from a
    dense curve, as the dense stars cut to N epochs are judged by); a bin with fewer than
    MIN_BIN_ROWS of those adds the sparser stars' own curves, and with still too few keeps all
    its curves. A sparser star's own curve has a label that is the line of its own noisy φ31:
    its residuals are not a dense label's (real DR3, 35-45 epochs: those own curves within ±1
    feh_std 65 %, the dense stars' copies of as many epochs 75 %, when calibrated together)."""
    n_own = pd.Series(data.n_epochs[~data.is_copy], index=data.source_id[~data.is_copy])
    origin = n_own.reindex(data.source_id).to_numpy(float)
    keep = origin >= min_origin_epochs
    for i in np.unique(bins):
        rows = bins == i
        if (keep & rows).sum() < MIN_BIN_ROWS:
            keep |= rows & ~data.is_copy
        if (keep & rows).sum() < MIN_BIN_ROWS:
            keep |= rows
    return keep


def held_out_errors(residual: np.ndarray, spread: np.ndarray, bins: np.ndarray,
                    star: np.ndarray, n_bins: int, seed: int,
                    quality: np.ndarray | None = None) -> np.ndarray:
    """Each row's `feh_std` calibrated (`residual_scales`) on the stars it is not one of: the
    stars split in two halves (seeded, all copies of a star on one side), each half's errors
    from the other half's calibration."""
    residual, spread = np.asarray(residual, float), np.asarray(spread, float)
    q = None if quality is None else np.asarray(quality, float)
    ids = np.unique(star)
    half = np.isin(star, np.random.default_rng(seed).permutation(ids)[: ids.size // 2])
    total = np.full(residual.size, np.nan)
    for side in (half, ~half):
        sig, k = residual_scales(residual[~side], spread[~side], bins[~side], n_bins,
                                 None if q is None else q[~side])
        per_star = quality_spread(spread[side], None if q is None else q[side], k, bins[side])
        total[side] = np.sqrt(per_star**2 + np.asarray(sig)[bins[side]] ** 2)
    return total


def held_out_coverage(residual: np.ndarray, spread: np.ndarray, bins: np.ndarray,
                      star: np.ndarray, n_bins: int, seed: int,
                      quality: np.ndarray | None = None) -> list[dict[str, float] | None]:
    """Per bin, the coverage of `residual_scales` on stars it was not calibrated on
    (`held_out_errors`): what the calibration promises a new star, not what it was fitted to."""
    total = held_out_errors(residual, spread, bins, star, n_bins, seed, quality)
    return coverage_per_bin(residual, total, bins, n_bins)


def coverage_per_bin(residual: np.ndarray, total: np.ndarray, bins: np.ndarray,
                     n_bins: int) -> list[dict[str, float] | None]:
    """`coverage` of the residuals by their errors in each bin (None for an empty bin)."""
    residual = np.asarray(residual, float)
    return [coverage(residual[bins == i], total[bins == i]) if (bins == i).any() else None
            for i in range(n_bins)]


def fit_quality(data, template_epochs: float) -> np.ndarray:
    """Each curve's fit qualities `feh_std` grows with (served.QUALITY), (curves, qualities),
    as the served model computes them (`network_input.star_values`): φ31's error (unknown in
    arrays written before it was kept), and the disagreement of φ31's estimates with the
    template φ31 only up to `template_epochs`, the most epochs the served bank fits
    (`served_template_epochs`; the training arrays hold templates further up)."""
    from rrlfeh.preprocess.network_input import (
        PHI31_ERROR_UNKNOWN,
        fourier_scalars,
        phi31_disagreement,
    )

    n = len(data)
    error = (np.full(n, PHI31_ERROR_UNKNOWN) if data.phi31_error is None
             else np.asarray(data.phi31_error, float))
    if data.phi31 is None:  # no per-star features kept: nothing to disagree with
        return np.column_stack([error, np.zeros(n)])
    phi31 = np.asarray(data.phi31, float)
    template = (phi31 if data.phi31_template is None else
                np.where(data.n_epochs <= template_epochs, data.phi31_template, phi31))
    smooth = fourier_scalars(data.X[:, :, 0])[0]
    return np.column_stack([error, phi31_disagreement(phi31, smooth, template)])


def served_template_epochs(folder: Path) -> float:
    """The most epochs of a curve the served model fits templates to (its bank's max_epochs;
    0 without a bank)."""
    bank = TemplateBank.from_npz(folder / TEMPLATES) if (folder / TEMPLATES).exists() else None
    return 0.0 if bank is None else float(bank.max_epochs)


def calibration_edges(stack_edges: list[float], n_epochs: np.ndarray) -> list[float]:
    """The bins `feh_std` is calibrated in: the stack's, the last split at FULL_CURVE_EDGES,
    bins of too few curves merged (`served.merge_sparse_bins`)."""
    extra = [e for e in FULL_CURVE_EDGES if stack_edges[-2] < e < stack_edges[-1]]
    return merge_sparse_bins(sorted({*stack_edges, *extra}), n_epochs)


def evaluate_test(ens: Ensemble, test, template_epochs: float
                  ) -> tuple[dict[str, Any], pd.DataFrame]:
    """The test split, used once: the served model's Table-1 figures (the stack of network and
    relation the manifest names), the network's and the relation's alone, and the coverage of
    the per-star error."""
    from rrlfeh.training.baseline import relation_predict

    network, spread = ens.predict(test.X)
    rel, stack = ens.manifest["relation"], ens.manifest["stack"]
    relation = relation_predict(rel, training_values(test))
    served, weight = served_predict(stack, rel, network, training_values(test), test.n_epochs)
    err = ens.total_error(weight * spread, test.n_epochs,
                          quality=fit_quality(test, template_epochs))
    strip = lambda m: {k: v for k, v in m.items() if k != "n"}  # noqa: E731
    m = {"n_stars_test": len(test),
         "test": strip(regression_metrics(test.y, served, test.weights)),
         "network_test": strip(regression_metrics(test.y, network, test.weights)),
         "baseline_test": strip(regression_metrics(test.y, relation, test.weights)),
         "coverage_test": coverage(served - test.y, err)}
    table = pd.DataFrame({"source_id": test.source_id, "feh": test.y, "weight": test.weights,
                          "n_epochs": test.n_epochs, "period": test.period, "feh_pred": served,
                          "network_pred": network, "feh_spread": weight * spread,
                          "feh_std": err, "plane_pred": relation})
    return m, table


def calibrate_period_error(oof_rows: Mapping[str, tuple[np.ndarray, ...]], out_dir: Path,
                           processed_dir: Path, params: Mapping[str, Any], root: Path,
                           metrics: dict[str, Any]) -> None:
    """`feh_std` of stars scored without a period (rrlfeh.training.period_error): the curves
    `feh_std` was calibrated on (the sparse copies and own curves of at most
    `period_error.stars` training stars a type) scored by the model just built with and
    without their period; each type's manifest and metrics get the scatter per bin for
    period-derived rows, from each curve's residual plus its own shift."""
    import tempfile

    from rrlfeh import config
    from rrlfeh.preprocess.augment import COPY_EPOCHS
    from rrlfeh.serving.pipeline import ScoringModel
    from rrlfeh.serving.registry import build_model_folder
    from rrlfeh.sparse_requests import read_bands
    from rrlfeh.training.period_error import (
        calibration_subsets,
        derived_sigmas,
        held_out_derived_coverage,
        period_shifts,
    )

    t = config.section(params, "train")
    pe = dict(t["period_error"])
    acq = config.acquire_params(params, root)
    pre = config.section(params, "preprocess")
    if pre.get("source", "raw") != "raw":
        log.info("train: no period-error calibration for folded curves (no epochs in time)")
        return
    rng = np.random.default_rng(int(pe["seed"]))
    # the calibration rows of at most `stars` stars a type, every curve of each
    chosen_rows = {kind: np.isin(v[3], rng.permutation(np.unique(v[3]))[:int(pe["stars"])])
                   for kind, v in oof_rows.items()}
    star = np.concatenate([v[3][chosen_rows[k]] for k, v in oof_rows.items()])
    copy = np.concatenate([v[4][chosen_rows[k]] for k, v in oof_rows.items()])
    of_kind = np.concatenate([[k] * int(m.sum()) for k, m in chosen_rows.items()])
    ids = np.unique(star).astype(np.int64)
    epochs = pd.read_parquet(acq.out_dir / "epochs.parquet",
                             filters=[("source_id", "in", ids.tolist())])
    copies = pd.read_parquet(processed_dir / COPY_EPOCHS)
    subsets, chosen = calibration_subsets(star, copy, copies, epochs)
    stars = pd.read_parquet(acq.out_dir / "stars.parquet",
                            columns=["source_id", "period", "epoch_max", "type"])
    bands = None
    if pe.get("bands") and acq.source == "files" and acq.files is not None:
        bands = read_bands(acq.files.epochs, ids)
        bands = bands if not bands.empty else None
    with tempfile.TemporaryDirectory() as tmp:
        build_model_folder(out_dir, processed_dir, params, Path(tmp) / "model")
        model = ScoringModel.load(Path(tmp) / "model")
        shifts = period_shifts(model, subsets, chosen, stars, bands,
                               int(config.section(params, "acquire").get("derive", {})
                                   .get("n_jobs", 1)))
    # each calibration row's own shift (NaN: not chosen, or not scored both ways)
    shift = np.full(star.size, np.nan)
    shift[shifts["subset_id"].to_numpy(np.int64)] = shifts["shift"].to_numpy(float)
    for kind, (res, spread, bins, cal_star, _) in oof_rows.items():
        mine = np.full(res.size, np.nan)
        mine[chosen_rows[kind]] = shift[of_kind == kind]
        path = out_dir / kind / MANIFEST
        manifest = json.loads(path.read_text())
        eb = manifest["error_bins"]
        sig, within, counts = derived_sigmas(res, spread, bins, mine, eb["sigma"])
        held = held_out_derived_coverage(res, spread, bins, cal_star, mine, len(eb["sigma"]),
                                         HELD_OUT_SEED)
        eb.update(sigma_period_derived=sig, coverage_period_derived=within,
                  coverage_period_derived_held_out=held,
                  n_period_shifts=counts, period_shift_subsets=int(chosen_rows[kind].sum()),
                  period_shift_scored=int(np.isfinite(mine).sum()))
        write_json(manifest, path)
        metrics[kind]["error_bins"] = eb
        log.info("%s: feh_std without a period, per bin: %s (with it: %s) from %d shifts",
                 kind, ", ".join(f"{v:.3f}" for v in sig),
                 ", ".join(f"{v:.3f}" for v in eb["sigma"]), eb["period_shift_scored"])


def run(crossval_dir: Path, processed_dir: Path, params: Mapping[str, Any], root: Path,
        metrics_path: Path) -> None:
    """Assemble, evaluate (in-sample and out-of-fold) and log the final model of every type."""
    import mlflow

    from rrlfeh import config
    from rrlfeh.training.tracking import TrackingSettings, setup_tracking, stage_run

    t = config.section(params, "train")
    if t.get("strategy", "ensemble") != "ensemble":
        raise config.ConfigError(f"train.strategy {t['strategy']!r}: only 'ensemble' is built")
    members = str(t.get("members", "all"))
    if members not in ("all", "first_repeat"):
        raise config.ConfigError(f"train.members must be all or first_repeat, got {members!r}")
    setup_tracking(TrackingSettings.from_params(config.section(params, "tracking"), root))
    out_dir = root / t["out_dir"]
    metrics: dict[str, Any] = {}
    oof_rows: dict[str, tuple[np.ndarray, ...]] = {}  # what the derived periods' error needs
    for kind in schema.TYPES:
        src = crossval_dir / kind
        if not (src / "folds.json").exists():
            metrics[kind] = {"skipped": "no K-fold models (too few stars to tune)"}
            log.warning("%s: no final model, %s", kind, metrics[kind]["skipped"])
            continue
        processed = processed_dir / f"{kind}.npz"
        manifest = assemble(kind, src, processed, out_dir / kind, members)
        ens = Ensemble.load(out_dir / kind)
        data = load_training_set(processed, kind)
        mean, spread = ens.predict(data.X)
        oof = pd.read_parquet(src / "predictions.parquet")  # every curve, as `data`
        if not np.array_equal(oof["source_id"].to_numpy(), data.source_id):
            raise ValueError(f"{kind}: crossval predictions do not match {processed} (rerun "
                             "`rrlfeh crossval`)")
        own = ~data.is_copy
        fit_m = regression_metrics(data.y[own], mean[own], data.weights[own])
        # the served model's out-of-fold predictions (the stack crossval chose), own curves
        served_oof = oof["served_oof"].to_numpy()
        oof_m = regression_metrics(data.y[own], served_oof[own], data.weights[own])
        _, w = served_predict(manifest["stack"], manifest["relation"], mean,
                              training_values(data), data.n_epochs)
        spread = w * spread
        # the members' spread is model disagreement only; the out-of-fold residuals set the
        # rest of the per-star error (label noise, information the curve does not hold)
        residual_sigma = float(np.sqrt(max(oof_m["rmse"] ** 2 - np.mean(spread[own]**2), 0.0)))
        manifest["residual_sigma"] = residual_sigma
        manifest["residual_model"] = residual_model(
            data.n_epochs[own], served_oof[own] - data.y[own], spread[own])
        # what `feh_std` uses: per bin of epoch counts, calibrated on the out-of-fold residuals
        # of every curve of the bin (sparse copies included) to hold 68 % within ±1σ
        edges = calibration_edges(manifest["stack"].get("edges", [0.0, 1.0e6]), data.n_epochs)
        bins = bin_index(data.n_epochs, edges)
        min_origin = int(t["calibrate_min_epochs"])
        cal = calibration_rows(data, bins, min_origin)
        template_epochs = served_template_epochs(out_dir / kind)
        quality = fit_quality(data, template_epochs)
        res_cal, n_bins = served_oof[cal] - data.y[cal], len(edges) - 1
        sigma, scale = residual_scales(res_cal, spread[cal], bins[cal], n_bins, quality[cal])
        manifest["error_bins"] = {"edges": edges, "copies_min_origin_epochs": min_origin,
                                  "sigma": sigma, "quality": list(QUALITY),
                                  "quality_scale": scale}
        ens.manifest = manifest
        err = ens.total_error(spread, data.n_epochs, quality=quality)
        manifest["error_bins"]["coverage_oof"] = coverage_per_bin(res_cal, err[cal], bins[cal],
                                                                  n_bins)
        held = held_out_errors(res_cal, spread[cal], bins[cal], data.source_id[cal], n_bins,
                               HELD_OUT_SEED, quality[cal])
        manifest["error_bins"]["coverage_held_out"] = coverage_per_bin(res_cal, held, bins[cal],
                                                                       n_bins)
        # the register gate's tie-break: how well feh_std fits stars it was not set on
        manifest["error_bins"]["held_out_nll"] = gaussian_nll(res_cal, held)
        write_json(manifest, out_dir / kind / MANIFEST)
        # the period-derived rows' calibration starts from the per-star part with the period
        oof_rows[kind] = (res_cal,
                          quality_spread(spread[cal], quality[cal], scale, bins[cal]), bins[cal],
                          data.source_id[cal],
                          (np.zeros(len(data), int) if data.copy is None else data.copy)[cal])
        test = load_training_set(processed, kind, part="test")
        m = {"n_members": len(manifest["members"]), "n_stars": int(own.sum()),
             "in_sample": {k: v for k, v in fit_m.items() if k != "n"},
             "out_of_fold": {k: v for k, v in oof_m.items() if k != "n"},
             "spread_median": float(np.median(spread)), "residual_sigma": residual_sigma,
             "residual_model": manifest["residual_model"],
             "error_bins": manifest["error_bins"],
             "spread_p90": float(np.quantile(spread, 0.9))}
        write_parquet(pd.DataFrame({"source_id": data.source_id, "copy": data.copy,
                                    "feh": data.y, "n_epochs": data.n_epochs,
                                    "network_pred": mean, "feh_spread": spread,
                                    "feh_error": err}),
                      out_dir / kind / "training_predictions.parquet")
        if len(test):
            m_test, table = evaluate_test(ens, test, template_epochs)
            m.update(m_test)
            write_parquet(table, out_dir / kind / "test_predictions.parquet")
        metrics[kind] = m
    if oof_rows and t.get("period_error", {}).get("stars", 0) > 0:
        calibrate_period_error(oof_rows, out_dir, processed_dir, params, root, metrics)
    for kind in oof_rows:
        m = metrics[kind]
        manifest = json.loads((out_dir / kind / MANIFEST).read_text())
        src, processed = crossval_dir / kind, processed_dir / f"{kind}.npz"
        with stage_run(f"train {kind}", stage="train", root=root,
                       params={"train": dict(t), "model": manifest["network"]},
                       tags={"rr_type": kind, "crossval_run_id": manifest["crossval_run_id"]},
                       inputs=[processed, src / "folds.json", src / "predictions.parquet"]):
            mlflow.log_metrics({**{f"in_sample_{k}": v for k, v in m["in_sample"].items()},
                                **{f"oof_{k}": v for k, v in m["out_of_fold"].items()},
                                **{f"test_{k}": v for k, v in m.get("test", {}).items()},
                                **{f"relation_test_{k}": v
                                   for k, v in m.get("baseline_test", {}).items()},
                                **{f"network_test_{k}": v
                                   for k, v in m.get("network_test", {}).items()},
                                "stack_weight": manifest["stack"]["weight"],
                                **{f"test_{k}": v for k, v in m.get("coverage_test", {}).items()},
                                "n_members": m["n_members"], "spread_median": m["spread_median"]})
            mlflow.log_artifacts(str(out_dir / kind), artifact_path=f"ensemble_{kind}")
        log.info("%s: ensemble of %d, out-of-fold R2 %.3f RMSE %.3f, median spread %.3f dex",
                 kind, m["n_members"], m["out_of_fold"]["r2"], m["out_of_fold"]["rmse"],
                 m["spread_median"])
        if "test" in m:
            log.info("%s test split (%d stars, used once): served (%s) R2 %.3f RMSE %.3f "
                     "(relation R2 %.3f RMSE %.3f); within 1/2 feh_std %.0f %% / %.0f %%", kind,
                     m["n_stars_test"], manifest["stack"]["served"],
                     m["test"]["r2"], m["test"]["rmse"],
                     m["baseline_test"]["r2"], m["baseline_test"]["rmse"],
                     100 * m["coverage_test"]["within_1sigma"],
                     100 * m["coverage_test"]["within_2sigma"])
    write_json(metrics, metrics_path)
