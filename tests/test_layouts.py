"""Gaia epoch-photometry layouts (INDIVIDUAL, RAW) to the canonical epochs table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rrlfeh.data import layouts, schema

GAIA = Path(__file__).parent / "data" / "gaia"
INDIVIDUAL_FILES = sorted(GAIA.glob("EPOCH_PHOTOMETRY-*.xml"))


def individual_frame() -> pd.DataFrame:
    """The INDIVIDUAL fixtures (3 stars, G/BP/RP rows) as one DataFrame."""
    return pd.concat([layouts.read_table(p) for p in INDIVIDUAL_FILES], ignore_index=True)


def test_individual_keeps_g_only_and_flags_rejections():
    raw = individual_frame()
    assert set(raw["band"]) == {"G", "BP", "RP"}
    epochs = layouts.to_epochs(raw)
    assert list(epochs.columns) == list(schema.EPOCHS)
    assert epochs.dtypes.astype(str).to_dict() == schema.EPOCHS
    assert len(epochs) == int((raw["band"] == "G").sum()) == 10
    # one rejected by variability, one by photometry (with null flux/mag), one by photometry only
    assert epochs["rejected"].sum() == 3
    null_row = epochs[epochs["transit_id"] == 19887113426755931].iloc[0]
    assert null_row["rejected"] and np.isnan(null_row["mag"]) and np.isnan(null_row["flux"])
    var_row = epochs[epochs["transit_id"] == 23455961034532509].iloc[0]
    assert var_row["rejected"] and np.isfinite(var_row["mag"])
    assert epochs[["source_id", "transit_id"]].equals(
        epochs.sort_values(["source_id", "transit_id"])[["source_id", "transit_id"]])


def test_both_layouts_give_identical_tables():
    from_individual = layouts.to_epochs(individual_frame())
    from_raw = layouts.read_epoch_photometry(GAIA / "raw_epochs.csv")
    assert layouts.detect_layout(pd.read_csv(GAIA / "raw_epochs.csv")) == "raw"
    assert layouts.detect_layout(individual_frame()) == "individual"
    pd.testing.assert_frame_equal(from_individual, from_raw, check_exact=False, rtol=1e-12)


def test_unexploded_raw_arrays_explode_to_the_same_table():
    rows = pd.read_csv(GAIA / "raw_epochs.csv")
    cols = ["transit_id", "g_transit_time", "g_transit_mag", "g_transit_flux",
            "g_transit_flux_error", "variability_flag_g_reject", "rejected_by_photometry"]
    per_star = rows.groupby("source_id")[cols].agg(lambda s: s.to_numpy()).reset_index()
    assert len(per_star) == 3
    expected = layouts.to_epochs(rows)
    pd.testing.assert_frame_equal(layouts.to_epochs(per_star), expected)
    # as astropy hands VOTable arrays over: masked arrays, nulls masked
    masked = per_star.copy()
    for col in cols:
        masked[col] = masked[col].map(lambda a: np.ma.masked_invalid(a) if a.dtype.kind == "f"
                                      else np.ma.MaskedArray(a))
    pd.testing.assert_frame_equal(layouts.to_epochs(masked), expected)


def test_file_formats_agree(tmp_path):
    frame = individual_frame()
    frame.to_parquet(tmp_path / "ep.parquet")
    frame.to_csv(tmp_path / "ep.csv", index=False)
    from_xml = layouts.to_epochs(frame)
    for name in ("ep.parquet", "ep.csv"):
        pd.testing.assert_frame_equal(layouts.read_epoch_photometry(tmp_path / name), from_xml)
    one_star = layouts.read_epoch_photometry(INDIVIDUAL_FILES[0])
    assert set(one_star["source_id"]) == {4000000000000000001}


def test_text_flags_are_read_as_booleans():
    frame = individual_frame()
    expected = layouts.to_epochs(frame)
    for col in ("rejected_by_photometry", "rejected_by_variability"):
        frame[col] = frame[col].map({True: "true", False: "false"})
    pd.testing.assert_frame_equal(layouts.to_epochs(frame), expected)
    frame.loc[0, "rejected_by_photometry"] = "maybe"
    with pytest.raises(layouts.LayoutError, match="maybe"):
        layouts.to_epochs(frame)


def test_neither_layout_lists_the_columns():
    df = pd.DataFrame({"source_id": [1], "obs_time": [1.0], "g_mag": [15.0]})
    with pytest.raises(layouts.LayoutError) as err:
        layouts.detect_layout(df)
    message = str(err.value)
    assert "obs_time" in message and "g_mag" in message
    assert "'band'" in message and "'g_transit_time'" in message


def test_duplicate_transit_names_the_star():
    frame = individual_frame()
    frame = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)
    with pytest.raises(layouts.LayoutError, match="4000000000000000001"):
        layouts.to_epochs(frame)


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "ep.txt"
    path.write_text("x")
    with pytest.raises(ValueError, match="unsupported file type"):
        layouts.read_epoch_photometry(path)


@pytest.mark.realdata
def test_real_raw_file(shared_data):
    path = shared_data / "gaia_dr3" / "epoch_photometry.parquet"
    epochs = layouts.read_epoch_photometry(path)
    assert len(epochs) == 498_398
    assert epochs["source_id"].nunique() == 9_999
    assert epochs.dtypes.astype(str).to_dict() == schema.EPOCHS
    raw = pd.read_parquet(path, columns=["g_transit_time", "g_transit_mag", "g_transit_flux",
                                         "variability_flag_g_reject", "rejected_by_photometry"])
    expected = (raw["variability_flag_g_reject"] | raw["rejected_by_photometry"]
                | raw[["g_transit_time", "g_transit_mag", "g_transit_flux"]].isna().any(axis=1))
    assert int(epochs["rejected"].sum()) == int(expected.sum()) == 19_490
    assert not epochs.loc[~epochs["rejected"], ["time", "mag", "flux"]].isna().any().any()


def test_raw_arrays_keep_bp_and_rp_for_the_period_search():
    """The archive's RAW layout as served (one row a source, arrays per transit): BP and RP
    arrays are exploded with G's, so `to_epochs(band=...)` reads them."""
    from rrlfeh.data.layouts import to_epochs

    row = {"source_id": 5, "transit_id": np.array([1, 2, 3]),
           "g_transit_time": np.array([10.0, 20.0, 30.0]),
           "g_transit_mag": np.array([15.0, 15.2, 15.1]),
           "g_transit_flux": np.array([1e4, 9e3, 9.5e3]),
           "g_transit_flux_error": np.array([10.0, 10.0, 10.0]),
           "variability_flag_g_reject": np.array([False, False, True]),
           "rejected_by_photometry": np.array([False, False, False]),
           "bp_obs_time": np.array([10.01, 20.01, 30.01]),
           "bp_mag": np.array([15.3, 15.6, np.nan]),
           "bp_flux": np.array([5e3, 4e3, np.nan]), "bp_flux_error": np.array([9.0, 9.0, 9.0]),
           "variability_flag_bp_reject": np.array([False, True, False]),
           "bp_n_obs": 3}  # a per-source scalar beside the arrays: left alone
    df = pd.DataFrame([row])
    bp = to_epochs(df, band="BP")
    assert bp["time"].tolist() == [10.01, 20.01, 30.01]
    assert bp["rejected"].tolist() == [False, True, True]  # flagged; no flux
    g = layouts.to_epochs(df)
    assert g["time"].tolist() == [10.0, 20.0, 30.0] and g["rejected"].tolist() == [False, False,
                                                                                    True]
