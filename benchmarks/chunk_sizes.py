"""How many stars the vectorised fits take at once, and what it costs: the periodic spline
(`preprocess.curves.chunk_size`) and the template fits (`rrlfeh.lightcurve.templates.MAX_CELLS`).

The whole preprocessing as the pyfunc runs it (`preprocess_light_curves` with the registered
model's knobs and template bank) on the real Gaia DR3 G curves with their cached periods (mode
(a) of benchmarks/score.py), in one process, each setting twice, interleaved (the machine is
shared): stars/s and the largest difference of every output from the first setting's. Large
chunks make (stars, 51, 32) and (stars, 165, 128) float64 arrays of tens of MB that do not stay
in cache. Prints figures; asserts nothing.

    TF_CPP_MIN_LOG_LEVEL=2 .venv/bin/python benchmarks/chunk_sizes.py [--tracking-uri URI]
        [--model-uri URI] [--n-stars 9999] [--data DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
from scoring_setup import add_options, load_curves, load_model, model_uri, run_benchmark

SETTINGS = [(2048, 4_000_000), (256, 4_000_000), (2048, 250_000), (256, 250_000)]


def run_all(args: argparse.Namespace, tmp: Path) -> None:
    from rrlfeh.data import schema
    from rrlfeh.lightcurve import templates
    from rrlfeh.lightcurve.features import fit_knobs
    from rrlfeh.preprocess import preprocess_light_curves

    model = load_model(*model_uri(args, tmp)).unwrap_python_model().model
    data = load_curves(args)
    kind = "RRab"
    known = data.known[data.known["type"] == kind].set_index("source_id")
    ids = np.intersect1d(data.cat_ids, known.index.to_numpy())
    e = data.epochs[data.epochs["source_id"].isin(ids) & ~data.epochs["rejected"]]
    errors = np.asarray(schema.mag_error(e), float)  # from the fluxes, as the pyfunc reads them
    s = model.settings["preprocess"]
    knobs = dict(s["curves"], n_points=int(s["n_points"][kind]),
                 fourier=fit_knobs(model.settings["derive"]))
    print(f"{len(ids):,} {kind} stars, {len(e):,} epochs; the model's chunk_size "
          f"{knobs['chunk_size']}, template bank {len(model.templates.get(kind, []))} curves")

    def once(chunk: int, cells: int):
        templates.MAX_CELLS = cells
        t0 = time.perf_counter()
        pc, _ = preprocess_light_curves(
            e["source_id"].to_numpy(np.int64), e["time"].to_numpy(float),
            e["mag"].to_numpy(float), known.loc[ids, "period"].to_numpy(float),
            known.loc[ids, "epoch_max"].to_numpy(float), star_id=ids,
            feature_error=errors, templates=model.templates.get(kind),
            **dict(knobs, chunk_size=chunk))
        return time.perf_counter() - t0, pc

    once(256, 250_000)  # imports, first allocations
    first = None
    rates: dict[tuple[int, int], list[float]] = {k: [] for k in SETTINGS}
    worst: dict[tuple[int, int], float] = dict.fromkeys(SETTINGS, 0.0)
    for _ in range(2):
        for chunk, cells in SETTINGS:
            seconds, pc = once(chunk, cells)
            rates[(chunk, cells)].append(len(pc) / seconds)
            if first is None:
                first = pc
            arrays = [(getattr(pc, f.name), getattr(first, f.name))
                      for f in dataclasses.fields(pc)
                      if isinstance(getattr(pc, f.name), np.ndarray)]
            diff = max(float(np.nanmax(np.abs(np.asarray(a, float) - np.asarray(b, float)),
                                       initial=0.0)) for a, b in arrays)
            worst[(chunk, cells)] = max(worst[(chunk, cells)], diff)
    print(f"\n{'spline chunk_size':>18} {'template MAX_CELLS':>19} {'stars/s (two runs)':>20} "
          f"{'largest difference':>19}")
    for chunk, cells in SETTINGS:
        r = rates[(chunk, cells)]
        print(f"{chunk:>18,} {cells:>19,} {', '.join(f'{x:,.0f}' for x in r):>20} "
              f"{worst[(chunk, cells)]:>19.2g}")
    print(f"(differences: every array of ProcessedCurves against the first setting's, "
          f"{len(first):,} stars)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_options(parser)
    run_benchmark(parser.parse_args(), run_all, "rrlfeh-chunk-bench-")


if __name__ == "__main__":
    main()
