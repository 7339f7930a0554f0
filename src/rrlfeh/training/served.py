"""What is served, by the number of epochs of a curve: w·network + (1 − w)·relation per bin of
epoch counts, all chosen out of fold.

On full curves the labels are a line in P and φ31, so the line is hard to beat there; on sparse
curves φ31 of 15-25 epochs is noisy and the line fails, while a network trained on sparse copies
(`rrlfeh.preprocess.augment`), or a plane refitted on the curves of that many epochs (with R21
and the amplitude, its inputs clipped to the full curves' range), does better. So each bin of
epoch counts gets its own choice: the relation (the full curves' line, or the bin's plane) and
the network's weight w, whichever has the lowest out-of-fold RMSE on the bin's curves (stars'
own curves and copies alike). A guard keeps the served model no worse than the line on the
stars' own curves out of fold, the gate's comparison; last, the bins that hold enough stars' own
curves serve the line, with one network weight chosen on those curves (`_full_curve_bins`).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rrlfeh.training.baseline import STACK_STEP, LinearRelation, relation_predict, rmse

MIN_BIN_ROWS = 30       # fewer curves in a bin: merged into the next denser bin
# the bin planes' inputs beside the line's: φ31 and R21 of the dense shapes that fit the curve
# best (rrlfeh.lightcurve.templates) are far less noisy than the fit's on 15-30 epochs
EXTRA_FEATURES = ("r21", "amplitude", "phi31_template", "r21_template")
CLIP_QUANTILES = (0.005, 0.995)        # the bin planes' inputs clipped to the full curves' range
OPEN_END = 1.0e6  # the last bin's upper edge in epochs (a finite number: JSON has no infinity)
MIN_OWN_CURVES = 10  # a bin with this many stars' own curves is chosen on them


def epoch_edges(sizes: Sequence[int]) -> list[float]:
    """Bin edges in epoch counts, midway between the sparse copies' sizes (the last one 5 above
    the largest): [0, 17.5, 22.5, 27.5, 35, 45, OPEN_END] for sizes 15-40; [0, OPEN_END]
    without copies."""
    s = sorted({int(n) for n in sizes})
    if not s:
        return [0.0, OPEN_END]
    return [0.0, *[(a + b) / 2 for a, b in zip(s, s[1:], strict=False)], s[-1] + 5.0, OPEN_END]


def bin_index(n_epochs: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """The bin of each epoch count (bin i holds edges[i] <= n < edges[i + 1])."""
    e = np.asarray(edges, float)
    return np.clip(np.searchsorted(e, np.asarray(n_epochs, float), side="right") - 1, 0,
                   len(e) - 2)


def merge_sparse_bins(edges: Sequence[float], n_epochs: np.ndarray,
                      min_rows: int = MIN_BIN_ROWS) -> list[float]:
    """`edges` with bins of fewer than `min_rows` curves merged into their denser neighbour."""
    edges = list(edges)
    while len(edges) > 2:
        counts = np.bincount(bin_index(n_epochs, edges), minlength=len(edges) - 1)
        low = [i for i, c in enumerate(counts) if c < min_rows]
        if not low:
            break
        i = low[0]
        edges.pop(i + 1 if i < len(counts) - 1 else i)  # drop the edge to its neighbour
    return edges


def features_of(values: Mapping[str, np.ndarray], features: Sequence[str],
                clip: Sequence[Sequence[float]] | None = None) -> np.ndarray:
    """(N, k) matrix of per-star values by name, each clipped to its [lo, hi] when given."""
    f = np.column_stack([np.asarray(values[c], float) for c in features])
    if clip is not None:
        lo, hi = np.asarray(clip, float).T
        f = np.clip(f, lo, hi)
    return f


def training_values(data) -> dict[str, np.ndarray]:
    """The relations' inputs of a TrainingSet by name."""
    return {"period": data.period, "phi31": data.phi31, "r21": data.r21,
            "amplitude": data.amplitude,
            "phi31_template": data.phi31 if data.phi31_template is None else data.phi31_template,
            "r21_template": data.r21 if data.r21_template is None else data.r21_template}


def _copy_of_fit(values: Mapping[str, np.ndarray], name: str) -> bool:
    """True for a template feature that only repeats the fit's (no bank: the same column twice)."""
    base = name.removesuffix("_template")
    return base != name and np.array_equal(values[name], values[base])


def _bin_plane_oof(data, features: Sequence[str], clip, folds, b: np.ndarray,
                   n_bins: int) -> np.ndarray:
    """Out-of-fold predictions of each bin's plane (mean over repeats; NaN where a fold's
    training part had too few curves of the bin)."""
    f, y = features_of(training_values(data), features, clip), data.y
    n_repeats = max(r for r, _, _ in folds)
    oof = np.full((n_repeats, len(data)), np.nan)
    for r, tr, va in folds:
        for i in range(n_bins):
            fit, apply = tr[b[tr] == i], va[b[va] == i]
            if len(fit) >= max(MIN_BIN_ROWS // 2, f.shape[1] + 5) and len(apply):
                oof[r - 1, apply] = LinearRelation().fit(f[fit], y[fit]).predict(f[apply])
    with warnings.catch_warnings():  # a row no repeat could fit stays NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(oof, axis=0)


def best_weight(y: np.ndarray, net: np.ndarray, rel: np.ndarray) -> tuple[float, float]:
    """(w, RMSE) of the best w·net + (1 − w)·rel on the STACK_STEP grid: the relation is w = 0,
    so the result is never worse than it."""
    grid = np.round(np.arange(0.0, 1.0 + STACK_STEP / 2, STACK_STEP), 10)
    scores = [rmse(y, w * net + (1 - w) * rel) for w in grid]
    i = int(np.argmin(scores))
    return float(grid[i]), float(scores[i])


def choose_served(data, network_oof: np.ndarray, line_oof: np.ndarray,
                  folds: Sequence[tuple[int, np.ndarray, np.ndarray]], edges: Sequence[float],
                  line: Mapping[str, Any], own_curves_line: bool = True
                  ) -> tuple[dict[str, Any], np.ndarray]:
    """Per bin of epoch counts, the relation ('line' or 'plane') and the network's weight with
    the lowest out-of-fold RMSE, the planes refitted on all training curves of their bin, then
    (`own_curves_line`, for labels that are the line of each curve's own φ31) the line on the
    bins of full curves (`_full_curve_bins`); returns the `stack` description and the served
    out-of-fold prediction of every row."""
    own = ~data.is_copy
    edges = merge_sparse_bins(edges, data.n_epochs)
    b, n_bins = bin_index(data.n_epochs, edges), len(edges) - 1
    vals = training_values(data)
    features = [f for f in dict.fromkeys([*line["features"], *EXTRA_FEATURES])
                if not _copy_of_fit(vals, f)]
    clip = [[float(v) for v in np.quantile(np.asarray(vals[c], float)[own], CLIP_QUANTILES)]
            for c in features]
    plane_oof = _bin_plane_oof(data, features, clip, folds, b, n_bins)
    served, bins = np.empty(len(data)), []
    for i in range(n_bins):
        rows = b == i
        y, net = data.y[rows], network_oof[rows]
        options = {"line": line_oof[rows]}
        if np.isfinite(plane_oof[rows]).all():
            options["plane"] = plane_oof[rows]
        scored = {k: best_weight(y, net, rel) for k, rel in options.items()}
        kind = min(scored, key=lambda k: scored[k][1])
        w, best = scored[kind]
        # the guard: on the stars' own curves of the bin, never worse than the line
        mine = own[rows]
        pred = w * net + (1 - w) * options[kind]
        if mine.any() and rmse(y[mine], pred[mine]) > rmse(y[mine], options["line"][mine]):
            kind = "line"
            w, _ = best_weight(y[mine], net[mine], options["line"][mine])
            pred = w * net + (1 - w) * options["line"]
            best = rmse(y, pred)
        served[rows] = pred
        entry = {"lo": edges[i], "hi": edges[i + 1], "n_curves": int(rows.sum()),
                 "n_own": int(mine.sum()), "relation": kind, "weight": w, "oof_rmse": best,
                 "network_oof_rmse": rmse(y, net), "line_oof_rmse": rmse(y, line_oof[rows]),
                 "plane_oof_rmse": (rmse(y, options["plane"]) if "plane" in options
                                    else None)}
        if kind == "plane":
            f = features_of(vals, features, clip)
            entry["coef"] = [float(c) for c in LinearRelation().fit(
                f[rows], data.y[rows]).coef_]
        bins.append(entry)
    stack = {"edges": [float(e) for e in edges], "bins": bins, "features": features,
             "clip": clip}
    if not own_curves_line:
        return stack, served
    return _full_curve_bins(data, stack, network_oof, line_oof, served)


def _full_curve_bins(data, stack: dict[str, Any], network_oof: np.ndarray, line_oof: np.ndarray,
                     served_oof: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """The bins that hold stars' own curves serve the line, with one network weight chosen on
    all the stars' own curves of those bins together: a label is the line of the φ31 of the
    star's own epochs, so on a full curve the line is what the label is, whatever its number of
    epochs; a bin plane fitted on copies only adds noise there (real DR3: 0.089 against the
    line's 0.082 on the test split when bins of 30-45 epochs served planes), and a weight per
    bin, chosen on a few dozen curves, is noise too."""
    own, served_oof = ~data.is_copy, served_oof.copy()
    b = bin_index(data.n_epochs, stack["edges"])
    full = [i for i in range(len(stack["bins"])) if ((b == i) & own).sum() >= MIN_OWN_CURVES]
    mine = np.isin(b, full) & own
    w, _ = best_weight(data.y[mine], network_oof[mine], line_oof[mine]) if full else (0, 0)
    for i in full:
        e, rows = stack["bins"][i], b == i
        served_oof[rows] = w * network_oof[rows] + (1 - w) * line_oof[rows]
        e.pop("coef", None)
        e.update(relation="line", weight=w, chosen_on="the stars' own curves",
                 oof_rmse=rmse(data.y[rows], served_oof[rows]))
    return stack, served_oof


def network_weight(stack: Mapping[str, Any], n_epochs: np.ndarray) -> np.ndarray:
    """The network's weight w in each curve's served value: its bin's (one weight for a stack
    without bins). Where w is 0 the network's prediction is not needed."""
    n_epochs = np.asarray(n_epochs)
    if "bins" not in stack:
        return np.full(len(n_epochs), float(stack["weight"]))
    return np.array([e["weight"] for e in stack["bins"]], float)[
        bin_index(n_epochs, stack["edges"])]


def served_predict(stack: Mapping[str, Any], line: Mapping[str, Any], network: np.ndarray,
                   values: Mapping[str, np.ndarray], n_epochs: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(served [Fe/H], the network's weight) of each curve: its bin's choice of stack.
    A stack without bins (older models) is one weight over all curves."""
    network = np.asarray(network, float)
    line_pred = relation_predict(line, values)
    w = network_weight(stack, n_epochs)
    if "bins" not in stack:
        return w * network + (1 - w) * line_pred, w
    b = bin_index(n_epochs, stack["edges"])
    rel = line_pred.copy()
    f = features_of(values, stack["features"], stack["clip"])
    for i, entry in enumerate(stack["bins"]):
        rows = (b == i) & (entry["relation"] == "plane")
        if rows.any():
            coef = np.asarray(entry["coef"], float)
            rel[rows] = coef[0] + f[rows] @ coef[1:]
    return w * network + (1 - w) * rel, w


def relation_alone(stack: Mapping[str, Any], line: Mapping[str, Any],
                   values: Mapping[str, np.ndarray], n_epochs: np.ndarray) -> np.ndarray:
    """The relation side of each curve's bin alone (w = 0): for curves the network cannot take."""
    pred, _ = served_predict({**stack, "bins": [{**e, "weight": 0.0} for e in stack["bins"]]}
                             if "bins" in stack else {"weight": 0.0}, line,
                             np.zeros(len(n_epochs)), values, n_epochs)
    return pred


def describe(stack: Mapping[str, Any]) -> str:
    """One line per bin: epochs, what is served, its out-of-fold RMSE against the line's."""
    def part(e: Mapping[str, Any]) -> str:
        rel = "line" if e["relation"] == "line" else "bin plane"
        what = ("network" if e["weight"] == 1 else rel if e["weight"] == 0
                else f"{e['weight']:.2f} network + {1 - e['weight']:.2f} {rel}")
        hi = "" if e["hi"] >= OPEN_END else f"{e['hi']:g}"
        return (f"{e['lo']:g}-{hi} epochs: {what} (RMSE {e['oof_rmse']:.3f}, line "
                f"{e['line_oof_rmse']:.3f}, {e['n_curves']} curves)")
    return "; ".join(part(e) for e in stack.get("bins", []))


ONE_SIGMA, TWO_SIGMA = 0.6827, 0.9545  # the shares of a normal distribution within ±1σ, ±2σ
# how far the ±1σ share may move from 68.3 % to bring ±2σ nearer 95.4 % where the residuals'
# tails are not Gaussian. Users are promised 68 ± 5 % on stars the calibration never saw, whose
# share scatters by a few per cent about the calibrated one: 3 % left real DR3's bins at 70-71 %
# out of fold, their held-out halves up to 76 %; 1.5 % keeps the calibration centred
ONE_SIGMA_SLACK = 0.015


def scatter_for_coverage(res: np.ndarray, sp: np.ndarray) -> float:
    """The r ≥ 0 for which ±1 sqrt(sp² + r²) holds 68.3 % ± ONE_SIGMA_SLACK of |res| and,
    among those, ±2 of it holds the share closest to 95.4 % (then the ±1 share closest to
    68.3 %): with Gaussian residuals both are met; with heavier tails ±1σ gives a little so that
    ±2σ falls less short."""
    # a residual is within ±k sqrt(sp² + r²) once r >= t_k (its threshold)
    t1 = np.sort(np.sqrt(np.maximum(res**2 - sp**2, 0.0)))
    t2 = np.sort(np.sqrt(np.maximum((res / 2) ** 2 - sp**2, 0.0)))
    r = np.unique(np.concatenate([[0.0], t1, t2]))
    miss1 = np.abs(np.searchsorted(t1, r, side="right") / len(res) - ONE_SIGMA)
    miss2 = np.abs(np.searchsorted(t2, r, side="right") / len(res) - TWO_SIGMA)
    ok = miss1 <= max(ONE_SIGMA_SLACK, float(miss1.min()))
    best = np.lexsort((miss1[ok], miss2[ok]))[0]  # by the ±2 miss, then the ±1 miss
    return float(r[ok][best])


# the fit's qualities feh_std grows with, beside the number of epochs (rad, as
# `preprocess.network_input.star_values` gives them): φ31's error of the curve's Fourier fit
# (clipped), and how far its other φ31 estimates (the smooth curve's, the dense shapes') lie from
# it. φ31 is the line's main input; on real DR3 RRab of 28-35 epochs the disagreement tracks the
# out-of-fold residuals (Spearman 0.48-0.55) better than the formal error (0.22).
QUALITY: tuple[str, ...] = ("phi31_error", "phi31_disagreement")
# the scales (dex per rad) tried in a bin for each quality, in QUALITY's order
QUALITY_SCALES: tuple[np.ndarray, ...] = (np.round(np.arange(0.0, 3.0 + 1e-9, 0.05), 10),
                                          np.round(np.arange(0.0, 3.0 + 1e-9, 0.1), 10))


def quality_matrix(values: Mapping[str, np.ndarray], names: str | Sequence[str]) -> np.ndarray:
    """The fit qualities `names` (one name: a manifest of before the second) of per-star
    `values` as (stars, qualities) columns."""
    names = [names] if isinstance(names, str) else list(names)
    return np.column_stack([np.asarray(values[n], float) for n in names])


def quality_spread(spread: np.ndarray, quality: np.ndarray | None,
                   scales: Sequence[Any] | None, bins: np.ndarray) -> np.ndarray:
    """The spread with each row's bin scales k times its fit qualities q added in quadrature,
    sqrt(spread² + Σ (k_j q_j)²): the per-star part of `feh_std` (the spread alone without
    scales). `quality` is (rows,) or (rows, qualities); `scales` per bin a number or one a
    quality."""
    spread = np.asarray(spread, float)
    if scales is None or quality is None:
        return spread
    q = np.asarray(quality, float).reshape(len(spread), -1)
    k = np.asarray(scales, float).reshape(len(scales), -1)[np.asarray(bins, int)]
    return np.sqrt(spread**2 + np.sum((k * q) ** 2, axis=1))


def gaussian_nll(residual: np.ndarray, sigma: np.ndarray) -> float:
    """Mean negative log-likelihood of residuals under N(0, sigma²), the constant dropped: a
    proper score of an error bar (lower is better), not only of its coverage."""
    sigma = np.maximum(np.asarray(sigma, float), 1e-6)
    return float(np.mean(np.log(sigma) + 0.5 * (np.asarray(residual, float) / sigma) ** 2))


def _bin_scale(res: np.ndarray, sp: np.ndarray, quality: np.ndarray | None
               ) -> tuple[float, list[float]]:
    """(r, k) of one bin: for each k of the QUALITY_SCALES grid (one scale a quality column)
    the r of `scatter_for_coverage` on sqrt(sp² + Σ (k_j q_j)²), and of the sets that keep ±1
    within 68.3 % ± ONE_SIGMA_SLACK (a k whose term alone covers more is not one the residuals
    support) the one under which they are likeliest; all zeros without `quality`."""
    r0 = scatter_for_coverage(res, sp)
    if quality is None:
        return r0, []
    q = np.asarray(quality, float).reshape(len(res), -1)
    grids = QUALITY_SCALES[: q.shape[1]]
    best = (gaussian_nll(res, np.sqrt(sp**2 + r0**2)), r0, [0.0] * q.shape[1])
    for k in itertools.product(*grids):
        if not any(k):
            continue
        per_star = np.sqrt(sp**2 + np.sum((np.asarray(k) * q) ** 2, axis=1))
        r = scatter_for_coverage(res, per_star)
        total = np.sqrt(per_star**2 + r**2)
        if abs(np.mean(res <= total) - ONE_SIGMA) > ONE_SIGMA_SLACK:
            continue
        nll = gaussian_nll(res, total)
        if nll < best[0] - 1e-9:  # ties keep the smaller scales
            best = (nll, r, [float(v) for v in k])
    return best[1], best[2]


def residual_scales(residual: np.ndarray, spread: np.ndarray, bins: np.ndarray, n_bins: int,
                    quality: np.ndarray | None = None) -> tuple[list[float], list[Any]]:
    """Per bin, (r, k): feh_std = sqrt(spread² + Σ (k_j q_j)² + r²) with q each curve's fit
    qualities (QUALITY) and r set so that the bin's out-of-fold residuals lie within ±1 and ±2
    feh_std as often as Gaussian ones would (68.3 %, 95.4 %; `scatter_for_coverage`): a
    conformal calibration per number of epochs, k (on QUALITY_SCALES) the scales whose
    calibrated errors make the residuals likeliest, so a poorly fitted curve gets a wider error
    than a clean one of the same epochs, and the bin's heavy tails are the noisy fits'. k is a
    number a bin for one quality ((rows,) `quality`, or none: 0), a list for several
    ((rows, qualities))."""
    residual, spread = np.abs(np.asarray(residual, float)), np.asarray(spread, float)
    q = None if quality is None else np.asarray(quality, float)
    columns = 1 if q is None or q.ndim == 1 else q.shape[1]
    sig = np.full(n_bins, np.nan)
    scale: list[list[float]] = [[0.0] * columns for _ in range(n_bins)]
    for i in range(n_bins):
        rows = bins == i
        if rows.any():
            sig[i], k = _bin_scale(residual[rows], spread[rows], None if q is None else q[rows])
            scale[i] = k or [0.0] * columns
    # a bin without curves takes its neighbour's (the nearest denser one)
    for i in range(n_bins - 1, -1, -1):
        if not np.isfinite(sig[i]):
            j = i + 1 if i + 1 < n_bins else int(np.nanargmax(sig))
            sig[i], scale[i] = sig[j], scale[j]
    one = q is None or q.ndim == 1
    return [float(v) for v in sig], [k[0] if one else k for k in scale]
