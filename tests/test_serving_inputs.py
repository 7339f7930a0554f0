"""What users send, read into one request: forms, per-star values, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rrlfeh.data import layouts
from rrlfeh.serving.inputs import RequestError, read_epoch_frame, read_request

GAIA = Path(__file__).parent / "data" / "gaia"


def long_form() -> pd.DataFrame:
    return pd.DataFrame({
        "source_id": [9, 9, 9, 4, 4], "time": [1.0, 1.2, 1.1, 2.0, 2.5],
        "mag": [15.0, 15.2, 15.1, 16.0, 16.4], "period": [0.55, 0.55, np.nan, 0.31, 0.31],
        "Type": ["RRab", None, "RRab", " rrc ", "RRc"]})


def test_stars_in_order_of_first_appearance_with_their_values():
    req = read_request(long_form())
    assert req.form == "time"
    assert req.stars["source_id"].tolist() == [9, 4]
    assert req.stars["period"].tolist() == [0.55, 0.31]
    assert req.stars["type"].tolist() == ["RRab", "RRc"]
    assert np.isnan(req.stars["epoch_max"]).all()
    assert req.problems == {}
    assert len(req.epochs) == 5 and not req.epochs["rejected"].any()


@pytest.mark.parametrize(("drop", "named"), [("mag", "mag"), ("source_id", "source_id"),
                                             ("time", "time (or phase)")])
def test_a_missing_column_is_one_line_naming_it(drop, named):
    with pytest.raises(RequestError) as err:
        read_request(long_form().drop(columns=[drop]))
    assert named in str(err.value) and "\n" not in str(err.value)


def test_text_in_one_stars_numbers_is_that_stars_problem():
    req = read_request(long_form().assign(time=[1.0, "noon", 1.1, 2.0, 2.5],
                                          mag=[15.0, 15.2, 15.1, 16.0, 16.4]))
    assert req.problems == {9: "time is not a number in 1 row(s) (e.g. 'noon')"}
    assert np.isnan(req.epochs["time"].iloc[1]) and req.epochs["time"].iloc[3] == 2.0
    req = read_request(long_form().assign(period=[0.55, "x", "x", 0.31, 0.31], mag=[15, 15, 15,
                                                                                    16, 16]))
    assert req.problems == {9: "period is not a number in 2 row(s) (e.g. 'x')"}
    assert req.stars.set_index("source_id").loc[4, "period"] == 0.31
    assert req.epochs["mag"].dtype == np.float64  # whole numbers are numbers


def test_malformed_columns_are_request_errors():
    df = long_form()
    with pytest.raises(RequestError, match="both 'time' and 'phase'"):
        read_request(df.assign(phase=0.1))
    with pytest.raises(RequestError, match="source_id is null in 1 row"):
        read_request(df.assign(source_id=[9, None, 9, 4, 4]))
    with pytest.raises(RequestError, match="source_id is not an integer: 'abc'"):
        read_request(df.assign(source_id=["9", "9", "abc", "4", "4"]))
    with pytest.raises(RequestError, match="epoch_max"):
        read_request(df.drop(columns=["time"]).assign(phase=0.1, epoch_max=3.0))


def test_per_star_problems_do_not_stop_the_request():
    df = long_form().drop(columns=["Type"]).assign(period=[0.55, 0.56, 0.55, 0.31, 0.31],
                                                   type=["RRab", "RRab", "RRab", "RRd", "RRd"])
    req = read_request(df)
    assert set(req.problems) == {9, 4}
    assert "conflicting period values" in req.problems[9]
    assert "unknown type 'RRd'" in req.problems[4]


def test_nan_times_stay_per_star():
    req = read_request(long_form().assign(time=[np.nan, 1.2, 1.1, 2.0, 2.5]))
    assert np.isnan(req.epochs["time"].iloc[0]) and req.problems == {}


def test_magnitude_errors_from_fluxes():
    df = long_form().assign(flux=[1000.0, 2000.0, 500.0, 100.0, -1.0],
                            flux_error=[10.0, 10.0, 10.0, 1.0, 1.0])
    err = read_request(df).epochs["mag_error"].to_numpy()
    expected = 2.5 / np.log(10) * np.array([0.01, 0.005, 0.02, 0.01])
    assert np.allclose(err[:4], expected) and np.isnan(err[4])


def test_folded_form():
    df = pd.DataFrame({"source_id": [1, 1, 2], "phase": [0.1, 1.3, 0.5], "mag": [15, 15.2, 16],
                       "period": [0.6, 0.6, np.nan]})
    req = read_request(df)
    assert req.form == "folded" and req.x_column == "phase"
    assert req.stars["period"].iloc[0] == 0.6 and np.isnan(req.stars["period"].iloc[1])


def test_gaia_individual_layout_becomes_the_long_form():
    frame = pd.concat([layouts.read_table(p) for p in sorted(GAIA.glob("EPOCH_*.xml"))],
                      ignore_index=True)
    long = read_epoch_frame(frame)
    n_g = int((frame["band"].astype(str).str.strip() == "G").sum())
    # G rows as before; BP and RP rows follow under their `band` (for the period search)
    assert (long["band"] == "G").sum() == n_g and {"source_id", "time", "mag", "flux",
                                                   "flux_error", "rejected"} <= set(long.columns)
    assert set(long["band"]) <= {"G", "BP", "RP"}
    req = read_request(long)
    assert len(req.stars) == frame["source_id"].nunique()
    # archive flags survive as `rejected`
    flagged = frame[(frame["band"].astype(str).str.strip() == "G")
                    & (frame["rejected_by_variability"].astype(str).str.lower() == "true")]
    assert req.epochs["rejected"].sum() >= len(flagged)


def test_raw_layout_becomes_the_long_form():
    raw = pd.read_csv(GAIA / "raw_epochs.csv")
    long = read_epoch_frame(raw)
    assert len(long) == len(raw) and long["source_id"].nunique() == raw["source_id"].nunique()
    assert np.allclose(np.sort(long["time"]), np.sort(raw["g_transit_time"].dropna()), 0, 1e-9) \
        or long["time"].isna().any()


@pytest.mark.parametrize("dtype", [object, "string[pyarrow]"])
def test_types_spelled_any_way_read_once_per_star(dtype):
    """Case and spaces do not matter; a star given two types, or one this model does not
    score, gets that problem by name; nulls and empty cells mean no type; every column dtype
    (object, Arrow strings) reads the same."""
    types = [" rrab", "RRab", "RRc", "rrc ", None, "RRd", "RRab", "RRc", None, "", "3"]
    df = pd.DataFrame({"source_id": [1, 1, 2, 2, 3, 4, 5, 5, 6, 7, 8],
                       "time": np.arange(11.0), "mag": np.full(11, 15.0),
                       "type": pd.Series(types, dtype=dtype)})
    req = read_request(df)
    assert req.stars["type"].tolist() == ["RRab", "RRc", None, None, "RRab", None, None, None]
    assert req.problems == {5: "conflicting type values ['RRab', 'RRc']",
                            4: "unknown type 'RRd' (this model scores RRab and RRc)",
                            8: "unknown type '3' (this model scores RRab and RRc)"}
