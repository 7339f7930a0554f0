"""The training figures of the paper (Monti et al. 2025, Figs. 5-7) from plain arrays, saved as PNG.

Same conventions as `rrlfeh.plots`: `matplotlib.figure.Figure` on the Agg canvas (no pyplot
state), so they draw in a pipeline stage or a test without a display; each returns the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from rrlfeh.plots import _same_length, _save

#: Above this many points a true-vs-predicted panel is a hexbin density, not a scatter.
HEXBIN_ABOVE = 3000
#: Up to this many folds the learning-curve legend names each fold; beyond, a colour bar does.
MAX_FOLD_LEGEND = 8

_METRIC_NAMES = {"r2": ("R²", ""), "wrmse": ("wRMSE", " dex"), "wmae": ("wMAE", " dex"),
                 "rmse": ("RMSE", " dex"), "mae": ("MAE", " dex")}


def learning_curves(histories: Sequence[Mapping[str, Sequence[float]]], path: str | Path, *,
                    labels: Sequence[str] | None = None, title: str = "", metric: str = "loss",
                    held_out: str = "val", held_out_label: str = "validation",
                    dpi: int = 120) -> Path:
    """Training (solid) and held-out (dashed: the `{held_out}_{metric}` series) `metric` against
    epoch, one colour a fold (Fig. 5).

    Histories are Keras `History.history` dicts and may differ in length (early stopping); the
    y-axis is logarithmic when every finite value is positive, so the late epochs stay visible.
    """
    if len(histories) == 0:
        raise ValueError("histories is empty: nothing to plot")
    if labels is not None and len(labels) != len(histories):
        raise ValueError(f"labels has {len(labels)} entries but there are {len(histories)} "
                         "histories")
    if not any(metric in h for h in histories):
        keys = sorted({k for h in histories for k in h})
        raise ValueError(f"no history holds metric {metric!r}; keys present: {keys}")
    names = (list(labels) if labels is not None
             else [f"fold {i + 1}" for i in range(len(histories))])
    n = len(histories)
    cmap = colormaps["tab10"] if n <= 10 else colormaps["viridis"]
    colors = [cmap(i) if n <= 10 else cmap(i / max(n - 1, 1)) for i in range(n)]

    fig = Figure(figsize=(7.2, 4.8), layout="constrained")
    ax = fig.add_subplot()
    values: list[np.ndarray] = []
    has_val = False
    for history, color in zip(histories, colors, strict=True):
        for key, style in ((metric, "-"), (f"{held_out}_{metric}", "--")):
            if key not in history:
                continue
            y = np.asarray(history[key], dtype=float).reshape(-1)
            if y.size == 0:
                continue
            has_val |= key != metric
            ax.plot(np.arange(1, y.size + 1), y, ls=style, color=color, lw=1.1, alpha=0.85)
            values.append(y)
    finite = np.concatenate(values) if values else np.empty(0)
    finite = finite[np.isfinite(finite)]
    if finite.size and np.all(finite > 0):
        ax.set_yscale("log")

    handles = [Line2D([], [], color="0.3", ls="-", label="train")]
    if has_val:
        handles.append(Line2D([], [], color="0.3", ls="--", label=held_out_label))
    if n <= MAX_FOLD_LEGEND:
        handles += [Line2D([], [], color=c, lw=2.0, label=name)
                    for name, c in zip(names, colors, strict=True)]
        ax.legend(handles=handles, fontsize=8, frameon=False, ncols=2 if n > 3 else 1)
    else:
        ax.legend(handles=handles, fontsize=8, frameon=False)
        mappable = ScalarMappable(norm=BoundaryNorm(np.arange(0.5, n + 1.5), n),
                                  cmap=ListedColormap(colors))
        ticks = np.unique(np.linspace(1, n, min(n, 6)).round().astype(int))
        bar = fig.colorbar(mappable, ax=ax, ticks=ticks, pad=0.01, fraction=0.04)
        bar.set_ticklabels([names[t - 1] for t in ticks], fontsize=7)
        bar.set_label(f"{n} runs, one colour each")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(title or f"learning curves, {n} run{'s' * (n != 1)}")
    ax.grid(alpha=0.25, which="both")
    return _save(fig, path, dpi)


def _limits(*arrays: np.ndarray) -> tuple[float, float]:
    """Common (low, high) axis limits covering every finite value, padded by 5 % of the span."""
    finite = np.concatenate([np.asarray(a, dtype=float).reshape(-1) for a in arrays])
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        raise ValueError("no finite value to set limits from")
    low, high = float(finite.min()), float(finite.max())
    pad = 0.05 * (high - low) if high > low else 0.1
    return low - pad, high + pad


def _finite_pairs(label: np.ndarray, pred: np.ndarray, key: str, name: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The (label, predicted) pairs with both values finite, or a ValueError if there are none."""
    label = np.asarray(label, dtype=float).reshape(-1)
    pred = np.asarray(pred, dtype=float).reshape(-1)
    _same_length(**{f"y_{key}": label, f"pred_{key}": pred})
    ok = np.isfinite(label) & np.isfinite(pred)
    if not ok.any():
        raise ValueError(f"no finite (label, predicted) pair in the {name} set "
                         f"({label.size} given)")
    return label[ok], pred[ok]


def _metrics_text(metrics: Mapping[str, float]) -> str:
    """Metric lines such as 'R² 0.940' and 'wRMSE 0.076 dex', known keys in a fixed order."""
    order = [k for k in _METRIC_NAMES if k in metrics] + [k for k in metrics
                                                          if k not in _METRIC_NAMES]
    lines = []
    for key in order:
        name, unit = _METRIC_NAMES.get(key, (key, ""))
        lines.append(f"{name} {float(metrics[key]):.3f}{unit}")
    return "\n".join(lines)


def true_vs_predicted(y_train: np.ndarray, pred_train: np.ndarray, y_val: np.ndarray,
                      pred_val: np.ndarray, path: str | Path, *, title: str = "",
                      metrics_train: Mapping[str, float] | None = None,
                      metrics_val: Mapping[str, float] | None = None, dpi: int = 120) -> Path:
    """Predicted against label [Fe/H] for training and validation side by side (paper Fig. 6).

    Both panels share square limits and the 1:1 line so they compare by eye; pairs with a
    non-finite value are left out, large samples are drawn as a hexbin density.
    """
    panels = [("training", *_finite_pairs(y_train, pred_train, "train", "training"),
               metrics_train),
              ("validation", *_finite_pairs(y_val, pred_val, "val", "validation"), metrics_val)]
    lims = _limits(*(a for _, y, p, _ in panels for a in (y, p)))

    fig = Figure(figsize=(10.0, 5.0), layout="constrained")
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    for ax, (name, y, p, metrics) in zip(axes, panels, strict=True):
        if y.size > HEXBIN_ABOVE:
            hb = ax.hexbin(y, p, gridsize=60, extent=(*lims, *lims), mincnt=1, bins="log",
                           cmap="viridis", linewidths=0)
            fig.colorbar(hb, ax=ax, label="stars per cell", pad=0.01, fraction=0.05)
        else:
            alpha = float(np.clip(60.0 / np.sqrt(y.size), 0.15, 0.8))
            ax.scatter(y, p, s=6, alpha=alpha, linewidths=0, color="#1f5fa8")
        ax.plot(lims, lims, color="k", lw=1.0, ls="--", label="1:1")
        if metrics:
            ax.text(0.04, 0.96, _metrics_text(metrics), transform=ax.transAxes, va="top",
                    ha="left", fontsize=9, family="monospace",
                    bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85,
                          "edgecolor": "0.7"})
        ax.set_xlim(lims)
        ax.set_ylim(lims)
        ax.set_aspect("equal")
        ax.set_title(f"{name} (n={y.size})")
        ax.set_xlabel("[Fe/H] (label, dex)")
        ax.legend(loc="lower right", fontsize=8, frameon=False)
        ax.grid(alpha=0.25)
    axes[0].set_ylabel("[Fe/H] (predicted, dex)")
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi)


def binned_quantiles(x: np.ndarray, y: np.ndarray, n_bins: int, *, min_per_bin: int = 5
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Median x and the 16/50/84 % quantiles of y in bins of (about) equal count over x.

    At most `n_bins` bins and at least `min_per_bin` stars a bin (so one bin for few stars);
    equal x values stay in one bin, so ties (integer epoch counts) can merge bins.
    Non-finite pairs are dropped. Returns (centres, q16, q50, q84), one entry per bin.
    """
    x = np.asarray(x, dtype=float).reshape(-1)
    y = np.asarray(y, dtype=float).reshape(-1)
    _same_length(x=x, y=y)
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size == 0:
        raise ValueError("no finite (x, y) pair to bin")
    k = max(1, min(n_bins, x.size // max(min_per_bin, 1)))
    edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, k + 1)))
    index = np.searchsorted(edges[1:-1], x, side="right")
    rows = []
    for b in range(max(len(edges) - 1, 1)):
        sel = index == b
        if sel.any():
            rows.append((np.median(x[sel]), *np.quantile(y[sel], [0.16, 0.5, 0.84])))
    centres, q16, q50, q84 = (np.array(c) for c in zip(*rows, strict=True))
    return centres, q16, q50, q84


def residuals_vs_epochs(n_epochs: np.ndarray, residual: np.ndarray, path: str | Path, *,
                        title: str = "", n_bins: int = 8, dpi: int = 120) -> Path:
    """Residual (predicted - label) against the number of G epochs, with binned median (Fig. 7).

    Shows whether sparse light curves are predicted worse: the median and 16-84 % band are taken
    in bins of equal star count (fewer bins when there are few stars).
    """
    n_epochs = np.asarray(n_epochs, dtype=float).reshape(-1)
    residual = np.asarray(residual, dtype=float).reshape(-1)
    _same_length(n_epochs=n_epochs, residual=residual)
    if n_epochs.size == 0:
        raise ValueError("no stars to plot")
    centres, q16, q50, q84 = binned_quantiles(n_epochs, residual, n_bins)
    ok = np.isfinite(n_epochs) & np.isfinite(residual)

    fig = Figure(figsize=(7.2, 4.6), layout="constrained")
    ax = fig.add_subplot()
    alpha = float(np.clip(60.0 / np.sqrt(ok.sum()), 0.1, 0.8))
    ax.scatter(n_epochs[ok], residual[ok], s=5, alpha=alpha, linewidths=0, color="0.45",
               label=f"stars (n={int(ok.sum())})")
    ax.fill_between(centres, q16, q84, color="#d1495b", alpha=0.25, lw=0, label="16-84 %")
    ax.plot(centres, q50, color="#d1495b", lw=1.8, marker="o", ms=4,
            label=f"median ({centres.size} bin{'s' * (centres.size != 1)})")
    ax.axhline(0.0, color="k", lw=0.9, ls="--")
    ax.set_xlabel("number of G epochs")
    ax.set_ylabel("residual [Fe/H] (predicted - label, dex)")
    ax.set_title(title or "residuals vs number of epochs")
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.25)
    return _save(fig, path, dpi)
