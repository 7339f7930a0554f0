"""Ensemble of the K-fold models against one refit on all stars, on a held-out test set.

The numbers behind how the final model of each type is made (stage `train`). For one type, a
stratified test set (`--test-fraction`) is held out; on the other stars a stratified K-fold
(`--splits` x `--repeats`) trains the paper's network with early stopping on the weighted
validation loss (restore_best_weights) and records each fold's best epoch. On the test set,
with the test KDE weights: (a) each fold model alone (mean ± std over folds), (b) the mean of the
K fold models of the first repeat, (c) one model refit on all non-test stars for the median best
epoch (no early stopping: no validation set is left), (d) with --repeats > 1, the mean of all
K x R models, and (e) the classical baseline: a weighted least-squares plane in (P, φ31, R21)
from the same inputs (rrlfeh.training.baseline). For the ensembles also: the median per-star
spread (std over members, ddof=1 as rrlfeh.training.ensemble), the RMS of the test
residuals, the fraction of test stars with |residual| < spread and the Spearman correlation of
spread and |residual|. Prints a table and the wall time of each part; asserts nothing.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/ensemble_vs_refit.py [--kind RRab]
        [--data data/processed] [--test-fraction 0.2] [--splits 5] [--repeats 1]
        [--max-epochs 80] [--patience 12] [--seed 0] [--network '{"batch_size": 64}']
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr
from sklearn.model_selection import train_test_split

from rrlfeh.training.arrays import TrainingSet, load_training_set
from rrlfeh.training.kfold import stratified_folds
from rrlfeh.training.metrics import NAMES, aggregate, regression_metrics
from rrlfeh.training.model import NetworkSpec, build_model, predict
from rrlfeh.training.runner import quiet_tensorflow, seed_everything

REPO = Path(__file__).resolve().parents[1]
MIN_DELTA = 1e-5


@dataclass
class FoldResult:
    """One fold model: where it stands, how long it trained and what it predicts for the test."""

    repeat: int
    fold: int
    best_epoch: int
    epochs_run: int
    seconds: float
    val: dict[str, float]
    pred_test: np.ndarray


def split_test(data: TrainingSet, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(development index, test index): a test set stratified on the [Fe/H] strata."""
    dev, test = train_test_split(np.arange(len(data)), test_size=fraction,
                                 stratify=data.strata, random_state=seed)
    return np.sort(dev), np.sort(test)


def fit_fold(dev: TrainingSet, test: TrainingSet, tr: np.ndarray, va: np.ndarray,
             spec: NetworkSpec, args: argparse.Namespace, repeat: int, fold: int) -> FoldResult:
    """Train on dev[tr] with early stopping on dev[va]; predict the test stars."""
    import keras

    t0 = time.perf_counter()
    seed_everything(args.seed + 1000 * repeat + fold, not args.no_determinism)
    a, b = dev.subset(tr), dev.subset(va)
    model = build_model(dev.input_shape, spec)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=args.patience,
                                         min_delta=MIN_DELTA, restore_best_weights=True)
    hist = model.fit(a.X, a.y, sample_weight=a.weights, batch_size=spec.batch_size,
                     epochs=args.max_epochs, verbose=0, validation_data=(b.X, b.y, b.weights),
                     callbacks=[stop, keras.callbacks.TerminateOnNaN()])
    val_loss = np.asarray(hist.history["val_loss"], dtype=float)
    val = regression_metrics(b.y, predict(model, b.X), b.weights)
    return FoldResult(repeat, fold, int(np.nanargmin(val_loss)) + 1, len(val_loss),
                      time.perf_counter() - t0, val, predict(model, test.X))


def refit(dev: TrainingSet, test: TrainingSet, spec: NetworkSpec, epochs: int,
          args: argparse.Namespace) -> np.ndarray:
    """Train on all development stars for a fixed number of epochs; predict the test stars."""
    import keras

    seed_everything(args.seed + 999_999, not args.no_determinism)
    model = build_model(dev.input_shape, spec)
    model.fit(dev.X, dev.y, sample_weight=dev.weights, batch_size=spec.batch_size,
              epochs=epochs, verbose=0, shuffle=True, callbacks=[keras.callbacks.TerminateOnNaN()])
    return predict(model, test.X)


def ensemble_stats(preds: np.ndarray, test: TrainingSet) -> dict[str, float]:
    """Metrics of the member mean, plus spread vs residual figures of the ensemble."""
    mean = preds.mean(axis=0)
    spread = preds.std(axis=0, ddof=1) if len(preds) > 1 else np.zeros(preds.shape[1])
    res = np.abs(test.y - mean)
    rho = spearmanr(spread, res).statistic if len(preds) > 1 else float("nan")
    return {**regression_metrics(test.y, mean, test.weights),
            "members": len(preds), "spread_median": float(np.median(spread)),
            "resid_rms": float(np.sqrt(np.mean(res**2))),
            "frac_within_spread": float(np.mean(res < spread)), "spearman": float(rho)}


def row(label: str, m: dict[str, float], sd: dict[str, float] | None = None) -> str:
    """One markdown table row of the Table-1 metrics (with ± std when given)."""
    cells = [f"{m[k]:.3f}" + (f" ± {sd[k]:.3f}" if sd else "") for k in NAMES]
    return f"| {label} | " + " | ".join(cells) + " |"


def baseline_metrics(dev: TrainingSet, test: TrainingSet) -> dict[str, float]:
    """The classical (P, φ31, R21) plane fitted on the development stars, scored on the test."""
    from rrlfeh.training.baseline import LinearRelation, plane_features

    model = LinearRelation().fit(plane_features(dev), dev.y, dev.weights)
    return regression_metrics(test.y, model.predict(plane_features(test)),
                              test.weights)


def print_report(single: list[dict[str, float]], ens: dict[str, dict[str, float]],
                 refit_m: dict[str, float], refit_epochs: int, n_test: int,
                 base_m: dict[str, float]) -> None:
    """The comparison table and the ensembles' spread figures."""
    agg = aggregate(single)
    print(f"\ntest set: {n_test} stars (metrics weighted by the test KDE weights)")
    print("| model | " + " | ".join(NAMES) + " |")
    print("|---|" + "---:|" * len(NAMES))
    print(row(f"(a) single fold model (mean ± std of {len(single)})",
              {k: v["mean"] for k, v in agg.items()}, {k: v["std"] for k, v in agg.items()}))
    for i, (label, m) in enumerate(ens.items()):
        print(row(f"{label} ({m['members']} members)", m))
        if i == 0:
            print(row(f"(c) refit on all non-test stars, {refit_epochs} epochs", refit_m))
    print(row("(e) classical plane in (P, φ31, R21), same stars", base_m))
    print("\nensemble spread against the test residuals:")
    print("| ensemble | median spread | RMS residual | RMS / median spread "
          "| frac |res| < spread | Spearman(spread, |res|) |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, m in ens.items():
        ratio = m["resid_rms"] / m["spread_median"] if m["spread_median"] > 0 else float("nan")
        print(f"| {label} | {m['spread_median']:.3f} | {m['resid_rms']:.3f} | {ratio:.2f} | "
              f"{m['frac_within_spread']:.2f} | {m['spearman']:.2f} |")


def main() -> None:
    """Split, K-fold, refit, compare on the test set and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="RRab")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "processed")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--max-epochs", type=int, default=80)
    parser.add_argument("--patience", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--network", default="{}",
                        help="JSON overriding NetworkSpec fields, e.g. '{\"batch_size\": 64}'")
    parser.add_argument("--no-determinism", action="store_true",
                        help="leave TF op determinism off (the pipeline trains with it on)")
    args = parser.parse_args()
    spec = NetworkSpec.from_params(json.loads(args.network))
    t_all = time.perf_counter()
    quiet_tensorflow()

    data = load_training_set(args.data / f"{args.kind}.npz", args.kind)
    dev_idx, test_idx = split_test(data, args.test_fraction, args.seed)
    dev, test = data.subset(dev_idx), data.subset(test_idx)
    folds = stratified_folds(dev.strata, args.splits, args.repeats, args.seed)
    print(f"{args.kind}: {len(data)} stars, {data.input_shape}; test {len(test)} "
          f"(stratified, seed {args.seed}), development {len(dev)}; {args.splits}-fold x "
          f"{args.repeats}; max {args.max_epochs} epochs, patience {args.patience}, "
          f"min_delta {MIN_DELTA}", flush=True)
    print(f"network: {json.dumps(spec.as_dict())}", flush=True)

    t0 = time.perf_counter()
    results: list[FoldResult] = []
    for r, k, tr, va in folds:
        res = fit_fold(dev, test, tr, va, spec, args, r, k)
        results.append(res)
        print(f"  repeat {r} fold {k}: best epoch {res.best_epoch} of {res.epochs_run}, "
              f"val R2 {res.val['r2']:.3f} wRMSE {res.val['wrmse']:.3f}, "
              f"{res.seconds:.0f} s", flush=True)
    t_folds = time.perf_counter() - t0
    best = np.array([f.best_epoch for f in results])
    refit_epochs = max(1, int(round(float(np.median(best)))))
    print(f"K-fold: {t_folds:.0f} s; best epochs {best.tolist()}, median -> {refit_epochs}",
          flush=True)

    t0 = time.perf_counter()
    refit_pred = refit(dev, test, spec, refit_epochs, args)
    t_refit = time.perf_counter() - t0
    print(f"refit on {len(dev)} stars for {refit_epochs} epochs: {t_refit:.0f} s", flush=True)

    single = [regression_metrics(test.y, f.pred_test, test.weights) for f in results]
    first = np.stack([f.pred_test for f in results if f.repeat == 1])
    ens = {"(b) ensemble of the K fold models": ensemble_stats(first, test)}
    if args.repeats > 1:
        ens["(d) ensemble of all K x R models"] = ensemble_stats(
            np.stack([f.pred_test for f in results]), test)
    print_report(single, ens, regression_metrics(test.y, refit_pred, test.weights),
                 refit_epochs, len(test), baseline_metrics(dev, test))
    print(f"\nwall time: K-fold {t_folds:.0f} s ({t_folds / len(results):.0f} s per fold), "
          f"refit {t_refit:.0f} s, total {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
