"""Sparse light curves (paper Fig. 7 extended): curves cut to a few epochs, and how well [Fe/H]
survives the cut.

`draw_subsets` cuts every star with enough clean epochs to N epochs by seeded random draws (and
keeps its full curve); `fit_line` / `line_predict` are the classical [Fe/H] = a + b·P + c·φ31
line; `summarise` gives the figures of one model on one set of subsets, where a subset the
model could not score counts against its share, never silently dropped; `report_table` is the
report's table of them. The stage `sparse` (rrlfeh.stages.sparse) puts them together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

FULL = "full"  # the cut of a star's whole clean curve
MODELS = ("champion", "line", "paper_gru")
MODES = ("with_period", "without_period")


def cut_labels(n_epochs: Sequence[int]) -> list[str]:
    """The cuts in plotting order: each N ascending, then the full curve."""
    return [str(n) for n in sorted(int(n) for n in n_epochs)] + [FULL]


def check_cuts(n_epochs: Sequence[int], n_draws: int, min_epochs: int) -> list[int]:
    """The sizes N, validated: distinct positive integers no larger than `min_epochs` (every
    star kept has that many clean epochs to draw from) and at least one draw."""
    sizes = sorted(int(n) for n in n_epochs)
    if not sizes or sizes[0] < 1 or len(set(sizes)) != len(sizes):
        raise ValueError(f"sparse.n_epochs must be distinct positive integers, got {n_epochs}")
    if sizes[-1] > min_epochs:
        raise ValueError(f"sparse.n_epochs {sizes[-1]} > sparse.min_epochs {min_epochs}: a kept "
                         "star may have fewer clean epochs than that")
    if n_draws < 1:
        raise ValueError(f"sparse.n_draws must be >= 1, got {n_draws}")
    return sizes


def star_rng(seed: int, source_id: int) -> np.random.Generator:
    """The star's own random stream: its draws do not depend on which other stars are cut."""
    return np.random.default_rng([int(seed), int(source_id)])


def draw_subsets(epochs: pd.DataFrame, source_ids: Sequence[int], n_epochs: Sequence[int],
                 n_draws: int, seed: int, min_epochs: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(subsets, their epochs) of the stars `source_ids` with >= `min_epochs` clean epochs
    (`rejected` false; epochs in `time`, or folded points in `phase`): per star, for each N
    ascending, `n_draws` draws of N of its clean epochs without replacement
    (star_rng(seed, source_id).choice, indices sorted, in time or phase order), then the full
    clean curve. subsets: subset_id, source_id, cut ('15' or 'full'), draw, n_epochs;
    the epochs: the chosen rows of `epochs` with their subset_id first."""
    sizes = check_cuts(n_epochs, n_draws, min_epochs)
    clean = epochs[~epochs["rejected"].to_numpy(bool)
                   & epochs["source_id"].isin(np.asarray(source_ids, np.int64))]
    x = "time" if "time" in clean.columns else "phase"
    clean = clean.sort_values(["source_id", x], kind="stable")
    rows, picks, next_id = [], [], 0
    for sid, mine in clean.groupby("source_id", sort=True):
        m = len(mine)
        if m < min_epochs:
            continue
        rng = star_rng(seed, int(sid))
        draws = [(str(n), d, np.sort(rng.choice(m, n, replace=False)))
                 for n in sizes for d in range(n_draws)]
        for cut, d, idx in [*draws, (FULL, 0, np.arange(m))]:
            rows.append((next_id, int(sid), cut, d, len(idx)))
            picks.append(mine.iloc[idx].assign(subset_id=next_id))
            next_id += 1
    subsets = pd.DataFrame(rows, columns=["subset_id", "source_id", "cut", "draw", "n_epochs"])
    subsets = subsets.astype({"subset_id": "int64", "source_id": "int64", "draw": "int64",
                              "n_epochs": "int64"})
    chosen = (pd.concat(picks, ignore_index=True) if picks
              else clean.iloc[:0].assign(subset_id=np.int64(0)))
    return subsets, chosen[["subset_id", *epochs.columns]]


def fit_line(period: np.ndarray, phi31: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(a, b, c) of [Fe/H] = a + b·P + c·φ31 by least squares on the finite rows (>= 3 of them;
    a ValueError otherwise)."""
    period, phi31, y = (np.asarray(v, float) for v in (period, phi31, y))
    ok = np.isfinite(period) & np.isfinite(phi31) & np.isfinite(y)
    if ok.sum() < 3:
        raise ValueError(f"the P-phi31 line needs >= 3 stars with period, phi31 and [Fe/H], "
                         f"got {int(ok.sum())}")
    design = np.column_stack([np.ones(ok.sum()), period[ok], phi31[ok]])
    return np.linalg.lstsq(design, y[ok], rcond=None)[0]


def line_predict(coef: np.ndarray, period: np.ndarray, phi31: np.ndarray) -> np.ndarray:
    """The line's [Fe/H] (NaN where the period or φ31 is)."""
    return coef[0] + coef[1] * np.asarray(period, float) + coef[2] * np.asarray(phi31, float)


CI_RESAMPLES = 1000  # resamples of the stars behind the ±1σ share's 95 % interval


def coverage_interval(inside: np.ndarray, star: np.ndarray, seed: int = 0
                      ) -> tuple[float, float] | None:
    """The 95 % interval of the share of `inside` (a subset within ±1 feh_std) from resampling
    the stars with replacement, each with all its subsets: a star's draws share its label and
    shape, so the stars, not the subsets, are the sample (None for fewer than 2 stars)."""
    ids, which = np.unique(np.asarray(star), return_inverse=True)
    if ids.size < 2:
        return None
    hits = np.bincount(which, weights=np.asarray(inside, float), minlength=ids.size)
    counts = np.bincount(which, minlength=ids.size).astype(float)
    pick = np.random.default_rng(seed).integers(0, ids.size, (CI_RESAMPLES, ids.size))
    shares = hits[pick].sum(axis=1) / counts[pick].sum(axis=1)
    lo, hi = np.quantile(shares, [0.025, 0.975])
    return float(lo), float(hi)


def summarise(label: np.ndarray, feh: np.ndarray, feh_std: np.ndarray | None = None,
              star: np.ndarray | None = None) -> dict[str, Any]:
    """One model on a set of subsets: the share scored (finite feh), RMSE, MAE and R² of the
    scored ones against the label and, with `feh_std`, the shares within 1 and 2 feh_std
    (None where fewer than 2 are scored), with `star` (each subset's star) the ±1σ share's
    95 % interval (`coverage_interval`)."""
    from rrlfeh.evaluation import coverage
    from rrlfeh.training.metrics import regression_metrics

    label, feh = np.asarray(label, float), np.asarray(feh, float)
    ok = np.isfinite(feh) & np.isfinite(label)
    out: dict[str, Any] = {"share": float(ok.mean()) if len(ok) else None,
                           "n_scored": int(ok.sum()), "rmse": None, "mae": None, "r2": None}
    if ok.sum() >= 2:
        m = regression_metrics(label[ok], feh[ok])
        out.update(rmse=m["rmse"], mae=m["mae"], r2=m["r2"] if np.isfinite(m["r2"]) else None)
    if feh_std is not None:
        std = np.asarray(feh_std, float)
        has = ok & np.isfinite(std) & (std > 0)
        c = coverage(feh[has] - label[has], std[has]) if has.sum() >= 2 else {}
        out.update(within_1sigma=c.get("within_1sigma"), within_2sigma=c.get("within_2sigma"))
        if star is not None and has.sum() >= 2:
            ci = coverage_interval(np.abs(feh[has] - label[has]) <= std[has],
                                   np.asarray(star)[has])
            out["within_1sigma_ci"] = None if ci is None else list(ci)
    return out


def metrics_table(predictions: pd.DataFrame, cuts: Sequence[str]) -> dict[str, Any]:
    """type -> mode -> cut -> {n_stars, n_subsets, <model>: summarise(...)} of the predictions
    (one row a subset, mode and model: type, mode, cut, source_id, subset_id, model, label,
    feh, feh_std); a model with no row for a mode is absent there."""
    out: dict[str, Any] = {}
    for kind, by_type in predictions.groupby("type", sort=True):
        out[str(kind)] = {}
        for mode in MODES:
            by_mode = by_type[by_type["mode"] == mode]
            if by_mode.empty:
                continue
            out[str(kind)][mode] = {cut: _cut_metrics(by_mode[by_mode["cut"] == cut])
                                    for cut in cuts if (by_mode["cut"] == cut).any()}
    return out


def _cut_metrics(rows: pd.DataFrame) -> dict[str, Any]:
    """The figures of every model on the subsets of one type, mode and cut."""
    out: dict[str, Any] = {"n_stars": int(rows["source_id"].nunique()),
                           "n_subsets": int(rows["subset_id"].nunique())}
    for model in MODELS:
        mine = rows[rows["model"] == model]
        if len(mine):
            std = mine["feh_std"].to_numpy(float) if model != "line" else None
            out[model] = summarise(mine["label"].to_numpy(float), mine["feh"].to_numpy(float),
                                   std, mine["source_id"].to_numpy())
    return out


def report_table(by_mode: Mapping[str, Any], cuts: Sequence[str]) -> pd.DataFrame:
    """The report's table of one type: a row a cut; per mode the RMSE of each model (the line's
    and the paper GRU's with their share scored where below 100 %), the champion's R², share
    scored and coverage (±1σ with its 95 % interval over the stars where known)."""
    rows = []
    for cut in cuts:
        row: dict[str, str] = {"N": cut}
        for mode, tag in (("with_period", "P given"), ("without_period", "no P")):
            c = by_mode.get(mode, {}).get(cut, {})
            for model, name in (("champion", "champion"), ("line", "line"),
                                ("paper_gru", "paper GRU")):
                row[f"{name} RMSE ({tag})"] = _rmse_cell(c.get(model), model != "champion")
            champ = c.get("champion", {})
            row[f"champion R² ({tag})"] = ("" if champ.get("r2") is None
                                           else f"{champ['r2']:.2f}")
            row[f"scored ({tag})"] = _pct(champ.get("share"))
            ci = champ.get("within_1sigma_ci")
            span = "" if not ci else f" ({100 * ci[0]:.0f}–{100 * ci[1]:.0f})"
            row[f"±1σ / ±2σ ({tag})"] = (f"{_pct(champ.get('within_1sigma'))}{span} / "
                                         f"{_pct(champ.get('within_2sigma'))}" if champ else "")
        rows.append(row)
    return pd.DataFrame(rows)


def _rmse_cell(m: Mapping[str, Any] | None, with_share: bool = True) -> str:
    """'0.213', '0.213 (87 %)' where some subsets were not scored (`with_share`), '–' where
    fewer than 2 were, '' where the model did not run."""
    if not m:
        return ""
    share = m.get("share")
    note = f" ({_pct(share)})" if with_share and share is not None and share < 1 else ""
    return ("–" if m.get("rmse") is None else f"{m['rmse']:.3f}") + note


def _pct(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.0f} %"
