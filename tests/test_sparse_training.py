"""Training on sparse copies: the copies themselves, folds by star, the stack per number of
epochs and the uncertainty calibrated per bin, each against an independent computation."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rrlfeh.preprocess.augment import (
    AugmentSettings,
    append_copies,
    copy_sizes,
    copy_weights,
    sparse_copies,
)
from rrlfeh.training.arrays import TrainingSet
from rrlfeh.training.kfold import split_by_star, star_folds, stratified_folds
from rrlfeh.training.served import (
    bin_index,
    choose_served,
    epoch_edges,
    quality_spread,
    residual_scales,
    served_predict,
)


def _epochs(n_stars: int = 6, n_epochs: int = 60, seed: int = 0) -> tuple[pd.DataFrame,
                                                                          pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(n_stars):
        t = np.sort(rng.uniform(0, 1000, n_epochs))
        for i, ti in enumerate(t):
            rows.append({"source_id": 100 + s, "transit_id": i, "time": ti,
                         "mag": 15 + 0.3 * np.sin(2 * np.pi * ti / 0.55), "flux": 1.0,
                         "flux_error": 0.01, "rejected": i % 10 == 0})
    epochs = pd.DataFrame(rows)
    stars = pd.DataFrame({"source_id": 100 + np.arange(n_stars), "period": 0.55,
                          "epoch_max": 0.1})
    return epochs, stars


def test_copies_are_subsets_of_the_clean_epochs_of_their_star():
    epochs, stars = _epochs()
    s = AugmentSettings(n_epochs=(15, 20, 40), copies=4, min_left=5, seed=3)
    copy_epochs, copies = sparse_copies(epochs, stars, s)
    assert len(copies) == len(stars) * 4
    assert (copies["source_id"] < 0).all() and copies["source_id"].is_unique
    clean = epochs[~epochs["rejected"]]
    for c in copies.itertuples():
        mine = copy_epochs[copy_epochs["source_id"] == c.source_id]
        assert len(mine) == c.n_subset
        own = clean[clean["source_id"] == c.origin]
        # every epoch of a copy is a clean epoch of its star, none twice
        assert set(mine["transit_id"]) <= set(own["transit_id"])
        assert mine["transit_id"].is_unique
        assert mine["time"].to_numpy() == pytest.approx(
            own.set_index("transit_id").loc[mine["transit_id"], "time"].to_numpy())
    # 4 copies of 3 sizes: every size once, then one again
    for _, g in copies.groupby("origin"):
        assert sorted(set(g["n_subset"])) == [15, 20, 40]


def test_a_star_gets_only_the_sizes_it_has_epochs_for():
    rng = np.random.default_rng(0)
    s = AugmentSettings(n_epochs=(15, 20, 25, 30, 40), copies=5, min_left=5)
    assert set(copy_sizes(31, s, rng)) == {15, 20, 25}
    assert copy_sizes(19, s, rng) == []
    assert copy_sizes(100, AugmentSettings(copies=0), rng) == []


def test_copy_weights_share_the_weight_of_their_star():
    origin = np.array([1, 1, 1, 2, 3, 3])
    w = copy_weights(origin, np.array([1, 2, 3]), np.array([2.0, 1.0, 4.0]), 0.5)
    per_star = pd.Series(w).groupby(origin).sum()
    assert per_star.to_dict() == pytest.approx({1: 1.0, 2: 0.5, 3: 2.0})


def test_appended_copies_carry_their_stars_label_and_stratum():
    arrays = {"source_id": np.array([7, 8, 9]), "y": np.array([-1.0, -1.5, -2.0], np.float32),
              "weights": np.array([1.0, 2.0, 1.0], np.float32),
              "strata": np.array([0, 1, -1], np.int16), "is_test": np.array([False, False, True]),
              "n_epochs": np.array([60, 70, 80])}
    out = append_copies(arrays, {"n_epochs": np.array([15, 20, 25])}, np.array([8, 7, 8]),
                        np.array([1, 1, 2]), 1.0, ["n_epochs"])
    assert out["source_id"].tolist() == [7, 8, 9, 8, 7, 8]
    assert out["y"][3:].tolist() == [-1.5, -1.0, -1.5]
    assert out["strata"][3:].tolist() == [1, 0, 1]
    assert out["copy"].tolist() == [0, 0, 0, 1, 1, 2]
    assert out["weights"][3:] == pytest.approx([1.0, 1.0, 1.0])
    assert not out["is_test"][3:].any()
    with pytest.raises(ValueError, match="not training stars"):
        append_copies(arrays, {"n_epochs": np.array([15])}, np.array([9]), np.array([1]), 1.0,
                      ["n_epochs"])


def _training_set(n: int = 60, copies: int = 3, seed: int = 1) -> TrainingSet:
    rng = np.random.default_rng(seed)
    sid = np.arange(1000, 1000 + n)
    y = rng.normal(-1.5, 0.4, n)
    strata = np.digitize(y, np.quantile(y, [0.25, 0.5, 0.75]))
    rows_sid = np.concatenate([sid, np.repeat(sid, copies)])
    k = np.concatenate([np.zeros(n, int), np.tile(np.arange(1, copies + 1), n)])
    yy = np.concatenate([y, np.repeat(y, copies)])
    m = len(yy)
    return TrainingSet("RRab", np.zeros((m, 4, 2), np.float32), yy, np.ones(m),
                       np.concatenate([strata, np.repeat(strata, copies)]), rows_sid,
                       np.where(k == 0, 60, 15 + 5 * k), np.full(m, 0.6), np.zeros(m, bool),
                       copy=k)


def test_folds_keep_every_copy_with_its_star():
    data = _training_set()
    folds = star_folds(data, 5, 2, 42)
    plain = stratified_folds(data.strata[:60], 5, 2, 42)
    for (r, k, tr, va), (r0, k0, _tr0, va0) in zip(folds, plain, strict=True):
        assert (r, k) == (r0, k0)
        assert set(data.source_id[va]) == set(data.source_id[:60][va0])
        assert not set(data.source_id[tr]) & set(data.source_id[va])
        assert len(va) == 4 * len(va0)  # the star and its 3 copies
    own = star_folds(data, 5, 2, 42, originals_only=True)
    assert all(not data.is_copy[va].any() and not data.is_copy[tr].any() for *_, tr, va in own)
    tr, va = split_by_star(data, 0.2, 3)
    assert not set(data.source_id[tr]) & set(data.source_id[va])
    assert len(tr) + len(va) == len(data)


def test_epoch_bins_lie_between_the_copy_sizes():
    edges = epoch_edges((15, 20, 25, 30, 40))
    assert edges[:-1] == [0, 17.5, 22.5, 27.5, 35, 45]
    assert bin_index(np.array([12, 15, 18, 30, 44, 45, 158]), edges).tolist() == [
        0, 0, 1, 3, 4, 5, 5]


def _sparse_problem(seed: int = 0):
    """Stars whose label is a line in P and φ31 of the full curve; copies with φ31 measured
    with a noise that grows as the epochs fall, and a network that knows a little."""
    rng = np.random.default_rng(seed)
    n, sizes = 400, (15, 20, 25, 30, 40)
    period = rng.uniform(0.45, 0.75, n)
    phi31 = rng.normal(-1.0, 0.25, n)
    amp = 1.4 - 1.2 * period + rng.normal(0, 0.05, n)
    y = -1.3 - 3.0 * (period - 0.6) + 1.2 * (phi31 + 1.0) + rng.normal(0, 0.05, n)
    rows = {"sid": [], "n": [], "p": [], "phi": [], "amp": [], "y": [], "copy": []}
    for i in range(n):
        for k, size in enumerate((None, *sizes)):
            noise = 0.0 if size is None else 2.0 / size
            rows["sid"].append(i)
            rows["n"].append(60 if size is None else size)
            rows["p"].append(period[i])
            rows["phi"].append(phi31[i] + rng.normal(0, noise))
            rows["amp"].append(amp[i] + rng.normal(0, noise / 4))
            rows["y"].append(y[i])
            rows["copy"].append(k)
    r = {k: np.asarray(v) for k, v in rows.items()}
    m = len(r["y"])
    strata = np.digitize(r["y"], np.quantile(y, [0.25, 0.5, 0.75]))
    data = TrainingSet("RRab", np.zeros((m, 2, 2), np.float32), r["y"], np.ones(m), strata,
                       r["sid"], r["n"], r["p"], np.zeros(m, bool), phi31=r["phi"],
                       r21=np.full(m, 0.5) + rng.normal(0, 0.01, m), amplitude=r["amp"],
                       copy=r["copy"])
    network = r["y"] + rng.normal(0, 0.12, m)  # a network as good on every curve
    return data, network, sizes


def _line_oof(data, folds):
    """The line's out-of-fold predictions, fitted by numpy on the stars' own curves."""
    oof = np.zeros(len(data))
    count = np.zeros(len(data))
    for _, tr, va in folds:
        tr = tr[~data.is_copy[tr]]
        a = np.column_stack([np.ones(len(tr)), data.period[tr], data.phi31[tr]])
        coef = np.linalg.lstsq(a, data.y[tr], rcond=None)[0]
        oof[va] += coef[0] + coef[1] * data.period[va] + coef[2] * data.phi31[va]
        count[va] += 1
    return oof / count


def test_served_stack_beats_the_line_on_sparse_curves_and_never_loses_on_full_ones():
    data, network, sizes = _sparse_problem()
    folds = [(r, tr, va) for r, _, tr, va in star_folds(data, 5, 1, 42)]
    line_oof = _line_oof(data, folds)
    a = np.column_stack([np.ones((~data.is_copy).sum()), data.period[~data.is_copy],
                         data.phi31[~data.is_copy]])
    coef = np.linalg.lstsq(a, data.y[~data.is_copy], rcond=None)[0]
    line = {"features": ["period", "phi31"], "coef": coef.tolist()}
    stack, served = choose_served(data, network, line_oof, folds, epoch_edges(sizes), line)
    rmse = lambda rows, pred: float(np.sqrt(np.mean((pred[rows] - data.y[rows]) ** 2)))  # noqa
    own = ~data.is_copy
    assert rmse(own, served) <= rmse(own, line_oof) + 1e-12
    for size in (15, 20, 25):
        rows = data.n_epochs == size
        assert rmse(rows, served) < 0.75 * rmse(rows, line_oof)
    # each bin's served prediction is what its choice says, recomputed here
    b = np.digitize(data.n_epochs, stack["edges"][1:-1])
    for i, e in enumerate(stack["bins"]):
        rows = b == i
        assert e["n_curves"] == rows.sum()
        if e["relation"] == "line":
            expect = e["weight"] * network[rows] + (1 - e["weight"]) * line_oof[rows]
            assert served[rows] == pytest.approx(expect)
    # served_predict on the same values applies the final bin planes and weights
    values = {"period": data.period, "phi31": data.phi31, "r21": data.r21,
              "amplitude": data.amplitude}
    pred, w = served_predict(stack, line, network, values, data.n_epochs)
    for i, e in enumerate(stack["bins"]):
        assert np.all(w[b == i] == e["weight"])
    assert rmse(data.n_epochs == 20, pred) < 0.75 * rmse(data.n_epochs == 20, line_oof)


def _coverages(residual, total, rows):
    z = np.abs(residual[rows]) / total[rows]
    return np.mean(z <= 1), np.mean(z <= 2)


@pytest.mark.parametrize("tails", ["gaussian", "student_t5"])
def test_residual_scales_hold_68_and_95_percent_in_every_bin(tails):
    """Gaussian residuals: both shares as a normal law's; heavy tails (Student t, 5 dof, whose
    68 % point leaves only ~92 % within twice it): ±1σ within 68 ± 3 %, ±2σ within 95 ± 3 %."""
    rng = np.random.default_rng(5)
    n = np.repeat([15, 20, 25, 60], 4000)
    scale = np.select([n == 15, n == 20, n == 25], [0.4, 0.3, 0.2], 0.08)
    draw = rng.standard_normal if tails == "gaussian" else lambda k: rng.standard_t(5, k)
    residual = draw(n.size) * scale
    spread = np.full(n.size, 0.03)
    edges = epoch_edges((15, 20, 25))
    b = bin_index(n, edges)
    sigma, k = residual_scales(residual, spread, b, len(edges) - 1)
    assert k == [0.0] * (len(edges) - 1)  # no fit quality given: the bins' scatter alone
    total = np.hypot(spread, np.asarray(sigma)[b])
    for i in range(len(edges) - 1):
        one, two = _coverages(residual, total, b == i)
        if tails == "gaussian":
            assert one == pytest.approx(0.6827, abs=0.015)
            assert two == pytest.approx(0.9545, abs=0.01)
            # the total found is the scale drawn (the spread is part of it)
            assert np.median(total[b == i]) == pytest.approx(scale[b == i][0], rel=0.04)
        else:  # ±1σ kept within 3 % of 68.3 %, ±2σ brought nearer 95.4 % than 68 % alone gives
            assert abs(one - 0.6827) <= 0.03 + 1e-9 and abs(two - 0.9545) <= 0.03, (i, one, two)
            # a 1σ-only calibration would have missed ±2σ by more than the tolerance
            q68 = np.quantile(np.abs(residual[b == i]), 0.6827)
            assert np.mean(np.abs(residual[b == i]) <= 2 * q68) < 0.9545 - 0.02


def test_residual_scales_add_nothing_where_the_spread_covers_the_residuals():
    rng = np.random.default_rng(2)
    residual = rng.normal(0, 0.05, 1000)
    sigma, _ = residual_scales(residual, np.full(1000, 0.5), np.zeros(1000, int), 1)
    assert sigma == [0.0]


def test_feh_std_grows_with_the_fit_quality_where_the_residuals_do():
    """Residuals N(0, sqrt(0.05² + (0.8 q)²)) with q each curve's φ31 error: a mixture over q,
    heavy-tailed in the bin, whose 68 % scatter alone leaves ±2σ short. The scale found is
    near 0.8 dex/rad, ±1σ and ±2σ hold 68 % and 95 % for the clean and the noisy fits alike
    (each half judged apart), on fresh draws; with q unrelated to the residuals no scale."""
    rng = np.random.default_rng(11)
    n = 4000
    q = rng.lognormal(np.log(0.08), 0.8, n)
    truth = np.hypot(0.05, 0.8 * q)
    res = rng.standard_normal(n) * truth
    bins = np.zeros(n, int)
    q68 = np.quantile(np.abs(res), 0.6827)
    assert np.mean(np.abs(res) <= 2 * q68) < 0.93  # one scatter a bin cannot hold both
    sigma, k = residual_scales(res, np.zeros(n), bins, 1, q)
    assert k[0] == pytest.approx(0.8, abs=0.1) and sigma[0] == pytest.approx(0.05, abs=0.015)
    fitted = np.hypot(quality_spread(np.zeros(n), q, k, bins), sigma[0])
    assert abs(np.mean(np.abs(res) <= fitted) - 0.683) <= 0.03 + 1e-9  # in sample, as promised
    fresh_q = rng.lognormal(np.log(0.08), 0.8, 20000)
    fresh = rng.standard_normal(20000) * np.hypot(0.05, 0.8 * fresh_q)
    total = np.hypot(quality_spread(np.zeros(20000), fresh_q, k, np.zeros(20000, int)),
                     sigma[0])
    z = np.abs(fresh) / total
    for part in (fresh_q < np.median(fresh_q), fresh_q >= np.median(fresh_q)):
        assert abs(np.mean(z[part] <= 1) - 0.683) < 0.04
        assert abs(np.mean(z[part] <= 2) - 0.954) < 0.025
    # a quality that says nothing of the residuals gets (almost) no weight
    _, k_none = residual_scales(rng.normal(0, 0.1, n), np.zeros(n), bins, 1, q)
    assert k_none[0] <= 0.1


def test_feh_std_takes_a_scale_for_each_fit_quality():
    """Residuals N(0, sqrt(0.05² + (0.8 q1)² + (0.5 q2)²)) with two independent qualities a
    curve: the scales found are near (0.8, 0.5) dex/rad, one a quality, and the errors hold 68 %
    and 95 % on fresh draws; a second quality unrelated to the residuals gets (almost) none."""
    rng = np.random.default_rng(12)
    n = 3000

    def draw(size: int, k2: float) -> tuple[np.ndarray, np.ndarray]:
        q = np.column_stack([rng.lognormal(np.log(0.08), 0.8, size),
                             rng.lognormal(np.log(0.1), 0.8, size)])
        return rng.standard_normal(size) * np.sqrt(0.05**2 + (0.8 * q[:, 0]) ** 2
                                                   + (k2 * q[:, 1]) ** 2), q

    res, q = draw(n, 0.5)
    bins = np.zeros(n, int)
    sigma, k = residual_scales(res, np.zeros(n), bins, 1, q)
    assert len(k[0]) == 2
    assert k[0][0] == pytest.approx(0.8, abs=0.12) and k[0][1] == pytest.approx(0.5, abs=0.12)
    fresh, fresh_q = draw(20000, 0.5)
    total = np.hypot(quality_spread(np.zeros(20000), fresh_q, k, np.zeros(20000, int)),
                     sigma[0])
    assert abs(np.mean(np.abs(fresh) <= total) - 0.683) < 0.03
    assert abs(np.mean(np.abs(fresh) <= 2 * total) - 0.954) < 0.02
    res, q = draw(n, 0.0)
    _, k_none = residual_scales(res, np.zeros(n), bins, 1, q)
    assert k_none[0][0] == pytest.approx(0.8, abs=0.12) and k_none[0][1] <= 0.1


def test_training_qualities_are_the_served_ones():
    """`train.fit_quality` gives each training curve the qualities the served model gives it:
    the φ31 error as kept, and the disagreement of the smooth curve's φ31 (its discrete Fourier
    phases, computed here by hand) and of the template's, the template only where the served
    bank fits one (up to its max_epochs; the training arrays hold templates further up)."""
    from rrlfeh.preprocess.network_input import PHI31_CENTRE
    from rrlfeh.stages.train import fit_quality

    rng = np.random.default_rng(4)
    grid = np.arange(64) / 64
    m = 4
    x = np.zeros((m, 64, 2), np.float32)
    for i in range(m):
        x[i, :, 0] = (np.cos(2 * np.pi * grid + 0.3 * i) + 0.3 * np.cos(6 * np.pi * grid + i)
                      + rng.normal(0, 0.01, 64))
    n = np.array([20, 27, 28, 60])
    phi31 = rng.uniform(-1, 1, m)
    template = phi31 + np.array([0.2, -0.3, 0.4, 0.5])
    error = np.array([0.1, 0.2, 1.0, 0.05])
    data = TrainingSet("RRab", x, np.zeros(m), np.ones(m), np.zeros(m, int), np.arange(m), n,
                       np.full(m, 0.6), np.zeros(m, bool), ("standardised_mag", "phase"),
                       phi31, np.ones(m), error, np.ones(m), np.zeros(m, int), template,
                       np.ones(m))
    q = fit_quality(data, template_epochs=27)
    assert np.array_equal(q[:, 0], error)
    for i in range(m):
        c = [np.sum(x[i, :, 0].astype(float) * np.exp(-2j * np.pi * h * grid)) for h in (1, 3)]
        smooth = np.angle(c[1]) - 3 * np.angle(c[0]) - PHI31_CENTRE
        apart = abs(np.angle(np.exp(1j * (phi31[i] - smooth))))
        with_template = abs(np.angle(np.exp(1j * (phi31[i] - template[i])))) if n[i] <= 27 else 0
        assert q[i, 1] == pytest.approx(np.hypot(apart, with_template), abs=1e-9)
    no_bank = fit_quality(data, template_epochs=0)
    assert np.all(no_bank[:, 1] <= q[:, 1] + 1e-12)


def _folds_and_line(data):
    """Star folds, the line's out-of-fold predictions and the line fitted on the own curves."""
    folds = [(r, tr, va) for r, _, tr, va in star_folds(data, 5, 1, 42)]
    own = ~data.is_copy
    coef = np.linalg.lstsq(np.column_stack([np.ones(own.sum()), data.period[own],
                                            data.phi31[own]]), data.y[own], rcond=None)[0]
    return folds, _line_oof(data, folds), {"features": ["period", "phi31"],
                                           "coef": coef.tolist()}


def test_bins_of_full_curves_serve_the_line():
    """A bin holding stars' own curves serves the line there (their labels are the line of
    those very epochs), with the network's weight chosen on them alone: the last step of
    `choose_served`."""
    data, network, sizes = _sparse_problem()
    n = data.n_epochs.copy()
    # full curves of 38 epochs share the 36-45 bin with the 40-copies; others have 60
    n[~data.is_copy] = np.where(data.source_id[~data.is_copy] % 2 == 0, 38, 60)
    data = TrainingSet(data.kind, data.X, data.y, data.weights, data.strata, data.source_id, n,
                       data.period, data.is_test, data.channels, data.phi31, data.r21,
                       data.phi31_error, data.amplitude, data.copy)
    folds, line_oof, line = _folds_and_line(data)
    own = ~data.is_copy
    stack, served = choose_served(data, network, line_oof, folds, epoch_edges(sizes), line)
    b = np.digitize(data.n_epochs, stack["edges"][1:-1])
    full = sorted(set(b[own]))
    assert len(full) == 2
    # one weight: the best on the grid for all the stars' own curves together, recomputed here
    grid = np.round(np.arange(0, 1.001, 0.01), 10)
    best = grid[np.argmin([np.mean((w * network[own] + (1 - w) * line_oof[own]
                                    - data.y[own]) ** 2) for w in grid])]
    for i in full:
        e, rows = stack["bins"][i], b == i
        assert e["relation"] == "line" and "coef" not in e
        assert e["weight"] == pytest.approx(best)
        assert served[rows] == pytest.approx(best * network[rows] + (1 - best) * line_oof[rows])
    # bins of copies alone keep their own choice
    assert any(x["relation"] == "plane" for i, x in enumerate(stack["bins"]) if i not in full)


def test_without_own_curves_line_every_bin_keeps_its_own_choice():
    """`own_curves_line` false (labels that are not the line of each curve's own φ31, DG22's):
    no bin is forced to the line; each keeps the relation and weight of lowest out-of-fold RMSE,
    under the guard that on its stars' own curves it is never worse than the line."""
    data, network, sizes = _sparse_problem()
    folds, line_oof, line = _folds_and_line(data)
    own = ~data.is_copy
    forced, _ = choose_served(data, network, line_oof, folds, epoch_edges(sizes), line)
    free, served = choose_served(data, network, line_oof, folds, epoch_edges(sizes), line,
                                 own_curves_line=False)
    assert any("chosen_on" in e for e in forced["bins"])
    assert not any("chosen_on" in e for e in free["bins"])
    b = np.digitize(data.n_epochs, free["edges"][1:-1])
    for i, e in enumerate(free["bins"]):
        rows, mine = b == i, (b == i) & own
        err = np.sqrt(np.mean((served[rows] - data.y[rows]) ** 2))
        assert e["oof_rmse"] == pytest.approx(err)
        if e["relation"] == "line":
            w = e["weight"]
            assert served[rows] == pytest.approx(w * network[rows] + (1 - w) * line_oof[rows])
        if mine.any():
            line_rmse = np.sqrt(np.mean((line_oof[mine] - data.y[mine]) ** 2))
            assert np.sqrt(np.mean((served[mine] - data.y[mine]) ** 2)) <= line_rmse + 1e-9


def test_feh_std_is_calibrated_in_finer_bins_of_full_curves():
    from rrlfeh.stages.train import calibration_edges

    n = np.r_[np.full(300, 15), np.full(300, 20), np.full(300, 40), np.full(100, 50),
              np.full(60, 62), np.full(20, 75), np.full(15, 120)]
    edges = calibration_edges(epoch_edges((15, 20, 40)), n)
    # 45-55 and 55-70 hold >= 30 curves each; 70-90 (20) is merged into the bin above it
    assert edges == [0, 17.5, 30, 45, 55, 70, 1e6]
    counts = np.bincount(bin_index(n, edges))
    assert counts.min() >= 30 and counts.sum() == n.size


def test_feh_std_calibrated_on_copies_of_dense_stars():
    """`train.calibration_rows`: the curves of stars with >= 50 epochs and their copies; a bin
    with fewer than MIN_BIN_ROWS (30) of those adds the sparser stars' own curves, and with still
    too few keeps all its curves."""
    from rrlfeh.stages.train import calibration_rows

    rng = np.random.default_rng(0)
    own_n = np.where(np.arange(80) % 2 == 0, 60, 35)  # even ids dense, odd ids not
    sid = np.r_[np.arange(80), np.arange(80), np.arange(80)]
    dense = sid % 2 == 0
    n = np.r_[own_n, np.full(80, 20), np.full(80, 35)]
    copy = np.r_[np.zeros(80, int), np.ones(80, int), np.full(80, 2)]
    m = len(sid)
    data = TrainingSet("RRab", np.zeros((m, 2, 2), np.float32), rng.normal(size=m), np.ones(m),
                       np.zeros(m, int), sid, n, np.full(m, 0.6), np.zeros(m, bool), copy=copy)
    bins = np.digitize(n, [22.5, 27.5, 45])  # 20 | 25 | 35 | 60
    keep = calibration_rows(data, bins, 50)
    # 40 dense stars' copies at 20 and at 35 epochs, their own curves at 60: only these; the
    # sparser stars' own curves at 35 epochs and their copies are left out
    np.testing.assert_array_equal(keep, dense)
    # a bin of too few dense rows adds the sparser stars' own curves (not their copies) ...
    thin = np.r_[own_n, np.full(80, 20), np.where(np.arange(80) < 50, 35, 30)]
    data2 = TrainingSet("RRab", data.X, data.y, data.weights, data.strata, sid, thin, data.period,
                        data.is_test, copy=copy)
    bins2 = np.digitize(thin, [22.5, 27.5, 32.5, 45])  # 20 | 25 | 30 | 35 | 60
    keep2 = calibration_rows(data2, bins2, 50)
    at35 = thin == 35  # 25 dense copies: + the 40 own curves of sparser stars, not their copies
    np.testing.assert_array_equal(keep2[at35], (dense | (copy == 0))[at35])
    # ... and a bin with too few even then keeps all its curves (30 copies, 15 of dense stars)
    assert keep2[thin == 30].all() and (thin == 30).sum() == 30
    np.testing.assert_array_equal(keep2[copy == 1], dense[copy == 1])
