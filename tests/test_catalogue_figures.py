"""Catalogue figures: positions from Gaia source_ids (HEALPix level 12) and the two plots."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rrlfeh.data.synthetic import generate
from rrlfeh.serving.figures import feh_histogram, positions, sky_map


def test_source_id_pixels_give_the_positions_to_an_arcminute():
    stars = generate(200, seed=11).stars  # ids built from the positions (synthetic_sampling)
    ra, dec = positions(stars[["source_id"]])  # no ra/dec: from the ids alone
    d_ra = (ra - stars["ra"].to_numpy() + 180.0) % 360.0 - 180.0
    sep = np.hypot(d_ra * np.cos(np.radians(dec)), dec - stars["dec"].to_numpy())
    assert sep.max() < 1.5 / 60  # a level-12 pixel is ~0.86 arcmin across
    ra2, dec2 = positions(stars)  # given ra/dec are used as they are
    assert np.array_equal(ra2, stars["ra"].to_numpy())


def test_figures_are_written(tmp_path):
    rng = np.random.default_rng(0)
    cat = pd.DataFrame({"source_id": generate(50, seed=2).stars["source_id"],
                        "feh": rng.normal(-1.5, 0.5, 50), "type": ["RRab", "RRc"] * 25,
                        "in_domain": [True, False] * 25})
    assert feh_histogram(cat, tmp_path / "h.png").stat().st_size > 5000
    assert sky_map(cat, tmp_path / "s.png").stat().st_size > 5000
