"""Gaia BP and RP epoch photometry (and G) as the canonical epochs table, one band at a time.

The pipeline fits G; BP and RP of the same transits give independent periods of the same stars
(`rrlfeh.lightcurve.agreement`), a check of the G periods where no catalogue period exists.
Both archive layouts are read: RAW exploded to rows (`bp_obs_time, bp_mag, bp_flux, ...`) and
INDIVIDUAL (a `band` column).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rrlfeh.data import schema

BANDS = ("G", "BP", "RP")
# RAW-layout columns per band: time, mag, flux, flux_error, the band's variability rejection flag
RAW_BAND_COLUMNS: dict[str, tuple[str, str, str, str, str]] = {
    "G": ("g_transit_time", "g_transit_mag", "g_transit_flux", "g_transit_flux_error",
          "variability_flag_g_reject"),
    "BP": ("bp_obs_time", "bp_mag", "bp_flux", "bp_flux_error", "variability_flag_bp_reject"),
    "RP": ("rp_obs_time", "rp_mag", "rp_flux", "rp_flux_error", "variability_flag_rp_reject"),
}


def band_epochs(df: pd.DataFrame, band: str) -> pd.DataFrame:
    """schema.EPOCHS rows of one band (rejected: Gaia's flags or a non-finite time/mag/flux)."""
    from rrlfeh.data.layouts import LayoutError, _flag, detect_layout, explode_raw

    band = band.upper()
    if band not in BANDS:
        raise ValueError(f"band must be one of {BANDS}, got {band!r}")
    df = df.rename(columns={c: str(c).lower() for c in df.columns})
    layout = detect_layout(df)
    if layout == "individual":
        rows = df[df["band"].astype(str).str.strip().str.upper() == band]
        cols = {"time": rows["time"], "mag": rows["mag"], "flux": rows["flux"],
                "flux_error": rows["flux_error"]}
        flags = _flag(rows["rejected_by_variability"]) | _flag(rows["rejected_by_photometry"])
    else:
        names = RAW_BAND_COLUMNS[band]
        missing = [c for c in names if c not in df.columns]
        if missing:
            raise LayoutError(f"RAW epoch photometry has no {band} columns {missing}")
        rows = explode_raw(df)
        cols = dict(zip(("time", "mag", "flux", "flux_error"), (rows[c] for c in names[:4]),
                        strict=True))
        flags = _flag(rows[names[4]]) | _flag(rows["rejected_by_photometry"])
    out = pd.DataFrame({"source_id": rows["source_id"].astype("int64").to_numpy(),
                        "transit_id": rows["transit_id"].astype("int64").to_numpy()})
    for name, values in cols.items():
        out[name] = pd.to_numeric(values, errors="coerce").astype("float64").to_numpy()
    bad = ~np.isfinite(out[["time", "mag", "flux"]].to_numpy()).all(axis=1)
    out["rejected"] = flags.to_numpy(bool) | bad
    out = out.sort_values(["source_id", "time"], kind="stable")
    return schema.conform(out, schema.EPOCHS, f"{band} epochs")
