"""Light curves in, [Fe/H] out: derive -> preprocess -> network input -> ensemble -> status.

The one scoring path: the registered pyfunc, the `score` stage and `rrlfeh predict` all call
`score_request`. It runs the training code itself (`rrlfeh.lightcurve.derive` for stars sent
without period / epoch of maximum / type, `rrlfeh.preprocess` with the knobs the model was
trained with, `rrlfeh.preprocess.network_input`), never a copy. Every star of the request comes
back as one row, in input order, with `status` 'ok' or the reason it could not be scored, and
`in_domain` false (with `domain_reason`) where it lies outside what the model was trained on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rrlfeh.data import schema
from rrlfeh.serving.inputs import Request

log = logging.getLogger(__name__)

SETTINGS = "settings.json"
OUTPUT_COLUMNS: dict[str, str] = {
    "source_id": "int64",
    "type": "string",
    "period": "float64",
    "period_derived": "bool",
    "n_epochs": "int64",
    "feh": "float64",
    "feh_std": "float64",
    "feh_spread": "float64",
    "status": "string",
    "in_domain": "bool",
    "domain_reason": "string",
}
_ZERO_POINT = 25.6874  # Gaia G zero point (Vega): a flux for stars sent with magnitudes only
_DEFAULT_MAG_ERROR = 0.01  # mag, where none is given (equal weights in the period search)


@dataclass
class ScoringModel:
    """The ensembles of each type, the settings they were trained with (settings.json) and the
    dense shapes of each type the template features come from (none: the fit's values)."""

    ensembles: dict[str, Any]
    settings: dict[str, Any]
    templates: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, folder: str | Path) -> ScoringModel:
        """Read settings.json and the ensemble folder of each type it lists."""
        from rrlfeh.lightcurve.templates import FILE, TemplateBank
        from rrlfeh.training.ensemble import Ensemble

        folder = Path(folder)
        settings = json.loads((folder / SETTINGS).read_text())
        ensembles = {kind: Ensemble.load(folder / "ensembles" / kind)
                     for kind in settings["types"]}
        banks = {kind: TemplateBank.from_npz(folder / "ensembles" / kind / FILE)
                 for kind in settings["types"]
                 if (folder / "ensembles" / kind / FILE).exists()}
        return cls(ensembles, settings, banks)


def score_request(req: Request, model: ScoringModel, *, derive_n_jobs: int = 1) -> pd.DataFrame:
    """One output row per star of `req` (OUTPUT_COLUMNS), in input order."""
    s = model.settings
    stars = req.stars.copy()
    out = pd.DataFrame({"source_id": stars["source_id"].to_numpy(np.int64)})
    out["type"] = stars["type"].astype(object)
    out["period"] = stars["period"].to_numpy(float)
    out["period_derived"] = False
    out["n_epochs"] = _usable_epochs(req)
    for c in ("feh", "feh_std", "feh_spread"):
        out[c] = np.nan
    status = np.full(len(out), "", dtype=object)
    for i, sid in enumerate(out["source_id"].tolist()):
        if sid in req.problems:
            status[i] = req.problems[sid]
    epoch_max = stars["epoch_max"].to_numpy(float).copy()

    if req.form == "time":
        need = ((status == "") & (np.isnan(out["period"].to_numpy()) | np.isnan(epoch_max)
                                  | out["type"].isna().to_numpy()))
        if need.any():
            _derive(req, out, epoch_max, status, need, s["derive"], derive_n_jobs)
    else:
        no_type = (status == "") & out["type"].isna().to_numpy()
        if len(s["types"]) == 1:  # a model of one type (DG22's RRab) takes folded curves as it
            out.loc[no_type, "type"] = s["types"][0]
        else:
            status[no_type] = "no type given (folded curves need type RRab or RRc)"
        if s.get("needs_period", True):
            _scan_gap_periods(req, out, status, s["preprocess"].get("scan_gaps") or {})
    if s.get("needs_period", True):
        no_period = (status == "") & np.isnan(out["period"].to_numpy())
        status[no_period] = "no period given (this model needs the period of a folded curve)"

    amplitude = np.full(len(out), np.nan)
    notes = np.full(len(out), "", dtype=object)  # why a scored star is out of domain, beside
    scored_by = out["type"].to_numpy(object).copy()
    for kind in schema.TYPES:
        rows = np.flatnonzero((status == "") & (out["type"] == kind).to_numpy())
        if rows.size == 0:
            continue
        model_kind = _model_for(kind, model)
        if model_kind is None:
            status[rows] = f"no {kind} model (too few {kind} training stars)"
            continue
        scored_by[rows] = model_kind
        _score_type(req, model_kind, rows, out, epoch_max, status, amplitude, notes, model)
    status[status == ""] = "ok"
    out["status"] = status
    out["in_domain"], out["domain_reason"] = _domain(out, amplitude, s["domain"], scored_by,
                                                     notes)
    return conform_output(out)


def _scan_gap_periods(req: Request, out: pd.DataFrame, status: np.ndarray,
                      knobs: Mapping[str, Any]) -> None:
    """Folded curves sent without a period get the one Gaia's scan lags left in their phases
    (`rrlfeh.lightcurve.scan_gaps`), as the model's training curves did; unclear: the reason."""
    from rrlfeh.lightcurve.scan_gaps import periods_for

    e = req.epochs
    need = (status == "") & np.isnan(out["period"].to_numpy())
    for kind in pd.unique(out.loc[need, "type"]):  # each type in its own period range
        rows = np.flatnonzero(need & (out["type"] == kind).to_numpy())
        gaps = periods_for(e["source_id"].to_numpy(np.int64), e["phase"].to_numpy(float),
                           out["source_id"].to_numpy(np.int64)[rows], knobs, kind)
        if gaps is None:  # a model registered before the search: the period stays missing
            return
        found = gaps["accepted"].fillna(False).to_numpy(bool)
        out.loc[rows[found], "period"] = gaps["period"].to_numpy(float)[found]
        out.loc[rows[found], "period_derived"] = True
        unclear = ~found & gaps["reason"].notna().to_numpy()
        status[rows[unclear]] = gaps["reason"].to_numpy(object)[unclear]


def _model_for(kind: str, model: ScoringModel) -> str | None:
    """The type's own model, else the other type's (a star typed RRc by the Bailey classifier
    still gets a value from an RRab-only model, flagged out of domain), else None."""
    if kind in model.ensembles:
        return kind
    return next(iter(model.ensembles), None)


def conform_output(out: pd.DataFrame) -> pd.DataFrame:
    """The output columns in order with their dtypes (also for an empty request)."""
    return pd.DataFrame({c: out[c].astype(d) if c in out else pd.Series(dtype=d)
                         for c, d in OUTPUT_COLUMNS.items()}).reset_index(drop=True)


def _usable_epochs(req: Request) -> np.ndarray:
    """Epochs per star that are not flagged and have finite x and mag (in star order)."""
    e = req.epochs
    ok = ~e["rejected"].to_numpy(bool) & np.isfinite(e[req.x_column].to_numpy()) \
        & np.isfinite(e["mag"].to_numpy())
    counts = pd.Series(ok).groupby(e["source_id"].to_numpy()).sum()
    return counts.reindex(req.stars["source_id"]).fillna(0).to_numpy(np.int64)


def _derive(req: Request, out: pd.DataFrame, epoch_max: np.ndarray, status: np.ndarray,
            need: np.ndarray, knobs: Mapping[str, Any], n_jobs: int) -> None:
    """Period, epoch of maximum and type from the light curve where the request lacks them
    (rrlfeh.lightcurve.derive, the acquire stage's own code and knobs); a star sent with its
    period but not its epoch of maximum or type is fitted at that period, not searched; the
    stars' BP/RP epochs, where sent, join G in the period search only."""
    from rrlfeh.lightcurve.derive import derive_light_curve_parameters

    ids = out["source_id"].to_numpy()[need]

    def as_epochs(e: pd.DataFrame) -> pd.DataFrame:
        """Request epochs as schema.EPOCHS: a flux from the magnitude, the default error where
        none was given."""
        mag = e["mag"].to_numpy(float)
        err = e["mag_error"].to_numpy(float)
        err = np.where(np.isfinite(err) & (err > 0), err, _DEFAULT_MAG_ERROR)
        with np.errstate(over="ignore", invalid="ignore"):
            flux = 10.0 ** (-0.4 * (mag - _ZERO_POINT))
        return pd.DataFrame({"source_id": e["source_id"].to_numpy(np.int64),
                             "transit_id": np.arange(len(e), dtype=np.int64),
                             "time": e["time"].to_numpy(float), "mag": mag, "flux": flux,
                             "flux_error": flux * err / schema.MAG_PER_FLUX,
                             "rejected": e["rejected"].to_numpy(bool)})

    epochs = as_epochs(req.epochs[req.epochs["source_id"].isin(ids)])
    bands = None
    if req.bands is not None:
        b = req.bands[req.bands["source_id"].isin(ids)]
        bands = as_epochs(b).assign(band=b["band"].to_numpy()) if len(b) else None
    kw = {k: v for k, v in knobs.items() if k != "n_jobs"}
    given = out["period"].to_numpy(float)[need]  # a given period is fitted at, not searched
    derived = derive_light_curve_parameters(
        epochs, bands=bands, periods=dict(zip(ids.tolist(), given.tolist(), strict=True)),
        n_jobs=max(1, n_jobs), **kw)
    derived = derived.set_index("source_id").reindex(ids)
    rows = np.flatnonzero(need)
    ok = derived["fit_ok"].fillna(False).to_numpy(bool)
    reason = derived["fit_reason"].fillna("no epochs").to_numpy(object)
    status[rows[~ok]] = reason[~ok]
    period = out["period"].to_numpy(float).copy()
    fill_p = rows[ok & np.isnan(period[rows])]
    period[fill_p] = derived["period"].to_numpy(float)[ok & np.isnan(period[rows])]
    out["period"] = period
    out.loc[fill_p, "period_derived"] = True
    fill_e = ok & np.isnan(epoch_max[rows])
    epoch_max[rows[fill_e]] = derived["epoch_max"].to_numpy(float)[fill_e]
    types = out["type"].to_numpy(object).copy()
    fill_t = ok & pd.isna(types[rows])
    types[rows[fill_t]] = derived["type"].to_numpy(object)[fill_t]
    out["type"] = types


def _score_type(req: Request, kind: str, rows: np.ndarray, out: pd.DataFrame,
                epoch_max: np.ndarray, status: np.ndarray, amplitude: np.ndarray,
                notes: np.ndarray, model: ScoringModel) -> None:
    """Preprocess and score the stars of one type (rows of `out`), as in training."""
    from rrlfeh.lightcurve.features import fit_knobs
    from rrlfeh.preprocess import (
        CHANNELS,
        network_input,
        preprocess_folded,
        preprocess_light_curves,
    )
    from rrlfeh.preprocess.network_input import relation_values, star_values
    from rrlfeh.training.served import served_predict

    s = model.settings["preprocess"]
    ids = out["source_id"].to_numpy(np.int64)[rows]
    e = req.epochs[req.epochs["source_id"].isin(ids) & ~req.epochs["rejected"].to_numpy(bool)]
    knobs = dict(s["curves"], n_points=int(s["n_points"][kind]),
                 fourier=fit_knobs(model.settings["derive"]))
    errors = e["mag_error"].to_numpy(float)
    mag_error = errors if s.get("use_mag_error") else None
    if req.form == "time":
        pc, rej = preprocess_light_curves(
            e["source_id"].to_numpy(np.int64), e["time"].to_numpy(float),
            e["mag"].to_numpy(float), out["period"].to_numpy(float)[rows], epoch_max[rows],
            star_id=ids, mag_error=mag_error, feature_error=errors,
            templates=model.templates.get(kind), **knobs)
    else:
        pc, rej = preprocess_folded(
            e["source_id"].to_numpy(np.int64), e["phase"].to_numpy(float),
            e["mag"].to_numpy(float), star_id=ids, period=out["period"].to_numpy(float)[rows],
            mag_error=mag_error, feature_error=errors, align_max=True,
            templates=model.templates.get(kind), **knobs)
    where = pd.Series(rows, index=ids)
    ens = model.ensembles[kind]
    if len(rej):
        rej = rej.drop_duplicates("source_id")
        status[where.reindex(rej["source_id"]).to_numpy()] = rej["reason"].astype(str).to_numpy()
        if "relation" in ens.manifest:
            _relation_alone(e, rej, where, out, status, notes, ens, knobs["fourier"],
                            model.templates.get(kind))
    if len(pc) == 0:
        return
    values = star_values(pc)  # once: the network's per-star channels and the relation's inputs
    need = _network_rows(ens.manifest, pc.n_epochs)
    mean, spread = np.zeros(len(pc)), np.zeros(len(pc))
    if need.any():
        x = network_input(pc, ens.manifest.get("channels", CHANNELS), values)
        mean[need], spread[need] = ens.predict(x if need.all() else x[need],
                                               batch_size=int(model.settings["batch_size"]),
                                               fused=True)
    if "stack" in ens.manifest:  # what the gate chose, per bin of epoch counts
        mean, weight = served_predict(ens.manifest["stack"], ens.manifest["relation"], mean,
                                      relation_values(values), pc.n_epochs)
        spread = weight * spread
    at = where.reindex(pc.source_id).to_numpy()
    out.loc[at, "feh"] = mean
    out.loc[at, "feh_spread"] = spread
    out.loc[at, "feh_std"] = ens.total_error(spread, pc.n_epochs,
                                             out["period_derived"].to_numpy(bool)[at], values)
    out.loc[at, "n_epochs"] = pc.n_epochs
    amplitude[at] = pc.amplitude


def _network_rows(manifest: Mapping[str, Any], n_epochs: np.ndarray) -> np.ndarray:
    """The curves the network runs on: those whose bin of epoch counts gives it a weight (a bin
    serving the relation alone, e.g. the line on dense curves, does not need it: the same
    values, less time)."""
    from rrlfeh.training.served import network_weight

    if "stack" not in manifest:
        return np.ones(len(n_epochs), bool)
    return network_weight(manifest["stack"], n_epochs) > 0


# rejections of the spline for the curve's coverage alone: the Fourier fit of the epochs can
# still give P and φ31 to the classical relation
COVERAGE_REASONS = ("phase gap", "too few points")


def _relation_alone(e: pd.DataFrame, rej: pd.DataFrame, where: pd.Series, out: pd.DataFrame,
                    status: np.ndarray, notes: np.ndarray, ens: Any,
                    fourier: Mapping[str, Any], bank: Any = None) -> None:
    """A value from the classical relation alone for stars whose curve the spline refused only
    for its phase coverage (no curve for the network): P and φ31, R21 from the one Fourier fit of
    their epochs (folded points: at times phase × P, or in phase without one), and from the
    dense shapes of `bank` (a template fit needs no phase origin); flagged out of domain with
    the reason. Stars it cannot fit keep their status. All such stars of a chunk are fitted
    together (`features_of_stars`)."""
    from rrlfeh.lightcurve.features import features_of_stars
    from rrlfeh.lightcurve.templates import bank_features
    from rrlfeh.preprocess.curves import MAG_LIMITS
    from rrlfeh.preprocess.network_input import (
        centred_phi31,
        clipped_phi31_error,
        phi31_disagreement,
        template_values,
    )
    from rrlfeh.training.served import relation_alone

    reason = rej["reason"].astype(str).to_numpy()
    coverage_only = np.array([all(part.startswith(COVERAGE_REASONS) for part in r.split("; "))
                              for r in reason], bool)
    if not coverage_only.any():
        return
    sids = rej["source_id"].to_numpy(np.int64)[coverage_only]
    reason, rows = reason[coverage_only], where.reindex(sids).to_numpy(np.int64)
    period = out["period"].to_numpy(float)[rows]
    mine = e[e["source_id"].isin(sids)]
    star = pd.Index(sids).get_indexer(mine["source_id"].to_numpy(np.int64))
    mag = mine["mag"].to_numpy(float)
    if "time" in mine.columns:
        cycle = period
        t = mine["time"].to_numpy(float)
    else:  # folded: one cycle of the period, or of phase (a model without periods)
        cycle = np.where(np.isfinite(period), period, 1.0)
        t = mine["phase"].to_numpy(float) * cycle[star]
    with np.errstate(invalid="ignore"):
        use = np.isfinite(t) & (mag > MAG_LIMITS[0]) & (mag < MAG_LIMITS[1])
    order = np.argsort(star[use], kind="stable")  # ragged, star by star in `sids` order
    star, t, mag = star[use][order], t[use][order], mag[use][order]
    sigma = mine["mag_error"].to_numpy(float)[use][order]
    n = np.bincount(star, minlength=len(sids))
    if not (n > 0).all():  # no usable epoch: nothing to fit, the status stays
        has = n > 0
        star = (np.cumsum(has) - 1)[star]
        sids, reason, rows, period, cycle, n = (a[has] for a in (sids, reason, rows, period,
                                                                cycle, n))
    offsets = np.r_[0, np.cumsum(n)]
    f = features_of_stars(t, mag, sigma, offsets, cycle, **fourier)
    fit = (centred_phi31(f["phi31"].to_numpy()), f["r21"].to_numpy())
    shape = bank_features(bank, (t / cycle[star]) % 1.0, mag, sigma, n)
    values = {"period": period, "phi31": fit[0], "r21": fit[1],
              "amplitude": f["amplitude"].to_numpy(), **template_values(*shape, *fit)}
    # the relation side of each star's bin of epoch counts (the line, or the bin's plane)
    feh = relation_alone(ens.manifest.get("stack", {"weight": 0.0}), ens.manifest["relation"],
                         values, n)
    ok = np.isfinite(feh)
    if not ok.any():
        return
    # their fit qualities (no smooth curve: the fit's φ31 stands in for the smooth one's)
    quality = {"phi31_error": clipped_phi31_error(f["phi31_error"].to_numpy(),
                                                  np.isfinite(fit[0]) & np.isfinite(fit[1])),
               "phi31_disagreement": phi31_disagreement(fit[0], fit[0],
                                                        values["phi31_template"])}
    error = ens.total_error(np.zeros(len(sids)), n,
                            out["period_derived"].to_numpy(bool)[rows], quality)
    at = rows[ok]
    status[at] = ""
    notes[at] = [f"{r}: no curve for the network, [Fe/H] from the classical relation alone"
                 for r in reason[ok]]
    out.loc[at, "feh"] = feh[ok]
    out.loc[at, "feh_spread"] = 0.0
    out.loc[at, "n_epochs"] = n[ok]
    out.loc[at, "feh_std"] = error[ok]


def _domain(out: pd.DataFrame, amplitude: np.ndarray, domain: Mapping[str, Any],
            scored_by: np.ndarray, notes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Whether each scored star is like the training stars, and why not: scored by another
    type's model, fewer epochs than the cut, amplitude above the cut, period outside the training
    range of its type (which also checks the Bailey classifier's type against the periods the
    model was trained on)."""
    reasons = [[] for _ in range(len(out))]
    ok = (out["status"] == "ok").to_numpy()
    n = out["n_epochs"].to_numpy()
    period = out["period"].to_numpy(float)
    types = out["type"].to_numpy(object)
    min_epochs = domain.get("min_epochs")
    max_amp = domain.get("max_amplitude")
    for i in np.flatnonzero(ok):
        if notes[i]:
            reasons[i].append(notes[i])
        if scored_by[i] != types[i]:
            reasons[i].append(f"type {types[i]} has no model: scored by the {scored_by[i]} model")
        if min_epochs is not None and n[i] < min_epochs:
            reasons[i].append(f"{n[i]} epochs < {min_epochs} (training cut)")
        if max_amp is not None and amplitude[i] > max_amp:
            reasons[i].append(f"amplitude {amplitude[i]:.2f} > {max_amp:g} mag (training cut)")
        lo, hi = domain.get("period_range", {}).get(scored_by[i], (None, None))
        if lo is not None and not lo <= period[i] <= hi:
            reasons[i].append(f"period {period[i]:.4f} d outside the {scored_by[i]} training "
                              f"range {lo:.3f}-{hi:.3f} d")
    text = np.array(["; ".join(r) if ok[i] else "not scored" for i, r in enumerate(reasons)],
                    dtype=object)
    return ok & (text == ""), text
