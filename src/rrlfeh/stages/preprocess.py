"""Stage `preprocess`: fold, smooth, resample, standardise; KDE weights and strata; one array
file a type (data/processed/<type>.npz) holding everything training needs, plus the figures.

Input is either the stars kept by `validate` with their raw epochs (source `raw`) or curves that
were folded elsewhere (source `folded`, e.g. DG22). Curves that cannot be processed are written to
data/processed/rejected.parquet with the reason.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rrlfeh.data import schema
from rrlfeh.io import atomic_path, write_json, write_parquet
from rrlfeh.lightcurve.templates import TemplateBank, build_bank
from rrlfeh.preprocess.augment import (
    COPY_EPOCHS,
    AugmentSettings,
    append_copies,
    sparse_copies,
)
from rrlfeh.preprocess.curves import ProcessedCurves, preprocess_folded, preprocess_tables
from rrlfeh.preprocess.network_input import CHANNELS, network_input, star_values, uses_period
from rrlfeh.reasons import reason_counts
from rrlfeh.weights import feh_strata, kde_weights, stratified_split

log = logging.getLogger(__name__)


def test_split(strata: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the stratified test split: set aside here, before any search or fit, and
    used once, by `train`, to report the final model (never to choose anything)."""
    is_test = np.zeros(len(strata), bool)
    if fraction > 0 and len(strata) > 1:
        is_test[stratified_split(strata, fraction, seed)[1]] = True
    return is_test


def curve_arrays(pc: ProcessedCurves, channels: Sequence[str] = CHANNELS
                 ) -> dict[str, np.ndarray]:
    """The per-curve arrays of processed curves: X (network input, `channels` per step) and the
    per-star values the baselines, the domain and the figures read."""
    values = star_values(pc)
    return {
        "X": network_input(pc, channels, values), "source_id": pc.source_id,
        "period": pc.period, "amplitude": pc.amplitude, "mean_mag": pc.mean_mag,
        "std_mag": pc.std_mag, "n_epochs": pc.n_epochs, "n_clipped": pc.n_clipped,
        "spline_log10_lam": pc.log10_lam,
        "spline_edf": pc.edf, "spline_resid_rms": pc.resid_rms, "spline_gcv": pc.gcv,
        "max_phase_gap": pc.max_phase_gap, "phase_shift": pc.phase_shift,
        # the per-star features as the network's channels carry them (the baselines' inputs)
        # (not the disagreement of φ31's estimates: train recomputes it with the served bank)
        **{f"star_{k}": v for k, v in values.items()
           if k not in ("period_d", "phi31_disagreement")},
        "fourier_harmonics": pc.fourier_harmonics,
    }


def training_arrays(pc: ProcessedCurves, feh: np.ndarray, *, weights: Mapping[str, Any],
                    strata: Mapping[str, Any], split: Mapping[str, Any],
                    channels: Sequence[str] = CHANNELS) -> dict[str, np.ndarray]:
    """The arrays of one type: the curves' (`curve_arrays`), y, KDE weights fitted on the
    training stars only, strata, the test-split mask, the channels and the phase grid."""
    n = len(pc)
    s = feh_strata(feh, **strata) if n else np.empty(0, dtype=int)
    is_test = test_split(s, float(split.get("fraction", 0.0)), int(split.get("seed", 0)))
    if is_test.any():  # the K-fold strata: bins of the training stars alone (test stars: -1)
        s = np.full(n, -1)
        s[~is_test] = feh_strata(feh[~is_test], **strata)
    w = kde_weights(feh, fit=~is_test, **weights) if n else np.empty(0)
    return {**curve_arrays(pc, channels), "y": feh.astype(np.float32),
            "weights": w.astype(np.float32), "strata": s.astype(np.int16), "is_test": is_test,
            "channels": np.array(channels), "phase_grid": pc.phase_grid,
            "copy": np.zeros(n, np.int16)}


def with_copies(arrays: dict[str, np.ndarray], stars: pd.DataFrame, epochs: pd.DataFrame,
                process, s: AugmentSettings, channels: Sequence[str],
                bank: TemplateBank | None = None
                ) -> tuple[dict[str, np.ndarray], dict[str, Any], pd.DataFrame]:
    """The arrays with the sparse copies of every training star appended (`augment`), what
    became of the copies (made, kept, refused by the preprocessing and why) and the kept
    copies' epochs (`copy_epochs`). A copy never matches its own star's template in `bank`."""
    train_ids = arrays["source_id"][~arrays["is_test"]]
    train_stars = stars[stars["source_id"].isin(train_ids)]
    copy_epochs, copies = sparse_copies(epochs, train_stars, s)
    if copies.empty:
        return (arrays, {"n_made": 0, "n_kept": 0, "refused_by_reason": {}},
                copy_epochs_of(copy_epochs, copies.set_index("source_id")))
    pc, rej = process(copy_epochs, copies, templates=bank,
                      template_exclude=copies["origin"].to_numpy(np.int64))
    made = copies.set_index("source_id").loc[pc.source_id]
    out = append_copies(arrays, curve_arrays(pc, channels), made["origin"].to_numpy(np.int64),
                        made["copy"].to_numpy(), s.copy_weight,
                        [k for k in curve_arrays(pc, channels) if k != "source_id"])
    refused = rej.drop_duplicates("source_id")["reason"]
    kept = copy_epochs_of(copy_epochs, made)
    return out, {"n_made": len(copies), "n_kept": len(pc),
                 "refused_by_reason": reason_counts(refused),
                 "kept_by_size": {int(k): int(v) for k, v in
                                  made["n_subset"].value_counts().sort_index().items()}}, kept


def copy_epochs_of(copy_epochs: pd.DataFrame, kept: pd.DataFrame) -> pd.DataFrame:
    """The epochs of the copies `kept` (sparse_copies' rows indexed by the copy's id) under
    their star's source_id and their number `copy` (as the training arrays name them): what
    `train` sends again to calibrate `feh_std` without a period on the very curves it was
    calibrated on."""
    rows = copy_epochs[copy_epochs["source_id"].isin(kept.index)]
    at = kept.reindex(rows["source_id"].to_numpy())
    return rows.assign(source_id=at["origin"].to_numpy(np.int64),
                       copy=at["copy"].to_numpy(np.int64)).reset_index(drop=True)


def save_npz(arrays: Mapping[str, np.ndarray], path: Path) -> Path:
    """np.savez through a temporary file and a rename (a crash never leaves half a file)."""
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)
    return path


def from_raw(raw_dir: Path, validated: Path, p: Mapping[str, Any],
             fourier: Mapping[str, Any]):
    """Per type: (stars with labels, processed curves, rejected, (epochs, the preprocessing of
    any epochs and stars with the type's knobs)) from validated stars + epochs."""
    stars = pd.read_parquet(validated)
    epochs = pd.read_parquet(raw_dir / "epochs.parquet")
    epochs = epochs[epochs["source_id"].isin(stars["source_id"])]
    for kind in schema.TYPES:
        s = stars[stars["type"] == kind].reset_index(drop=True)
        e = epochs[epochs["source_id"].isin(s["source_id"])]

        def process(e_: pd.DataFrame, s_: pd.DataFrame, kind: str = kind, **templates):
            return preprocess_tables(e_, s_, use_mag_error=bool(p.get("use_mag_error", True)),
                                     n_points=int(p["n_points"][kind]), fourier=dict(fourier),
                                     **dict(p.get("curves", {})), **templates)

        pc, rej = process(e, s)
        yield kind, s, pc, rej, (e, process)


def from_folded(root: Path, p: Mapping[str, Any], fourier: Mapping[str, Any]):
    """The pre-folded curves of labelled stars (one type), with periods when given; labelled stars
    without a curve are rejected with that reason (unlabelled curves are for scoring, not here)."""
    from rrlfeh.data.dg22 import read_dg22_curves, read_dg22_labels
    from rrlfeh.data.layouts import read_table

    f = p["folded"]
    kind = f.get("type", "RRab")
    curves = read_dg22_curves(root / f["curves"])
    labels = read_dg22_labels(root / f["labels"])
    has_curve = labels["source_id"].isin(curves["source_id"])
    no_curve = pd.DataFrame({"source_id": labels.loc[~has_curve, "source_id"],
                             "reason": "labelled but no folded light curve"})
    stars = labels[has_curve].reset_index(drop=True)
    period = np.full(len(stars), np.nan)
    if f.get("periods"):
        per = read_table(root / f["periods"]).set_index("source_id")["period"]
        period = per.reindex(stars["source_id"]).to_numpy(float)
    c = curves[curves["source_id"].isin(stars["source_id"])]
    period, from_gaps, unclear = folded_periods(c, stars["source_id"].to_numpy(np.int64), period,
                                                f.get("scan_gaps"),
                                                uses_period(p.get("channels", CHANNELS)), kind)
    stars = stars.assign(type=kind, period=period, amplitude_g=np.nan,
                         period_derived=from_gaps)
    stars, no_curve = stars[~stars["source_id"].isin(unclear["source_id"])], pd.concat(
        [no_curve, unclear], ignore_index=True)
    # folded: the phase origin is the curve's own
    stars = stars.reset_index(drop=True).assign(epoch_max=np.nan)
    c = c[c["source_id"].isin(stars["source_id"])].assign(rejected=False)

    def process(e_: pd.DataFrame, s_: pd.DataFrame, **templates):
        return preprocess_folded(e_["source_id"].to_numpy(np.int64), e_["phase"].to_numpy(float),
                                 e_["mag"].to_numpy(float), star_id=s_["source_id"].to_numpy(),
                                 period=s_["period"].to_numpy(float),
                                 n_points=int(p["n_points"][kind]),
                                 align_max=bool(f.get("align_max", True)),
                                 fourier=dict(fourier), **dict(p.get("curves", {})), **templates)

    pc, rej = process(c, stars)
    # sparse copies and shape templates as for raw epochs: subsets of the folded points
    yield kind, stars, pc, pd.concat([rej, no_curve], ignore_index=True), (c, process)
    for other in schema.TYPES:
        if other != kind:
            yield (other, stars.iloc[:0], _empty_like(pc, int(p["n_points"][other])),
                   rej.iloc[:0], None)


def folded_periods(curves: pd.DataFrame, star_id: np.ndarray, period: np.ndarray,
                   scan_gaps: Mapping[str, Any] | None, needed: bool, kind: str = "RRab"
                   ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """Each star's period: the given one, else, when the model `needed` one, the one Gaia's scan
    lags put in its phases (with `scan_gaps`: `rrlfeh.lightcurve.scan_gaps`). Returns the
    periods, which came from the phases, and the stars left without one, with the reason."""
    period = np.asarray(period, float).copy()
    from_gaps = np.zeros(len(period), bool)
    unclear = pd.DataFrame({"source_id": pd.Series([], dtype=np.int64), "reason": []})
    missing = np.isnan(period)
    if not (needed and missing.any()):
        return period, from_gaps, unclear
    from rrlfeh.lightcurve.scan_gaps import periods_for

    gaps = periods_for(curves["source_id"].to_numpy(np.int64), curves["phase"].to_numpy(float),
                       star_id[missing], scan_gaps, kind)
    if gaps is not None:
        found = gaps["period"].to_numpy(float)
        period[missing] = found
        from_gaps[missing] = np.isfinite(found)
        log.info("preprocess: periods from Gaia's scan gaps for %d of %d folded curves without "
                 "one", int(from_gaps.sum()), int(missing.sum()))
        lost = gaps["accepted"].eq(False).to_numpy()  # searched, and no clear period
        unclear = pd.DataFrame({"source_id": gaps.index[lost].to_numpy(np.int64),
                                "reason": gaps["reason"][lost].to_numpy(object)})
    else:
        unclear = pd.DataFrame({"source_id": star_id[missing],
                                "reason": "no period given (the channels need one)"})
    return period, from_gaps, unclear.reset_index(drop=True)


def _empty_like(pc: ProcessedCurves, n_points: int) -> ProcessedCurves:
    """A ProcessedCurves with no stars (a type absent from the input still gets its file)."""
    fields = {k: v[:0] for k, v in vars(pc).items()}
    fields["curves"] = np.empty((0, n_points), np.float32)
    fields["time_in_cycle"] = np.empty((0, n_points), np.float32)
    fields["phase_grid"] = np.arange(n_points) / n_points
    return ProcessedCurves(**fields)


def template_bank(pc: ProcessedCurves, is_test: np.ndarray, p: Mapping[str, Any]
                  ) -> TemplateBank | None:
    """The bank of dense shapes (`rrlfeh.lightcurve.templates`): the training stars' own curves
    with at least templates.min_epochs epochs, never a test star; None when switched off."""
    t = dict(p or {})
    if not t.get("enabled", False):
        return None
    dense = ~is_test & (pc.n_epochs >= int(t["min_epochs"]))
    return build_bank(pc.curves[dense], pc.phi31[dense], pc.r21[dense], pc.source_id[dense],
                      grid=int(t["grid"]), max_templates=int(t["max_templates"]),
                      max_epochs=int(t["max_epochs"]), seed=int(t["seed"]))


def figures(stars: pd.DataFrame, arrays: Mapping[str, Mapping[str, np.ndarray]], out: Path) -> None:
    """Paper Figs. 1-3: Bailey diagram, standardised curves, [Fe/H] with the weights."""
    from rrlfeh import plots

    plots.bailey_diagram(stars["period"].to_numpy(float), stars["amplitude_g"].to_numpy(float),
                         stars["feh"].to_numpy(float), stars["type"].to_numpy(str),
                         out / "bailey.png")
    own = {k: a["copy"] == 0 for k, a in arrays.items()}  # the stars, not their sparse copies
    plots.standardised_curves(None, {k: a["X"][own[k], :, 0] for k, a in arrays.items()
                                     if own[k].any()}, out / "curves.png")
    feh = np.concatenate([a["y"][own[k]] for k, a in arrays.items()])
    w = np.concatenate([a["weights"][own[k]] for k, a in arrays.items()])
    by_type = np.concatenate([[k] * int(own[k].sum()) for k in arrays])
    plots.feh_distribution(feh, w, out / "feh_weights.png", by_type=by_type)


def run(raw_dir: Path, validated: Path, p: Mapping[str, Any], root: Path,
        metrics_path: Path, fourier: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Process every type; write <type>.npz, rejected.parquet, figures and metrics. `fourier`:
    the Fourier-fit knobs of the per-star features (config.fourier_knobs)."""
    fourier = fourier or {}
    out_dir = root / p.get("out_dir", "data/processed")
    source = p.get("source", "raw")
    if source not in ("raw", "folded"):
        raise ValueError(f"preprocess.source must be 'raw' or 'folded', got {source!r}")
    parts = (from_raw(raw_dir, validated, p, fourier) if source == "raw"
             else from_folded(root, p, fourier))
    metrics: dict[str, Any] = {"source": source, "by_type": {}}
    arrays, rejected, all_stars, copy_epochs = {}, [], [], []
    t0 = time.perf_counter()
    augment = AugmentSettings.from_params(p.get("augment"))
    for kind, stars, pc, rej, raw in parts:
        feh = stars.set_index("source_id")["feh"].reindex(pc.source_id).to_numpy(float)
        channels = p.get("channels", CHANNELS)
        arrays_of = partial(training_arrays, feh=feh, weights=p.get("weights", {}),
                            strata=p.get("strata", {}), split=p.get("test_split", {}),
                            channels=channels)
        arrays[kind] = arrays_of(pc)
        bank = (template_bank(pc, arrays[kind]["is_test"], p.get("templates"))
                if raw is not None and len(pc) else None)
        if bank is not None:  # again with the bank: the stars' own curves, each not its own
            pc, _ = raw[1](raw[0], stars, templates=bank,
                           template_exclude=stars["source_id"].to_numpy(np.int64))
            arrays[kind] = arrays_of(pc)
            log.info("preprocess %s: %d dense training curves as shape templates", kind,
                     len(bank))
        copies: dict[str, Any] = {"n_made": 0, "n_kept": 0}
        if augment.copies > 0 and raw is not None and len(pc):
            arrays[kind], copies, kept = with_copies(arrays[kind], stars, raw[0], raw[1],
                                                     augment, channels, bank)
            copy_epochs.append(kept)
            log.info("preprocess %s: %d sparse copies of the training stars kept of %d made "
                     "(%s epochs)", kind, copies["n_kept"], copies["n_made"],
                     "/".join(map(str, augment.n_epochs)))
        save_npz({**arrays[kind], **(bank.arrays() if bank is not None else {})},
                 out_dir / f"{kind}.npz")
        rejected.append(rej.assign(stage="preprocess"))
        all_stars.append(stars)
        metrics["by_type"][kind] = {
            "n_in": len(stars), "n_kept": len(pc), "n_rejected": len(rej),
            "n_test": int(arrays[kind]["is_test"].sum()),
            "median_spline_resid_rms": float(np.median(pc.resid_rms)) if len(pc) else None,
            "median_spline_edf": float(np.median(pc.edf)) if len(pc) else None,
            "n_epochs_clipped": int(pc.n_clipped.sum()),
            "n_stars_with_clipped_epochs": int((pc.n_clipped > 0).sum()),
            "n_points": int(pc.curves.shape[1]),
            "sparse_copies": copies,
        }
        log.info("preprocess %s: %d in, %d kept, %d rejected (%.1f s)", kind, len(stars), len(pc),
                 len(rej), time.perf_counter() - t0)
        t0 = time.perf_counter()
    rej = pd.concat(rejected, ignore_index=True)
    write_parquet(schema.conform(rej, schema.REJECTED, "rejected"), out_dir / "rejected.parquet")
    write_parquet(pd.concat(copy_epochs, ignore_index=True) if copy_epochs
                  else pd.DataFrame({"source_id": np.zeros(0, np.int64),
                                     "copy": np.zeros(0, np.int64)}),
                  out_dir / COPY_EPOCHS)
    metrics["rejected_by_reason"] = reason_counts(rej["reason"])
    figures(pd.concat(all_stars, ignore_index=True), arrays, root / p.get("figures_dir",
                                                                          "reports/figures"))
    write_json(metrics, metrics_path)
    return metrics
