"""What the Spark tests share (test_spark_scoring.py, test_spark_cluster.py): a copy of data/raw
with bad stars, and the comparison of Spark's stars with the in-process pyfunc's."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

ATOL = 1e-6
NUMBERS = ["feh", "feh_std", "feh_spread", "period"]


def raw_with_bad_stars(project: Path, dest: Path) -> dict[int, str]:
    """A copy of data/raw with four stars made from real ones: 3 epochs, every mag NaN, a tenth
    of the mags NaN, an unknown type. Returns {id: what was done}."""
    shutil.copytree(project / "data/raw", dest)
    epochs = pd.read_parquet(dest / "epochs.parquet")
    stars = pd.read_parquet(dest / "stars.parquet")
    donors = stars.sort_values("n_epochs_g")["source_id"].to_numpy()[-4:]
    bad = {11: "3 epochs", 22: "every mag NaN", 33: "a tenth of the mags NaN", 44: "type RRd"}
    new_e, new_s = [epochs], [stars]
    for (sid, what), donor in zip(bad.items(), donors, strict=True):
        e = epochs[epochs["source_id"] == donor].assign(source_id=sid)
        if what == "3 epochs":
            e = e[~e["rejected"]].head(3)
        elif what == "every mag NaN":
            e = e.assign(mag=np.nan)
        elif what == "a tenth of the mags NaN":
            e = e.assign(mag=np.where(np.arange(len(e)) % 10 == 0, np.nan, e["mag"]))
        s = stars[stars["source_id"] == donor].assign(source_id=sid)
        if what == "type RRd":
            s = s.assign(type="RRd")
        new_e.append(e)
        new_s.append(s)
    pd.concat(new_e).sort_values("source_id", kind="stable").to_parquet(dest / "epochs.parquet")
    pd.concat(new_s).to_parquet(dest / "stars.parquet")
    return bad


def assert_same_stars(got: pd.DataFrame, ref: pd.DataFrame) -> None:
    """Every star of `ref` exactly once in `got`, with the same numbers (1e-6), status, type,
    domain flags."""
    assert got["source_id"].is_unique
    assert sorted(got["source_id"]) == sorted(ref["source_id"])
    g, r = got.set_index("source_id").loc[ref["source_id"]], ref.set_index("source_id")
    for col in NUMBERS:
        a, b = g[col].to_numpy(float), r[col].to_numpy(float)
        assert np.array_equal(np.isnan(a), np.isnan(b)), col
        assert np.allclose(a, b, atol=ATOL, equal_nan=True), (col, np.nanmax(np.abs(a - b)))
    for col in ("status", "type", "domain_reason", "in_domain", "period_derived", "n_epochs"):
        a = g[col].astype(object).where(g[col].notna(), None).tolist()
        b = r[col].astype(object).where(r[col].notna(), None).tolist()
        assert a == b, col
