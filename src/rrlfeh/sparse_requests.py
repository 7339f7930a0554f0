"""The pyfunc requests of curves cut to a few epochs (rrlfeh.sparse.draw_subsets): each subset
sent as a star, with or without its period, and the BP/RP epochs of its chosen transits. Used by
the stage `sparse` and by `train`'s period-error calibration."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)


def request(chosen: pd.DataFrame, subsets: pd.DataFrame, stars: pd.DataFrame,
            mode: str, bands: pd.DataFrame | None = None) -> pd.DataFrame:
    """The pyfunc's long form of the subsets (each subset a star: source_id = subset_id), with
    the star's period, epoch_max and type (`with_period`) or without them (`without_period`,
    then with `bands`' BP/RP rows of the chosen transits, and a `band` column). Folded points
    (`phase` instead of `time`) go as the folded form: source_id, phase, mag, with the period
    and type or without them."""
    from rrlfeh.serving.inputs import request_frame

    per_subset = stars.set_index("source_id").reindex(subsets["source_id"].to_numpy())
    per_subset = per_subset.reset_index(drop=True).assign(
        source_id=subsets["subset_id"].to_numpy())
    if "time" not in chosen.columns:
        return folded_request(chosen, per_subset, mode)
    frame = request_frame(chosen.assign(source_id=chosen["subset_id"]), per_subset)
    if mode == "with_period":
        return frame
    frame = frame.drop(columns=["period", "epoch_max", "type"])
    if bands is None:
        return frame
    extra = chosen[["subset_id", "source_id", "transit_id"]].merge(
        bands, on=["source_id", "transit_id"])
    extra = extra.assign(source_id=extra["subset_id"])[[*frame.columns, "band"]]
    both = pd.concat([frame.assign(band="G"), extra], ignore_index=True)
    return both.sort_values("source_id", kind="stable", ignore_index=True)


def folded_request(chosen: pd.DataFrame, per_subset: pd.DataFrame, mode: str) -> pd.DataFrame:
    """The folded form of subsets of folded points (source_id = subset_id, phase, mag), with
    each subset's period and type (`with_period`) or without them."""
    frame = pd.DataFrame({"source_id": chosen["subset_id"].to_numpy(np.int64),
                          "phase": chosen["phase"].to_numpy(float),
                          "mag": chosen["mag"].to_numpy(float)})
    if mode != "with_period":
        return frame
    joined = per_subset.set_index("source_id").reindex(frame["source_id"].to_numpy())
    return frame.assign(period=joined["period"].to_numpy(float),
                        type=joined["type"].astype(object).to_numpy())


def read_bands(path: Path, ids: np.ndarray) -> pd.DataFrame:
    """BP and RP epochs (schema.EPOCHS and `band`) of the stars `ids` in an epochs file (a
    band whose columns the file lacks, e.g. a RAW extract of G only, has no rows)."""
    from rrlfeh.data.layouts import LayoutError, read_table, to_epochs

    raw = read_table(path)
    raw = raw[pd.to_numeric(raw[_column(raw, "source_id")], errors="coerce").isin(ids)]
    parts = []
    for band in ("BP", "RP"):
        try:
            parts.append(to_epochs(raw, band=band).assign(band=band))
        except LayoutError as exc:
            log.warning("sparse: no %s epochs in %s (%s)", band, path, exc)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _column(df: pd.DataFrame, name: str) -> str:
    """The column of `df` named `name` in any case."""
    return next(c for c in df.columns if str(c).lower() == name)
