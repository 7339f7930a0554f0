"""Source `files`: local extracts of epoch photometry, an optional stars table, and labels.

Where the stars table is absent or lacks period, epoch of maximum, type, amplitude or phi31 (as in
the real ../shared Gaia DR3 set), they are derived from the light curve and flagged *_derived.
Stars that cannot be fitted are set aside with the reason, never dropped silently. The BP/RP
epochs of the same file join G in the period search (data/raw/epochs.parquet stays G only).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rrlfeh.data import schema

log = logging.getLogger(__name__)

# vari_rrlyrae column names -> ours, for a stars table downloaded from the Gaia archive.
VARI_RRLYRAE_NAMES = {
    "best_classification": "type",
    "epoch_g": "epoch_max",
    "peak_to_peak_g": "amplitude_g",
    "int_average_g": "mean_mag_g",
    "num_clean_epochs_g": "n_epochs_g",
}

# What derivation fills, and the flag that says it did.
DERIVABLE = {
    "period": "period_derived",
    "epoch_max": "epoch_derived",
    "type": "type_derived",
    "amplitude_g": "amplitude_derived",
    "phi31_g": "phi31_derived",
}


@dataclass(frozen=True)
class RawTables:
    """What every source hands to stage `acquire`: the three tables and the stars set aside."""

    stars: pd.DataFrame
    epochs: pd.DataFrame
    labels: pd.DataFrame
    rejected: pd.DataFrame

    def conformed(self) -> RawTables:
        """The same tables with exactly the schema's columns and dtypes."""
        return RawTables(
            stars=schema.conform(self.stars, schema.STARS, "stars"),
            epochs=schema.conform(self.epochs, schema.EPOCHS, "epochs"),
            labels=schema.conform(self.labels, schema.LABELS, "labels"),
            rejected=schema.conform(self.rejected, schema.REJECTED, "rejected"),
        )


def empty(table: dict[str, str]) -> pd.DataFrame:
    """An empty frame with the columns and dtypes of `table`."""
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in table.items()})


def stars_from_catalogue(df: pd.DataFrame) -> pd.DataFrame:
    """A stars table in our names from ours or from gaiadr3.vari_rrlyrae's (pf / p1_o -> period)."""
    out = df.rename(columns=VARI_RRLYRAE_NAMES)
    if "period" not in out.columns and ("pf" in out.columns or "p1_o" in out.columns):
        pf = out["pf"] if "pf" in out.columns else pd.Series(np.nan, index=out.index)
        p1 = out["p1_o"] if "p1_o" in out.columns else pd.Series(np.nan, index=out.index)
        out["period"] = np.where(out.get("type", pd.Series("", index=out.index)) == "RRc", p1, pf)
        out["period"] = out["period"].fillna(pf).fillna(p1)
    if "source_id" not in out.columns:
        raise schema.SchemaError(
            f"stars table has no source_id column (have {sorted(out.columns)})")
    return out


def clean_epoch_counts(epochs: pd.DataFrame) -> pd.Series:
    """Number of clean G epochs per source_id, by the same rule the light-curve fit uses."""
    from rrlfeh.lightcurve.derive import clean_mask

    return epochs.loc[clean_mask(epochs)].groupby("source_id").size()


def read_band_epochs(path: Path) -> pd.DataFrame | None:
    """The BP and RP epochs of an epoch-photometry file (schema.EPOCHS plus `band`), None where
    it has neither; a band whose columns are missing or unreadable is left out with a warning
    (the G light curve does not need it)."""
    from rrlfeh.data.layouts import RAW_BAND_COLUMNS, read_table, to_epochs

    table = read_table(path)
    have = {str(c).lower() for c in table.columns}
    frames = []
    for band in ("BP", "RP"):
        if "band" not in have and not set(RAW_BAND_COLUMNS[band]) <= have:
            continue
        try:
            frames.append(to_epochs(table, band=band).assign(band=band))
        except (ValueError, KeyError) as exc:
            log.warning("%s: %s epochs left out of the period search (%s)", path, band, exc)
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else None


def complete_stars(catalogue: pd.DataFrame | None, epochs: pd.DataFrame,
                   derive_kwargs: Mapping[str, Any], bands: pd.DataFrame | None = None
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One stars row per star with epochs: catalogue values where known, derived ones elsewhere.
    `bands`: BP/RP epochs that join G in the period search of the stars derived.

    Returns (stars, rejected): stars the light curve could not supply a needed value for are
    rejected with the fit's reason; catalogue stars without any epoch photometry likewise.
    """
    from rrlfeh.lightcurve.derive import derive_light_curve_parameters

    ids = np.sort(epochs["source_id"].unique())
    stars = pd.DataFrame({"source_id": ids})
    rejected = [empty(schema.REJECTED)]
    if catalogue is not None:
        cat = stars_from_catalogue(catalogue)
        orphan = np.setdiff1d(cat["source_id"].to_numpy(), ids)
        if orphan.size:
            rejected.append(pd.DataFrame({"source_id": orphan, "stage": "acquire",
                                          "reason": "in the stars table but no epoch photometry"}))
        stars = stars.merge(cat, on="source_id", how="left")
    for col in (*DERIVABLE, "mean_mag_g", "phi31_g_error", "r21_g", "n_epochs_g"):
        if col not in stars.columns:
            stars[col] = pd.Series(None, index=stars.index, dtype=object) if col == "type" \
                else np.nan
    stars["type"] = stars["type"].astype(object)  # an all-empty column reads as float
    counts = clean_epoch_counts(epochs).reindex(stars["source_id"]).fillna(0).to_numpy()
    stars["n_epochs_g"] = stars["n_epochs_g"].fillna(pd.Series(counts, index=stars.index))

    missing = pd.DataFrame({c: stars[c].isna() for c in DERIVABLE})
    need = missing.any(axis=1).to_numpy()
    for flag in DERIVABLE.values():
        stars[flag] = False
    if need.any():
        ids = stars.loc[need, "source_id"]
        sub = epochs[epochs["source_id"].isin(ids)]
        sub_bands = bands[bands["source_id"].isin(ids)] if bands is not None else None
        given = stars.loc[need & stars["period"].notna().to_numpy()]  # fitted at, not searched
        periods = dict(zip(given["source_id"], given["period"], strict=True))
        derived = derive_light_curve_parameters(sub, bands=sub_bands, periods=periods,
                                                **dict(derive_kwargs))
        derived = derived.set_index("source_id")
        derived = derived.reindex(stars["source_id"])
        # A derived value is only as good as its fit; the others follow the (given or derived)
        # period.
        for col, flag in DERIVABLE.items():
            fill = (missing[col].to_numpy() & derived["fit_ok"].fillna(False).to_numpy(bool)
                    & derived[col].notna().to_numpy())  # phi31 needs >= 3 harmonics
            stars.loc[fill, col] = derived[col].to_numpy()[fill]
            stars.loc[fill, flag] = True
        for col in ("mean_mag_g", "phi31_g_error", "r21_g"):
            fill = stars[col].isna().to_numpy() & need
            stars.loc[fill, col] = derived[col].to_numpy()[fill]
        failed = need & ~derived["fit_ok"].fillna(False).to_numpy(bool)
        if failed.any():
            rejected.append(pd.DataFrame({
                "source_id": stars.loc[failed, "source_id"].to_numpy(), "stage": "acquire",
                "reason": derived["fit_reason"].to_numpy()[failed]}))
            stars = stars.loc[~failed]
    return stars.reset_index(drop=True), pd.concat(rejected, ignore_index=True)


def acquire_from_files(epochs_path: Path, labels_path: Path | None, stars_path: Path | None = None,
                       derive_kwargs: Mapping[str, Any] | None = None) -> RawTables:
    """Read local extracts and complete the stars table from the light curves where needed."""
    from rrlfeh.data.labels import read_labels
    from rrlfeh.data.layouts import read_epoch_photometry, read_table

    epochs = read_epoch_photometry(epochs_path)
    bad_labels: list[pd.DataFrame] = []
    labels = (read_labels(labels_path, set_aside=bad_labels) if labels_path is not None
              else empty(schema.LABELS))
    catalogue = read_table(stars_path) if stars_path is not None else None
    stars, rejected = complete_stars(catalogue, epochs, derive_kwargs or {},
                                     read_band_epochs(epochs_path))
    rejected = pd.concat([rejected, *[b.assign(stage="acquire") for b in bad_labels]],
                         ignore_index=True)
    return RawTables(stars=stars, epochs=epochs, labels=labels, rejected=rejected).conformed()
