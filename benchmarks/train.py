"""Training and inference throughput of the paper's GRU (NetworkSpec() defaults) on this machine.

Curves: `--n-curves` synthetic curves of shape (n, 264, 2), resampled with replacement from the
real processed RRab arrays (data/processed/RRab.npz, a little noise on the magnitude channel so
no two are identical; labels and KDE weights come along), or random normal data if that file is
missing. Training: one model.fit call, the first epoch (tracing, warm-up) left out, then
`--epochs` timed epochs -> seconds and curves/s per epoch. Inference: model.predict at batch 1024
on all curves after a warm-up call. Batch sweep: the same training figure for each batch size of
`--batch-sweep` (a fresh model each, warm-up epoch left out, at most 2 timed epochs) on
min(n_curves, `--sweep-curves`) curves. Runs on whatever device TensorFlow sees (no device is
forced). Prints figures; asserts nothing.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/train.py [--n-curves 5000] [--epochs 3]
        [--batch 256] [--batch-sweep 32,64,128,256,512] [--sweep-curves 2000] [--no-determinism]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from rrlfeh.training.model import NetworkSpec, build_model
from rrlfeh.training.runner import seed_everything

REPO = Path(__file__).resolve().parents[1]
STEPS = 264


def resample_steps(x: np.ndarray, steps: int) -> np.ndarray:
    """Curves (n, s, c) linearly resampled to `steps` points on the same phase range."""
    if x.shape[1] == steps:
        return x
    old = np.linspace(0.0, 1.0, x.shape[1])
    new = np.linspace(0.0, 1.0, steps)
    out = np.empty((x.shape[0], steps, x.shape[2]), dtype=x.dtype)
    for i in range(x.shape[0]):
        for c in range(x.shape[2]):
            out[i, :, c] = np.interp(new, old, x[i, :, c])
    return out


def make_curves(n: int, path: Path, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """(X (n, 264, 2), y, weights, description of where they came from)."""
    rng = np.random.default_rng(seed)
    if path.exists():
        with np.load(path) as d:
            x0, y0, w0 = d["X"].astype(np.float32), d["y"], d["weights"]
        x0 = resample_steps(x0, STEPS)
        idx = rng.integers(0, len(y0), n)
        x = x0[idx].copy()
        x[:, :, 0] += rng.normal(0.0, 0.02, (n, STEPS)).astype(np.float32)
        src = f"resampled with replacement from {path.relative_to(REPO)} ({len(y0)} stars)"
        return x, y0[idx].astype(np.float32), w0[idx].astype(np.float32), src
    x = rng.normal(size=(n, STEPS, 2)).astype(np.float32)
    y = rng.normal(-1.5, 0.5, n).astype(np.float32)
    w = rng.uniform(0.5, 2.0, n).astype(np.float32)
    return x, y, w, f"random normal ({path} not found)"


def epoch_timer():
    """A Keras callback that records the wall time of each epoch."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        """Seconds of each epoch in `times`."""

        def __init__(self) -> None:
            super().__init__()
            self.times: list[float] = []
            self._t0 = 0.0

        def on_epoch_begin(self, epoch: int, logs=None) -> None:
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs=None) -> None:
            self.times.append(time.perf_counter() - self._t0)

    return EpochTimer()


def time_training(x: np.ndarray, y: np.ndarray, w: np.ndarray, spec: NetworkSpec,
                  epochs: int, seed: int, deterministic: bool) -> tuple[float, list[float]]:
    """(seconds of the warm-up epoch, seconds of each timed epoch) of a fresh model."""
    seed_everything(seed, deterministic)
    model = build_model(x.shape[1:], spec)
    timer = epoch_timer()
    model.fit(x, y, sample_weight=w, batch_size=spec.batch_size, epochs=1 + epochs, verbose=0,
              shuffle=True, callbacks=[timer])
    return timer.times[0], timer.times[1:]


def time_inference(x: np.ndarray, spec: NetworkSpec, seed: int, deterministic: bool,
                   batch: int = 1024, repeats: int = 2) -> list[float]:
    """Seconds of each timed model.predict over all curves (a warm-up call left out)."""
    seed_everything(seed, deterministic)
    model = build_model(x.shape[1:], spec)
    model.predict(x[: 2 * batch + 1], batch_size=batch, verbose=0)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.predict(x, batch_size=batch, verbose=0)
        out.append(time.perf_counter() - t0)
    return out


def describe_machine(deterministic: bool) -> None:
    """Versions, cores and the devices the Keras backend sees (TensorFlow here; JAX or PyTorch
    where KERAS_BACKEND says so, e.g. on a GPU machine without TensorFlow)."""
    import keras

    backend = keras.backend.backend()
    cores = os.cpu_count() or 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    print(f"Keras {keras.__version__} on {backend}, Python {platform.python_version()}, "
          f"{platform.machine()}; CPU cores: {cores} (usable by this process: {usable})")
    if backend == "tensorflow":
        import tensorflow as tf

        devices = [f"{d.device_type}:{d.name}" for d in tf.config.list_physical_devices()]
        print(f"TensorFlow {tf.__version__}; intra/inter-op threads "
              f"{tf.config.threading.get_intra_op_parallelism_threads()}/"
              f"{tf.config.threading.get_inter_op_parallelism_threads()} (0 = TF default)")
    elif backend == "jax":
        import jax

        devices = [str(d) for d in jax.devices()]
    else:
        import torch

        devices = [torch.cuda.get_device_name(0)] if torch.cuda.is_available() else ["cpu"]
    print(f"devices the backend sees: {', '.join(devices)}")
    print(f"op determinism {'on' if deterministic else 'off'}; jit_compile off")


def main() -> None:
    """Parse the arguments, time training, inference and the batch sweep, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-curves", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batch-sweep", default="32,64,128,256,512",
                        help="comma-separated batch sizes ('' for none)")
    parser.add_argument("--sweep-curves", type=int, default=2000,
                        help="the sweep uses min(n_curves, this) curves")
    parser.add_argument("--sweep-epochs", type=int, default=2, help="timed epochs (at most 2)")
    parser.add_argument("--data", type=Path, default=REPO / "data" / "processed" / "RRab.npz")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-determinism", action="store_true",
                        help="leave TF op determinism off (the pipeline trains with it on)")
    args = parser.parse_args()
    deterministic = not args.no_determinism

    describe_machine(deterministic)
    x, y, w, src = make_curves(args.n_curves, args.data, args.seed)
    print(f"curves: {x.shape} float32, {src}")
    spec = replace(NetworkSpec(), batch_size=args.batch)
    print(f"network: GRU {spec.units}, dropout {spec.dropout}, lr {spec.learning_rate}")

    t_start = time.perf_counter()
    warm, times = time_training(x, y, w, spec, args.epochs, args.seed, deterministic)
    per_epoch = float(np.mean(times))
    print(f"\ntraining, {len(x)} curves, batch {spec.batch_size}: warm-up epoch {warm:.2f} s "
          f"(excluded); timed epochs " + ", ".join(f"{t:.2f}" for t in times) + " s")
    print(f"  -> {per_epoch:.2f} s per epoch = {len(x) / per_epoch:,.0f} curves/s "
          f"({len(x) / min(times):,.0f} curves/s best epoch)")

    pred_times = time_inference(x, spec, args.seed, deterministic)
    best_pred = min(pred_times)
    print(f"inference, model.predict batch 1024 on {len(x)} curves: "
          + ", ".join(f"{t:.2f}" for t in pred_times) + f" s -> {len(x) / best_pred:,.0f} "
          "curves/s (best of the timed calls, warm-up excluded)")

    sweep = [int(b) for b in args.batch_sweep.split(",") if b.strip()]
    n_sweep = min(args.n_curves, args.sweep_curves)
    sweep_epochs = max(1, min(2, args.sweep_epochs))
    rows = []
    if sweep:
        print(f"\nbatch sweep on the first {n_sweep} curves (min(n_curves, {args.sweep_curves})),"
              f" {sweep_epochs} timed epoch(s) each after a warm-up epoch, fresh model each:",
              flush=True)
    for b in sweep:
        _, t = time_training(x[:n_sweep], y[:n_sweep], w[:n_sweep],
                             replace(spec, batch_size=b), sweep_epochs, args.seed, deterministic)
        s = float(np.mean(t))
        rows.append((b, s, n_sweep / s, s * 5000 / n_sweep))
        print(f"  batch {b:4d}: {s:6.2f} s per epoch, {n_sweep / s:7,.0f} curves/s", flush=True)

    print("\n| measure | curves | batch | s per epoch | curves/s | s per epoch of 5,000 |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| train | {len(x)} | {spec.batch_size} | {per_epoch:.2f} | "
          f"{len(x) / per_epoch:,.0f} | {per_epoch * 5000 / len(x):.2f} |")
    print(f"| predict | {len(x)} | 1024 | - | {len(x) / best_pred:,.0f} | - |")
    for b, s, cps, s5k in rows:
        print(f"| train (sweep) | {n_sweep} | {b} | {s:.2f} | {cps:,.0f} | {s5k:.2f} |")
    print(f"\ntotal wall time {time.perf_counter() - t_start:.0f} s "
          "(after loading the Keras backend)")


if __name__ == "__main__":
    main()
