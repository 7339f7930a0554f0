"""Figures of a scored catalogue: its [Fe/H] distribution by type and its sky map (paper
Fig. 8). Without ra/dec, a Gaia source_id gives the star's HEALPix level-12 pixel
(source_id // 2**35, nested; about 0.86 arcmin), whose centre stands for the position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rrlfeh.io import atomic_path

HEALPIX_LEVEL = 12
SOURCE_ID_PIXEL_DIVISOR = 2**35


def positions(cat: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in degrees: the columns where finite, else the level-12 pixel centre."""
    from astropy_healpix import HEALPix

    n = len(cat)
    ra = cat["ra"].to_numpy(float) if "ra" in cat else np.full(n, np.nan)
    dec = cat["dec"].to_numpy(float) if "dec" in cat else np.full(n, np.nan)
    missing = ~(np.isfinite(ra) & np.isfinite(dec))
    if missing.any():
        pix = cat["source_id"].to_numpy(np.int64)[missing] // SOURCE_ID_PIXEL_DIVISOR
        lon, lat = HEALPix(nside=2**HEALPIX_LEVEL, order="nested").healpix_to_lonlat(pix)
        ra, dec = ra.copy(), dec.copy()
        ra[missing], dec[missing] = lon.deg, lat.deg
    return ra, dec


def feh_histogram(cat: pd.DataFrame, path: Path) -> Path:
    """[Fe/H] of the scored stars, one histogram a type, in-domain stars filled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(-3.5, 1.0, 46)
    for kind, g in cat.groupby("type"):
        ax.hist(g["feh"], bins=bins, histtype="step", lw=1.5, label=f"{kind} (all, {len(g)})")
        dom = g[g["in_domain"]]
        ax.hist(dom["feh"], bins=bins, alpha=0.3, label=f"{kind} in domain ({len(dom)})")
    ax.set_xlabel("[Fe/H] (dex)")
    ax.set_ylabel("stars")
    ax.legend(fontsize=8)
    ax.set_title("Scored catalogue")
    return _save(fig, path)


def sky_map(cat: pd.DataFrame, path: Path) -> Path:
    """Galactic Mollweide map of the scored stars coloured by [Fe/H] (paper Fig. 8)."""
    import matplotlib

    matplotlib.use("Agg")
    import astropy.units as u
    import matplotlib.pyplot as plt
    from astropy.coordinates import SkyCoord

    fig = plt.figure(figsize=(8, 4.5))
    ax = fig.add_subplot(111, projection="mollweide")
    if len(cat):
        ra, dec = positions(cat)
        gal = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs").galactic
        lon = -np.radians(((gal.l.deg + 180.0) % 360.0) - 180.0)  # l grows to the left
        sc = ax.scatter(lon, np.radians(gal.b.deg), c=cat["feh"], s=2, cmap="viridis",
                        vmin=-2.5, vmax=0.0, rasterized=True)
        fig.colorbar(sc, ax=ax, orientation="horizontal", pad=0.08, fraction=0.05,
                     label="[Fe/H] (dex)")
    ticks = np.array([-120, -60, 0, 60, 120])  # map x, degrees; l = -x (mod 360)
    ax.set_xticks(np.radians(ticks))
    ax.set_xticklabels([f"{(-t) % 360}°" for t in ticks], fontsize=8)
    for label in ax.get_xticklabels():
        label.set_bbox({"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})
    ax.grid(True, alpha=0.3)
    ax.set_title(f"{len(cat)} scored stars (Galactic l, b; l = 0° at the centre, growing to "
                 "the left)", pad=12, fontsize=10)
    ax.text(0.5, -0.02, "Only the stars of the input are shown: an extract that covers part of "
            "the sky leaves the rest empty.", transform=ax.transAxes, ha="center", va="top",
            fontsize=7, alpha=0.8)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path
