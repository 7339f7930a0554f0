"""Periods of one star from two bands: agreement, harmonics, Gaia scanning-law aliases; the
BP and RP epochs of both archive layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rrlfeh.data.layouts import read_table, to_epochs
from rrlfeh.lightcurve.agreement import compare_periods, relation, summary

GAIA = Path(__file__).parent / "data" / "gaia"


@pytest.mark.parametrize(("other", "expected"), [
    (0.5504, "agree"), (0.5521, "unrelated"), (0.275, "half"), (1.1, "double"),
    (0.55 * 2 / 3, "two thirds"), (1.0 / (1.0 / 0.55 + 4.0), "alias spin"),
    (1.0 / (1.0 / 0.55 + 8.0), "alias spin"), (1.0 / (1.0 / 0.55 + 1.0 / 62.97),
                                               "alias precession"),
    (np.nan, "no period")])
def test_relation(other, expected):
    assert relation(0.55, other) == expected


def test_summary_counts_only_stars_with_both_periods():
    periods = pd.DataFrame({"source_id": [1, 2, 3, 4], "g": [0.5, 0.6, 0.7, np.nan],
                            "bp": [0.5001, 0.3, np.nan, 0.5]})
    rel = compare_periods(periods, "g", ("bp",))["bp_vs_g"]
    s = summary(rel)
    assert s["n_both"] == 2 and s["n_no_period"] == 2 and s["share_agree"] == 0.5
    assert s["n_half"] == 1


def test_g_band_equals_the_pipelines_reader_in_both_layouts():
    raw = read_table(GAIA / "raw_epochs.csv")
    if "bp_flux" not in raw.columns:  # the fixture holds BP/RP times and magnitudes only
        raw = raw.assign(bp_flux=1000.0, bp_flux_error=10.0, rp_flux=1000.0, rp_flux_error=10.0)
    g = to_epochs(raw, band="G").sort_values(["source_id", "transit_id"], ignore_index=True)
    ref = to_epochs(raw).sort_values(["source_id", "transit_id"], ignore_index=True)
    pd.testing.assert_frame_equal(g, ref)
    bp = to_epochs(raw, band="BP")
    assert len(bp) == len(raw) and np.allclose(np.sort(bp["time"].dropna()),
                                               np.sort(raw["bp_obs_time"].dropna()))
    ind = pd.concat([read_table(p) for p in sorted(GAIA.glob("EPOCH_*.xml"))], ignore_index=True)
    rp = to_epochs(ind, band="RP")
    assert len(rp) == int((ind["band"].astype(str).str.strip() == "RP").sum())
    with pytest.raises(ValueError, match="band must be one of"):
        to_epochs(ind, band="V")
