"""The training stars' sparse copies sent through the registered pyfunc, against the training
arrays: is what the model serves for a curve what it was trained and calibrated on?

The copies are remade as `preprocess` makes them (`augment.sparse_copies`, params' seed and
sizes), sent to `score_request` with their star's period, epoch of maximum and type, each
copy's own star left out of the template bank (as training leaves it out: the bank holds the
training stars' dense shapes). Prints, per copy size, the largest difference between the
pyfunc's [Fe/H] and feh_std and the served model applied to the training arrays
(`training_predictions.parquet`, the manifest's stack), and both RMSEs against the label.

Run after `make repro` (or `make realdata`) in that workspace:
    .venv/bin/python benchmarks/copies_through_pyfunc.py [--root .] [--type RRab]
        [--per-size 100]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from machine import describe_machine

import rrlfeh.preprocess as preprocess
from rrlfeh.preprocess.augment import AugmentSettings, sparse_copies
from rrlfeh.serving.inputs import read_request
from rrlfeh.serving.pipeline import ScoringModel, score_request
from rrlfeh.training.arrays import load_training_set
from rrlfeh.training.served import served_predict, training_values


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--type", default="RRab")
    ap.add_argument("--per-size", type=int, default=100)
    args = ap.parse_args()
    root, kind = args.root, args.type
    print(f"machine: {describe_machine()}")
    params = yaml.safe_load((root / "params.yaml").read_text())
    data = load_training_set(root / f"data/processed/{kind}.npz", kind)
    with np.load(root / f"data/processed/{kind}.npz") as d:
        train_ids = d["source_id"][~d["is_test"].astype(bool) & (d["copy"] == 0)]
    stars = pd.read_parquet(root / "data/validated/stars.parquet")
    epochs = pd.read_parquet(root / "data/raw/epochs.parquet")
    copy_epochs, copies = sparse_copies(epochs[epochs["source_id"].isin(train_ids)],
                                        stars[stars["source_id"].isin(train_ids)],
                                        AugmentSettings.from_params(
                                            params["preprocess"].get("augment")))
    chosen = copies.groupby("n_subset").head(args.per_size)
    request = copy_epochs[copy_epochs["source_id"].isin(chosen["source_id"])].merge(
        chosen[["source_id", "period", "epoch_max"]], on="source_id").assign(type=kind)

    origin = dict(zip(chosen["source_id"], chosen["origin"], strict=True))
    unpatched = preprocess.preprocess_light_curves

    def own_star_left_out(*a, star_id=None, **k):
        k["template_exclude"] = np.array([origin[int(i)] for i in star_id], np.int64)
        return unpatched(*a, star_id=star_id, **k)

    preprocess.preprocess_light_curves = own_star_left_out
    try:
        model = ScoringModel.load(root / "data/cache/register/model")
        out = score_request(read_request(request), model).set_index("source_id")
    finally:
        preprocess.preprocess_light_curves = unpatched

    manifest = json.loads((root / f"models/final/{kind}/manifest.json").read_text())
    pred = pd.read_parquet(root / f"models/final/{kind}/training_predictions.parquet")
    served, _ = served_predict(manifest["stack"], manifest["relation"],
                               pred["network_pred"].to_numpy(), training_values(data),
                               data.n_epochs)
    arrays = pd.DataFrame({"origin": data.source_id, "copy": data.copy, "served": served,
                           "feh_std": pred["feh_error"].to_numpy(), "label": data.y})
    both = chosen.merge(arrays, on=["origin", "copy"])
    both["pyfunc"] = out.loc[both["source_id"], "feh"].to_numpy()
    both["pyfunc_std"] = out.loc[both["source_id"], "feh_std"].to_numpy()
    print(f"{kind}: {len(both)} copies of {both['origin'].nunique()} training stars "
          f"({root})")
    def rmse(g: pd.DataFrame, column: str) -> float:
        return float(np.sqrt(np.nanmean((g[column] - g["label"]) ** 2)))

    for size, g in both.groupby("n_subset"):
        print(f"  {size} epochs, {len(g)} copies: max |[Fe/H] pyfunc - arrays| "
              f"{np.nanmax(np.abs(g['pyfunc'] - g['served'])):.2e}, max |feh_std| difference "
              f"{np.nanmax(np.abs(g['pyfunc_std'] - g['feh_std'])):.2e}; RMSE pyfunc "
              f"{rmse(g, 'pyfunc'):.4f}, arrays {rmse(g, 'served'):.4f}")
    print(f"machine: {describe_machine()}")


if __name__ == "__main__":
    main()
