"""The science figures: each writes a non-empty PNG and refuses inconsistent input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rrlfeh import plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 5_000 and path.read_bytes()[:8] == PNG_MAGIC


def test_bailey_diagram_writes_png_with_unknown_feh(tmp_path):
    rng = np.random.default_rng(0)
    n = 200
    types = np.where(rng.random(n) < 0.6, "RRab", "RRc")
    period = np.where(types == "RRab", rng.uniform(0.45, 0.8, n), rng.uniform(0.25, 0.4, n))
    feh = rng.normal(-1.5, 0.4, n)
    feh[:5] = np.nan
    out = plots.bailey_diagram(period, rng.uniform(0.2, 1.3, n), feh, types,
                               tmp_path / "sub" / "bailey.png")
    assert out == tmp_path / "sub" / "bailey.png" and _is_png(out)


def test_bailey_diagram_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="same length"):
        plots.bailey_diagram([0.5, 0.6], [1.0], [-1.0, -1.2], ["RRab", "RRab"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="> 0"):
        plots.bailey_diagram([0.5, 0.0], [1.0, 0.5], [-1.0, -1.2], ["RRab", "RRc"],
                             tmp_path / "x.png")


def test_separator_peaks_between_the_two_types():
    logp = np.linspace(-0.6, -0.1, 501)
    sep = plots.belokurov_separator(logp)
    peak = logp[np.argmax(sep)]
    assert -0.40 < peak < -0.32 and 1.2 < sep.max() < 1.4
    assert np.all(sep[[0, -1]] < 0)  # the curve closes within the RR Lyrae period range


def test_standardised_curves_writes_png(tmp_path):
    phase = np.linspace(0, 1, 50)
    rng = np.random.default_rng(1)
    curves = {t: np.cos(2 * np.pi * phase) + rng.normal(0, 0.1, (n, phase.size))
              for t, n in (("RRab", 400), ("RRc", 20))}
    out = plots.standardised_curves(phase, curves, tmp_path / "curves.png", max_curves=100)
    assert _is_png(out)
    with pytest.raises(ValueError, match="RRc"):
        plots.standardised_curves(phase, {"RRc": np.zeros((3, 10))}, tmp_path / "bad.png")


def test_feh_distribution_writes_png_and_names_bad_rows(tmp_path):
    rng = np.random.default_rng(2)
    feh = rng.normal(-1.5, 0.5, 300)
    weights = np.exp(np.abs(feh + 1.5))
    types = np.where(rng.random(300) < 0.5, "RRab", "RRc")
    assert _is_png(plots.feh_distribution(feh, weights, tmp_path / "f.png", by_type=types))
    assert _is_png(plots.feh_distribution(feh, weights, tmp_path / "g.png"))
    feh[7] = np.nan
    with pytest.raises(ValueError, match=r"1 stars .*indices \[7\]"):
        plots.feh_distribution(feh, weights, tmp_path / "h.png")
