"""The figure of stage `sparse`: RMSE against the number of epochs a curve was cut to, for the
champion, the P-φ31 line and the paper's GRU; solid with the period given, dashed without; one
panel per type, the full curves at the right."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from rrlfeh.io import atomic_path
from rrlfeh.sparse import FULL, MODELS, MODES

STYLE = {"champion": ("#1f5fa8", "o", "champion"), "line": ("#6c757d", "s", "P–φ31 line"),
         "paper_gru": ("#d1495b", "^", "paper's GRU")}
DASHES = {"with_period": "-", "without_period": "--"}


def cut_positions(cuts: Sequence[str]) -> np.ndarray:
    """x of each cut: N itself, the full curve one step past the largest N."""
    sizes = [int(c) for c in cuts if c != FULL]
    step = float(np.median(np.diff(sizes))) if len(sizes) > 1 else 10.0
    top = max(sizes, default=0)
    return np.array([top + 1.5 * step if c == FULL else float(c) for c in cuts])


def error_vs_epochs(metrics: Mapping[str, Any], cuts: Sequence[str], path: str | Path,
                    dpi: int = 110) -> Path:
    """RMSE against N per model and mode (`metrics`: type -> mode -> cut -> model ->
    {rmse, share}), one panel a type; a type without subsets gets a note."""
    kinds = [k for k, v in metrics.items() if isinstance(v, Mapping)
             and any(m in v for m in MODES)] or ["no stars"]
    fig = Figure(figsize=(5.2 * len(kinds), 4.2))
    axes = np.atleast_1d(fig.subplots(1, len(kinds), squeeze=False)[0])
    x = cut_positions(cuts)
    for ax, kind in zip(axes, kinds, strict=True):
        _panel(ax, metrics.get(kind, {}), cuts, x)
        ax.set_title(kind if kind in metrics else "no test star with enough epochs")
        ax.set_xticks(x, [("full" if c == FULL else c) for c in cuts])
        ax.set_xlabel("G epochs of the curve (random draws; full: every clean epoch)")
    axes[0].set_ylabel("RMSE against the label [Fe/H] (dex)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    return Path(path)


def _panel(ax: Any, by_mode: Mapping[str, Any], cuts: Sequence[str], x: np.ndarray) -> None:
    """One type: a line a model and mode; the full curves apart at the right (filled: with
    period, hollow and a little to the right: without); a legend of models and of modes."""
    from matplotlib.lines import Line2D

    drawn = np.array([c != FULL for c in cuts])
    shown = []
    for mode in MODES:
        for model in MODELS:
            y = np.array([_rmse(by_mode.get(mode, {}).get(c, {}).get(model)) for c in cuts])
            if not np.isfinite(y).any():
                continue
            colour, marker, _ = STYLE[model]
            shown.append(model)
            ax.plot(x[drawn], y[drawn], DASHES[mode], color=colour, marker=marker)
            shift = 0.0 if mode == "with_period" else 0.6
            ax.plot(x[~drawn] + shift, y[~drawn], marker=marker, ls="none", color=colour,
                    mfc="white" if mode == "without_period" else colour)
    ax.grid(alpha=0.3)
    handles = [Line2D([], [], color=STYLE[m][0], marker=STYLE[m][1], label=STYLE[m][2])
               for m in MODELS if m in shown]
    handles += [Line2D([], [], color="k", ls=DASHES[m], label=m.replace("_", " "))
                for m in MODES if m in by_mode]
    if handles:
        ax.legend(handles=handles, fontsize=8)


def _rmse(m: Mapping[str, Any] | None) -> float:
    """A model's RMSE at one cut (NaN where it has none)."""
    v = None if m is None else m.get("rmse")
    return float("nan") if v is None else float(v)
