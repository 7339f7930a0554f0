"""The science figures of the paper (Monti et al. 2025, Figs. 1-3) from plain arrays, saved as PNG.

Figures are built with `matplotlib.figure.Figure` (Agg canvas, no pyplot state), so they are safe
to draw in a pipeline stage or a test without a display. Each function returns the path it wrote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from rrlfeh.io import atomic_path

TYPE_STYLE = {"RRab": {"marker": "o", "color": "#1f5fa8"},
              "RRc": {"marker": "^", "color": "#d1495b"},
              "RRd": {"marker": "s", "color": "#2a9d8f"}}
_OTHER = {"marker": "D", "color": "#6c757d"}


def belokurov_separator(log_period: np.ndarray) -> np.ndarray:
    """Bailey-diagram RRab/RRc separator for Gaia peak-to-peak G (Belokurov et al. 2018), mag."""
    x = np.asarray(log_period, dtype=float)
    return -2.477 - 22.046 * x - 30.876 * x**2 - 0.15


def _save(fig: Figure, path: str | Path, dpi: int) -> Path:
    """Write the figure atomically (creating the folder) and return the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    return Path(path)


def _same_length(**arrays: np.ndarray) -> int:
    """The common length of the arrays, or a ValueError naming each length."""
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"arrays must have the same length, got {lengths}")
    return next(iter(lengths.values()))


def bailey_diagram(period: Sequence[float], amplitude: Sequence[float], feh: Sequence[float],
                   type: Sequence[str], path: str | Path, *, feh_range: tuple[float, float] | None
                   = None, cmap: str = "viridis", point_size: float = 9.0, dpi: int = 150) -> Path:
    """log P vs peak-to-peak G amplitude, coloured by [Fe/H], one marker per type (paper Fig. 1).

    The Belokurov et al. (2018) RRab/RRc separator is drawn where it is positive. Stars with
    no [Fe/H] are drawn as hollow grey markers and counted in the legend, not dropped.
    """
    period = np.asarray(period, dtype=float)
    amplitude = np.asarray(amplitude, dtype=float)
    feh = np.asarray(feh, dtype=float)
    types = np.asarray(type, dtype=object)
    _same_length(period=period, amplitude=amplitude, feh=feh, type=types)
    if np.any(period <= 0):
        raise ValueError(f"periods must be > 0, got {period[period <= 0][:5]}")
    logp = np.log10(period)
    finite_feh = feh[np.isfinite(feh)]
    if feh_range is None:
        feh_range = ((float(np.percentile(finite_feh, 1)), float(np.percentile(finite_feh, 99)))
                     if finite_feh.size else (-2.5, 0.0))

    fig = Figure(figsize=(7.2, 5.2), layout="constrained")
    ax = fig.add_subplot()
    scatter = None
    for t in sorted(set(types.tolist()), key=lambda t: (t not in TYPE_STYLE, str(t))):
        sel = types == t
        style = TYPE_STYLE.get(t, _OTHER)
        known = sel & np.isfinite(feh)
        if known.any():
            scatter = ax.scatter(logp[known], amplitude[known], c=feh[known], cmap=cmap,
                                 vmin=feh_range[0], vmax=feh_range[1], s=point_size,
                                 marker=style["marker"], linewidths=0, alpha=0.85,
                                 label=f"{t} (n={int(known.sum())})")
        unknown = sel & ~np.isfinite(feh)
        if unknown.any():
            ax.scatter(logp[unknown], amplitude[unknown], s=point_size, marker=style["marker"],
                       facecolors="none", edgecolors="0.6", linewidths=0.5,
                       label=f"{t}, no [Fe/H] (n={int(unknown.sum())})")
    grid = np.linspace(-0.6, -0.1, 300)
    sep = belokurov_separator(grid)
    ax.plot(grid[sep > 0], sep[sep > 0], color="k", lw=1.4, ls="--",
            label="Belokurov+18 separator")
    if scatter is not None:
        fig.colorbar(scatter, ax=ax, label="[Fe/H] (dex)", extend="both")
    ax.set_xlabel(r"$\log_{10}(P\,/\,\mathrm{d})$")
    ax.set_ylabel(r"$A_G$ peak-to-peak (mag)")
    ax.set_title("Bailey diagram")
    ok = np.isfinite(logp) & np.isfinite(amplitude)
    if ok.any():
        ax.set_xlim(min(logp[ok].min(), -0.6) - 0.02, max(logp[ok].max(), -0.1) + 0.02)
        ax.set_ylim(0, max(amplitude[ok].max(), 1.4) * 1.05)
    ax.legend(loc="upper right", fontsize=8, frameon=False, markerscale=1.5)
    ax.grid(alpha=0.25)
    return _save(fig, path, dpi)


def standardised_curves(phase_grid: Sequence[float] | None,
                        curves_by_type: Mapping[str, np.ndarray],
                        path: str | Path, *, max_curves: int = 300, seed: int = 0,
                        invert_y: bool = True, dpi: int = 150) -> Path:
    """Standardised light curves per type overplotted thinly, with their median (paper Fig. 2).

    At most `max_curves` curves a type are drawn (a random subset, fixed by `seed`); the median
    is over all of them. `invert_y` puts maximum light (bright magnitudes) at the top.
    `phase_grid` None: each type on its own uniform grid k / n_points (types may differ in length).
    """
    if not curves_by_type:
        raise ValueError("curves_by_type is empty: nothing to plot")
    rng = np.random.default_rng(seed)
    fig = Figure(figsize=(4.2 * len(curves_by_type), 4.0), layout="constrained")
    axes = fig.subplots(1, len(curves_by_type), sharey=True, squeeze=False)[0]
    for ax, (t, curves) in zip(axes, curves_by_type.items(), strict=True):
        curves = np.atleast_2d(np.asarray(curves, dtype=float))
        phase = (np.arange(curves.shape[1]) / curves.shape[1] if phase_grid is None
                 else np.asarray(phase_grid, dtype=float))
        if curves.shape[1] != phase.size:
            raise ValueError(f"{t}: curves have {curves.shape[1]} points, the phase grid "
                             f"{phase.size}")
        color = TYPE_STYLE.get(t, _OTHER)["color"]
        if len(curves):
            shown = (rng.choice(len(curves), max_curves, replace=False)
                     if len(curves) > max_curves else np.arange(len(curves)))
            alpha = float(np.clip(8.0 / len(shown), 0.03, 0.5))
            ax.plot(phase, curves[shown].T, color=color, lw=0.5, alpha=alpha)
            ax.plot(phase, np.nanmedian(curves, axis=0), color="k", lw=2.0, label="median")
            ax.legend(loc="lower center" if invert_y else "upper center", frameon=False)
        ax.set_title(f"{t} (n={len(curves)}, {min(len(curves), max_curves)} shown)")
        ax.set_xlabel("phase")
        ax.set_xlim(phase.min(), phase.max())
        ax.grid(alpha=0.25)
    axes[0].set_ylabel("standardised G magnitude")
    if invert_y:
        axes[0].invert_yaxis()  # shared y: inverts every panel
    return _save(fig, path, dpi)


def feh_distribution(feh: Sequence[float], weights: Sequence[float], path: str | Path,
                     by_type: Sequence[str] | None = None, *, bins: int = 40,
                     dpi: int = 150) -> Path:
    """[Fe/H] histogram (stacked by type if given) and the sample weights vs [Fe/H] (paper Fig. 3).

    Stars with a non-finite [Fe/H] or weight cannot be placed: a ValueError names how many.
    """
    feh = np.asarray(feh, dtype=float)
    weights = np.asarray(weights, dtype=float)
    types = (np.full(feh.shape, "all", dtype=object) if by_type is None
             else np.asarray(by_type, dtype=object))
    _same_length(feh=feh, weights=weights, by_type=types)
    bad = ~(np.isfinite(feh) & np.isfinite(weights))
    if bad.any():
        raise ValueError(f"{int(bad.sum())} stars have a non-finite [Fe/H] or weight, e.g. "
                         f"indices {np.flatnonzero(bad)[:5].tolist()}")
    if feh.size == 0:
        raise ValueError("no stars to plot")

    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    ax_h, ax_w = fig.subplots(1, 2)
    edges = np.histogram_bin_edges(feh, bins=bins)
    names = sorted(set(types.tolist()), key=lambda t: (t not in TYPE_STYLE, str(t)))
    colors = [TYPE_STYLE.get(t, _OTHER)["color"] for t in names]
    ax_h.hist([feh[types == t] for t in names], bins=edges, stacked=True, color=colors,
              label=[f"{t} (n={int((types == t).sum())})" for t in names], edgecolor="white",
              linewidth=0.4)
    ax_h.set_xlabel("[Fe/H] (dex)")
    ax_h.set_ylabel("stars per bin")
    ax_h.set_title("[Fe/H] distribution")
    ax_h.legend(frameon=False)
    for t, color in zip(names, colors, strict=True):
        sel = types == t
        order = np.argsort(feh[sel])
        ax_w.plot(feh[sel][order], weights[sel][order], color=color, lw=1.2, marker=".",
                  ms=3, label=t)
    ax_w.axhline(1.0, color="0.5", lw=0.8, ls=":")
    ax_w.set_xlabel("[Fe/H] (dex)")
    ax_w.set_ylabel("sample weight")
    ax_w.set_title("sample weights")
    if len(names) > 1:
        ax_w.legend(frameon=False)
    for ax in (ax_h, ax_w):
        ax.grid(alpha=0.25)
    return _save(fig, path, dpi)


def error_vs_epochs(sets: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, *,
                    title: str = "", cut: int | None = 50, dpi: int = 110) -> Path:
    """Paper Fig. 7: |residual| against the number of epochs per star, one colour a set
    (name -> (n_epochs, residual)), with the RMSE in bins of epochs and the paper's cut."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    colours = ("#1f5fa8", "#d1495b", "#2a9d8f")
    for (name, (n, res)), colour in zip(sets.items(), colours, strict=False):
        n, res = np.asarray(n, float), np.abs(np.asarray(res, float))
        _same_length(n_epochs=n, residual=res)
        ax.scatter(n, res, s=10, alpha=0.45, color=colour, label=f"{name} ({len(n)} stars)")
        edges = np.unique(np.quantile(n, np.linspace(0, 1, 7))) if len(n) > 6 else np.array([])
        mid, rmse = [], []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            m = (n >= lo) & (n <= hi)
            if m.sum() >= 3:
                mid.append(np.median(n[m]))
                rmse.append(np.sqrt(np.mean(res[m] ** 2)))
        if mid:
            ax.plot(mid, rmse, "-o", color=colour, lw=2, label=f"{name}: RMSE in bins")
    if cut is not None:
        ax.axvline(cut, color="k", ls="--", lw=1, label=f"paper's cut N = {cut}")
    ax.set_xlabel("G epochs used")
    ax.set_ylabel("|predicted − label| [Fe/H] (dex)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path, dpi)
