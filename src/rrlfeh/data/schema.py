"""Column names and dtypes of the three raw tables every source writes (stars, epochs, labels).

Every source (gaia, files, synthetic) writes exactly these columns in this order, so no later
stage can tell them apart. Times are BJD(TCB) - 2455197.5 d, magnitudes Gaia G (Vega), fluxes e-/s.
phi31 follows the cosine-series convention m = A0 + sum_k A_k cos(k w (t - E) + phi_k),
phi31 = (phi_3 - 3 phi_1) mod 2 pi (radians): 2.0-2.7 rad for real RRab (median 2.36 on the DG22
Gaia curves), near the Iorio & Belokurov 2021 pivot of 2.0. The sine-series value is phi31 + pi
(mod 2 pi), about 5.5 rad for RRab; relations written for it, such as
[Fe/H] = -6.93 - 6.04 P + 1.65 phi31 (arXiv:2605.13811), take phi31_sine(phi31).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TYPES: tuple[str, ...] = ("RRab", "RRc")

STARS: dict[str, str] = {
    "source_id": "int64",
    "type": "string",          # 'RRab' | 'RRc'
    "period": "float64",       # d (pf for RRab, p1_o for RRc)
    "epoch_max": "float64",    # epoch of maximum light, BJD(TCB) - 2455197.5 d
    "amplitude_g": "float64",  # peak-to-peak G amplitude, mag
    "mean_mag_g": "float64",   # intensity-averaged G, mag
    "n_epochs_g": "int64",     # clean (not rejected) G epochs
    "phi31_g": "float64",      # rad, NaN when unknown
    "phi31_g_error": "float64",  # rad, NaN when unknown
    "r21_g": "float64",        # A2/A1, NaN when unknown
    "ra": "float64",           # deg, NaN when unknown
    "dec": "float64",          # deg, NaN when unknown
    "feh_true": "float64",     # dex, the synthetic source's true [Fe/H]; NaN for real sources
    "period_derived": "bool",  # True when computed here from the light curve
    "epoch_derived": "bool",
    "type_derived": "bool",
    "amplitude_derived": "bool",
    "phi31_derived": "bool",
}

EPOCHS: dict[str, str] = {
    "source_id": "int64",
    "transit_id": "int64",
    "time": "float64",        # BJD(TCB) - 2455197.5 d
    "mag": "float64",         # G, mag
    "flux": "float64",        # e-/s
    "flux_error": "float64",  # e-/s
    "rejected": "bool",       # rejected_by_variability | rejected_by_photometry | null flux/mag
}

LABELS: dict[str, str] = {
    "source_id": "int64",
    "feh": "float64",        # dex
    "feh_error": "float64",  # dex, NaN when unknown
}

def phi31_sine(phi31_cosine):
    """The sine-series phi31 of a cosine-series one: +pi, in [pi/2, 5 pi/2).

    The window keeps RRab values (cosine 2.0-3.4 rad -> sine 5.1-6.5 rad) unwrapped, so linear
    [Fe/H] relations stay continuous for metal-rich stars.
    """
    return np.mod(np.asarray(phi31_cosine, dtype=float) + np.pi / 2, 2 * np.pi) + np.pi / 2


MAG_PER_FLUX: float = 2.5 / np.log(10.0)  # 1.0857: sigma_mag = MAG_PER_FLUX * sigma_flux / flux


def mag_error(epochs: pd.DataFrame) -> np.ndarray:
    """Per-transit magnitude error from the flux and its error (NaN where the flux is not > 0)."""
    flux = epochs["flux"].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(flux > 0, MAG_PER_FLUX * epochs["flux_error"].to_numpy(float) / flux,
                        np.nan)


DERIVED_FLAGS: tuple[str, ...] = tuple(c for c in STARS if c.endswith("_derived"))


class SchemaError(ValueError):
    """A table does not have the columns or types its schema requires."""


def conform(df: pd.DataFrame, schema: dict[str, str], table: str) -> pd.DataFrame:
    """Return `df` with exactly the schema's columns, in order, cast to the schema's dtypes.

    Missing float columns are filled with NaN and missing *_derived flags with False; any other
    missing column is an error naming the table and the column.
    """
    out = {}
    for col, dtype in schema.items():
        if col in df.columns:
            values = df[col]
        elif dtype == "float64":
            values = pd.Series(np.nan, index=df.index)
        elif col.endswith("_derived"):
            values = pd.Series(False, index=df.index)
        else:
            raise SchemaError(f"{table}: required column {col!r} is missing "
                              f"(have {sorted(df.columns)})")
        if dtype in ("int64", "bool") and values.isna().any():
            bad = df.loc[values.isna()].head(3)
            raise SchemaError(f"{table}: column {col!r} has nulls, e.g. rows\n{bad}")
        out[col] = values.astype(dtype)
    return pd.DataFrame(out).reset_index(drop=True)

REJECTED: dict[str, str] = {
    "source_id": "int64",
    "stage": "string",   # the stage that set the star aside (acquire, validate, preprocess)
    "reason": "string",  # every reason, '; '-separated
}
