"""The training figures: each writes a readable PNG, refuses bad input and draws what it says."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from rrlfeh.training import plots


def _png(path: Path) -> np.ndarray:
    """The image read back, after checking it is a non-empty RGB(A) PNG."""
    assert path.is_file() and path.stat().st_size > 1_000
    image = imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image


def _histories(n: int, rng: np.random.Generator) -> list[dict[str, list[float]]]:
    out = []
    for i in range(n):
        epochs = 20 + 7 * i  # early stopping: every run a different length
        loss = 0.5 * np.exp(-np.arange(epochs) / 10) + 0.02 + rng.uniform(0, 0.01, epochs)
        out.append({"loss": loss.tolist(), "val_loss": (loss * 1.2).tolist(),
                    "rmse": np.sqrt(loss).tolist()})
    return out


def test_learning_curves_writes_png_scaling_with_dpi(tmp_path):
    hist = _histories(3, np.random.default_rng(0))
    out = plots.learning_curves(hist, tmp_path / "sub" / "lc.png", title="K-fold", dpi=40)
    assert out == tmp_path / "sub" / "lc.png"
    small = _png(out)
    big = _png(plots.learning_curves(hist, tmp_path / "lc80.png", dpi=80))
    assert big.shape[:2] == (2 * small.shape[0], 2 * small.shape[1])


def test_learning_curves_many_folds_labels_and_no_validation(tmp_path):
    hist = _histories(20, np.random.default_rng(1))
    _png(plots.learning_curves(hist, tmp_path / "many.png", labels=[f"r{i}" for i in range(20)],
                               dpi=40))
    no_val = [{"loss": h["loss"]} for h in hist[:4]]
    _png(plots.learning_curves(no_val, tmp_path / "noval.png", dpi=40))
    # a metric held by only some histories, values not all positive (linear axis)
    mixed = [{"rmse": [1.0, -0.5, 0.2]}, {"loss": [1.0, 0.5]}]
    _png(plots.learning_curves(mixed, tmp_path / "mixed.png", metric="rmse", dpi=40))


def test_learning_curves_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        plots.learning_curves([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="'wmae'"):
        plots.learning_curves([{"loss": [1.0]}], tmp_path / "x.png", metric="wmae")
    with pytest.raises(ValueError, match="labels has 1 entries but there are 2"):
        plots.learning_curves([{"loss": [1.0]}, {"loss": [2.0]}], tmp_path / "x.png",
                              labels=["only one"])


def _feh(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    y = rng.normal(-1.5, 0.5, n)
    return y, y + rng.normal(0, 0.15, n)


def test_true_vs_predicted_scatter_hexbin_and_nan(tmp_path):
    rng = np.random.default_rng(2)
    y_tr, p_tr = _feh(5000, rng)  # hexbin panel
    y_va, p_va = _feh(400, rng)  # scatter panel
    p_va[3] = np.nan
    y_va[7] = np.inf
    out = plots.true_vs_predicted(y_tr, p_tr, y_va, p_va.reshape(-1, 1), tmp_path / "tvp.png",
                                  title="fold 1", metrics_train={"r2": 0.94, "wrmse": 0.076},
                                  metrics_val={"r2": 0.9, "wmae": 0.1, "mae": 0.12}, dpi=40)
    _png(out)


def test_true_vs_predicted_rejects_bad_input(tmp_path):
    y, p = _feh(10, np.random.default_rng(3))
    with pytest.raises(ValueError, match=r"'y_val': 10, 'pred_val': 9"):
        plots.true_vs_predicted(y, p, y, p[:9], tmp_path / "x.png")
    with pytest.raises(ValueError, match="no finite .* training set"):
        plots.true_vs_predicted(y, np.full(10, np.nan), y, p, tmp_path / "x.png")
    with pytest.raises(ValueError, match="no finite .* validation set"):
        plots.true_vs_predicted(y, p, y[:0], p[:0], tmp_path / "x.png")


def test_limits_cover_all_finite_values_with_padding():
    low, high = plots._limits(np.array([-2.0, np.nan, 0.0]), np.array([-3.0, np.inf, 1.0]))
    assert low == pytest.approx(-3.2) and high == pytest.approx(1.2)
    assert plots._limits(np.array([1.0, 1.0])) == pytest.approx((0.9, 1.1))
    with pytest.raises(ValueError, match="no finite"):
        plots._limits(np.array([np.nan]))


def test_true_vs_predicted_panels_share_limits(tmp_path, monkeypatch):
    """The drawn axes of both panels have identical x and y limits covering every finite value."""
    seen = {}

    def keep(fig, path, dpi):
        seen["fig"] = fig
        return Path(path)

    monkeypatch.setattr(plots, "_save", keep)
    y_tr = np.array([-2.5, -1.0, 0.3, np.nan])
    p_tr = np.array([-2.0, -1.1, 0.1, 5.0])  # the 5.0 is paired with a NaN: left out
    y_va = np.array([-1.5, -0.5])
    p_va = np.array([-3.1, -0.4])
    plots.true_vs_predicted(y_tr, p_tr, y_va, p_va, "unused.png")
    axes = [ax for ax in seen["fig"].axes if ax.get_xlabel().startswith("[Fe/H]")]
    assert len(axes) == 2
    limits = {(ax.get_xlim(), ax.get_ylim()) for ax in axes}
    assert len(limits) == 1
    (xlim, ylim), = limits
    assert xlim == ylim
    assert xlim[0] < -3.1 and 0.3 < xlim[1] < 5.0
    assert xlim == pytest.approx(plots._limits(y_tr[:3], p_tr[:3], y_va, p_va))


def test_binned_quantiles_constant_per_bin():
    x = np.arange(40.0)
    level = np.repeat([0.1, -0.2, 0.3, 0.05], 10)
    centres, q16, q50, q84 = plots.binned_quantiles(x, level, 4)
    assert centres == pytest.approx([4.5, 14.5, 24.5, 34.5])
    for q in (q16, q50, q84):
        assert q == pytest.approx(level[::10])


def test_binned_quantiles_ties_few_stars_and_nan():
    # equal epoch counts stay together: two distinct x values cannot make more than two bins
    x = np.repeat([30.0, 60.0], 20)
    y = np.repeat([1.0, 2.0], 20)
    centres, _, q50, _ = plots.binned_quantiles(x, y, 8)
    assert centres == pytest.approx([30.0, 60.0]) and q50 == pytest.approx([1.0, 2.0])
    centres, q16, q50, q84 = plots.binned_quantiles([1, 2, 3, np.nan, 5], [0, 1, 2, 3, 4], 8)
    assert centres.size == 1 and q50[0] == pytest.approx(1.5) and q16[0] < q50[0] < q84[0]
    with pytest.raises(ValueError, match="n_bins"):
        plots.binned_quantiles([1.0], [1.0], 0)


def test_residuals_vs_epochs_writes_png(tmp_path):
    rng = np.random.default_rng(4)
    n_ep = rng.integers(15, 250, 2000)
    res = rng.normal(0, 0.3 / np.sqrt(n_ep / 15))
    _png(plots.residuals_vs_epochs(n_ep, res, tmp_path / "res.png", title="val", dpi=40))
    _png(plots.residuals_vs_epochs(np.array([20, 35, 50, 80, 120]),
                                   np.array([0.1, -0.2, 0.05, 0.0, -0.1]),
                                   tmp_path / "five.png", n_bins=8, dpi=40))


def test_residuals_vs_epochs_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"'n_epochs': 3, 'residual': 2"):
        plots.residuals_vs_epochs(np.array([1, 2, 3]), np.array([0.1, 0.2]), tmp_path / "x.png")
    with pytest.raises(ValueError, match="no stars"):
        plots.residuals_vs_epochs(np.array([]), np.array([]), tmp_path / "x.png")
