"""The Great Expectations quality cuts and schema checks: what is kept, what is rejected and why."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rrlfeh.data import schema
from rrlfeh.quality import SchemaValidationError, validate_stars
from rrlfeh.quality_suite import build_cuts_suite, build_schema_suites, cut_keys

DATA = Path(__file__).parent / "data" / "quality"


def epochs_for(stars: pd.DataFrame, per_star: int = 3) -> pd.DataFrame:
    """A few clean epochs per star (the epochs table only meets the schema suite here)."""
    ids = np.repeat(stars["source_id"].to_numpy(), per_star)
    n = len(ids)
    return schema.conform(pd.DataFrame({
        "source_id": ids, "transit_id": np.arange(n), "time": np.linspace(0.0, 900.0, n),
        "mag": np.full(n, 16.0), "flux": np.full(n, 1e4), "flux_error": np.full(n, 10.0),
        "rejected": np.zeros(n, bool)}), schema.EPOCHS, "epochs")


def synthetic(n: int, seed: int = 0, *, dirty: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Random stars + labels; `dirty` spreads values across every cut and some NaNs."""
    rng = np.random.default_rng(seed)
    clean = not dirty
    stars = pd.DataFrame({
        "source_id": rng.choice(10**15, n, replace=False).astype("int64"),
        "type": rng.choice(["RRab", "RRc"], n),
        "period": rng.uniform(0.25, 0.9, n), "epoch_max": rng.uniform(0, 1000, n),
        "amplitude_g": rng.uniform(0.1, 1.3 if clean else 1.6, n),
        "mean_mag_g": rng.uniform(12, 18, n),
        "n_epochs_g": rng.integers(50 if clean else 20, 150, n),
        "phi31_g": rng.uniform(1, 5, n),
        "phi31_g_error": rng.uniform(0, 0.09 if clean else 0.15, n)})
    feh_error = rng.uniform(0.05, 0.39 if clean else 0.5, n)
    if dirty:
        stars.loc[rng.random(n) < 0.05, "phi31_g_error"] = np.nan
        stars.loc[rng.random(n) < 0.02, "amplitude_g"] = np.nan
        feh_error[rng.random(n) < 0.05] = np.nan
    labels = pd.DataFrame({"source_id": stars["source_id"], "feh": rng.normal(-1.5, 0.5, n),
                           "feh_error": feh_error})
    if dirty:
        labels = labels.loc[rng.random(n) > 0.1]
    return (schema.conform(stars, schema.STARS, "stars"),
            schema.conform(labels, schema.LABELS, "labels"))


@pytest.fixture(scope="module")
def handmade() -> tuple[pd.DataFrame, pd.DataFrame, pd.Series]:
    """The hand-written edge cases of tests/data/quality and their expected reasons."""
    raw = pd.read_csv(DATA / "stars.csv", keep_default_na=False, na_values={
        c: [""] for c in ("amplitude_g", "phi31_g_error")})
    expected = pd.Series(raw.pop("expected_reasons").to_numpy(), index=raw["source_id"])
    stars = schema.conform(raw, schema.STARS, "stars")
    labels = schema.conform(pd.read_csv(DATA / "labels.csv"), schema.LABELS, "labels")
    return stars, labels, expected


@pytest.fixture(scope="module")
def handmade_result(handmade, tmp_path_factory):
    stars, labels, _ = handmade
    docs = tmp_path_factory.mktemp("gx_docs")
    return validate_stars(stars, labels, epochs_for(stars), docs_dir=docs)


def test_clean_tables_pass_every_cut():
    stars, labels = synthetic(300, seed=1, dirty=False)
    res = validate_stars(stars, labels, epochs_for(stars))
    assert res.rejected.empty
    assert res.counts["n_in"] == res.counts["n_kept"] == 300
    assert list(res.kept.columns) == [*schema.STARS, "feh", "feh_error"]
    pd.testing.assert_series_equal(res.kept["source_id"], stars["source_id"])


def test_each_cut_rejects_exactly_its_violators_with_all_reasons(handmade, handmade_result):
    _, _, expected = handmade
    got = dict(zip(handmade_result.rejected["source_id"], handmade_result.rejected["reasons"],
                   strict=True))
    want = {int(i): r for i, r in expected.items() if r}
    assert got == want
    assert set(handmade_result.kept["source_id"]) == {int(i) for i, r in expected.items() if not r}
    assert (handmade_result.rejected.set_index("source_id")["type"].loc[114]) == "RRab"


def test_counts_add_up(handmade, handmade_result):
    c = handmade_result.counts
    assert c["n_in"] == 18 and c["n_kept"] + c["n_rejected"] == c["n_in"]
    assert c["n_kept"] == len(handmade_result.kept) == 7
    assert c["n_labels_without_star"] == 1  # label 999
    assert c["rejected_by_reason"] == {
        "no_label": 3, "type": 0, "feh_error": 2, "amplitude_g": 3, "amplitude_g_unknown": 1,
        "n_epochs_g": 3, "phi31_g_error": 2, "phi31_g_error_unknown": 1}
    for t, per in c["by_type"].items():
        assert per["n_kept"] + per["n_rejected"] == per["n_in"], t
    assert sum(p["n_in"] for p in c["by_type"].values()) == c["n_in"]
    assert c["by_type"]["RRc"]["rejected_by_reason"]["phi31_g_error"] == 0  # RRc exempt
    assert c["by_type"]["RRc"]["n_rejected"] == 1


def test_data_docs_written_and_mention_the_suites(handmade, handmade_result):
    index = handmade_result.docs_index
    assert index is not None and index.is_file()
    html = index.read_text()
    assert "rrlfeh_cuts" in html and "rrlfeh_stars_schema" in html
    pages = list(index.parent.glob("validations/rrlfeh_cuts/**/*.html"))
    assert len(pages) == 1 and "phi31_g_error" in pages[0].read_text()
    stars, labels, _ = handmade  # a rerun into the same folder replaces, not piles up, pages
    validate_stars(stars, labels, epochs_for(stars), docs_dir=index.parent)
    assert len(list(index.parent.glob("validations/rrlfeh_cuts/**/*.html"))) == 1


def test_reasons_agree_with_plain_pandas_masks():
    stars, labels = synthetic(3000, seed=2)
    res = validate_stars(stars, labels, epochs_for(stars, per_star=1))
    m = stars.merge(labels, on="source_id", how="left").set_index("source_id")
    rrab = m["type"] == "RRab"
    num = r"([0-9.e+-]+|inf)"
    cuts = {  # reason pattern -> (pandas mask, column whose value the reason quotes)
        r"no \[Fe/H\] label": (m["feh"].isna(), None),
        rf"feh_error {num} > 0\.4": (m["feh_error"] > 0.4, "feh_error"),
        rf"amplitude_g {num} > 1\.4": (m["amplitude_g"] > 1.4, "amplitude_g"),
        r"amplitude_g unknown": (m["amplitude_g"].isna(), None),
        rf"n_epochs_g {num} < 50": (m["n_epochs_g"] < 50, "n_epochs_g"),
        rf"phi31_g_error {num} > 0\.1": (rrab & (m["phi31_g_error"] > 0.1), "phi31_g_error"),
        r"phi31 error unknown": (rrab & m["phi31_g_error"].isna(), None),
    }
    reasons = res.rejected.set_index("source_id")["reasons"].str.split("; ")
    assert all(any(re.fullmatch(p, r) for p in cuts) for rs in reasons for r in rs)
    for pattern, (mask, column) in cuts.items():
        found = {i: re.fullmatch(pattern, r) for i, rs in reasons.items() for r in rs
                 if re.fullmatch(pattern, r)}
        assert set(found) == set(m.index[mask]), pattern
        assert found, f"the synthetic set should exercise {pattern!r}"
        if column:
            quoted = np.array([float(f.group(1)) for f in found.values()])
            np.testing.assert_allclose(quoted, m.loc[list(found), column], rtol=5e-3)
    any_cut = np.logical_or.reduce([mask.to_numpy() for mask, _ in cuts.values()])
    assert set(res.kept["source_id"]) == set(m.index[~any_cut])
    assert res.counts["n_kept"] + res.counts["n_rejected"] == 3000


def test_knobs_change_what_is_rejected(handmade):
    stars, labels, _ = handmade
    res = validate_stars(stars, labels, epochs_for(stars), types=("RRab",),
                         reject_unknown_feh_error=True, reject_unknown_phi31_error=False,
                         reject_unknown_amplitude=False, min_epochs=40, max_feh_error=0.6)
    got = dict(zip(res.rejected["source_id"], res.rejected["reasons"], strict=True))
    assert got[102] == "type RRc not in RRab"
    assert got[113] == "feh_error unknown"
    assert got[114] == "amplitude_g 1.5 > 1.4; n_epochs_g 31 < 40; phi31_g_error 0.2 > 0.1"
    assert got[112] == "no [Fe/H] label"  # no label: not also 'feh_error unknown'
    for kept in (104, 108, 111, 116):  # feh_error 0.52 < 0.6, 49 >= 40, unknowns now kept
        assert kept in set(res.kept["source_id"]), kept


@pytest.mark.parametrize(("break_it", "column", "shows"), [
    (lambda s, lb, e: (s.drop(columns="period"), lb, e), "period", "missing"),
    (lambda s, lb, e: (s.assign(period=s["period"].astype(str)), lb, e), "period", "dtype"),
    (lambda s, lb, e: (s.assign(source_id=s["source_id"].where(s.index != 2)), lb, e),
     "source_id", "row 2"),
    (lambda s, lb, e: (s.assign(source_id=s["source_id"].where(s.index != 2, 101)), lb, e),
     "source_id", "source_id=101 in rows [0, 2]"),
    (lambda s, lb, e: (s.assign(type=s["type"].where(s.index != 3, "RRd")), lb, e),
     "type", "source_id=104 type=RRd"),
    (lambda s, lb, e: (s.assign(period=s["period"].where(s.index != 4, 0.0)), lb, e),
     "period", "source_id=105 period=0.0"),
    (lambda s, lb, e: (s.assign(period=s["period"].where(s.index != 4, np.inf)), lb, e),
     "period", "source_id=105 period=inf"),
    (lambda s, lb, e: (s.assign(epoch_max=s["epoch_max"].where(s.index != 5)), lb, e),
     "epoch_max", "source_id=106"),
    (lambda s, lb, e: (s, pd.concat([lb, lb.iloc[:1]]), e), "source_id", "labels"),
    (lambda s, lb, e: (s, lb.assign(feh=lb["feh"].astype(str)), e), "feh", "labels"),
    (lambda s, lb, e: (s, lb, e.assign(mag=e["mag"].where(e.index != 7))), "mag",
     "source_id=103 transit_id=7"),
    (lambda s, lb, e: (s, lb, e.drop(columns="rejected")), "rejected", "epochs"),
])
def test_broken_schema_stops_naming_the_column(handmade, break_it: Callable, column: str,
                                               shows: str):
    stars, labels, _ = handmade
    bad = break_it(stars.copy(), labels.copy(), epochs_for(stars))
    with pytest.raises(SchemaValidationError) as err:
        validate_stars(*bad)
    msg = str(err.value)
    assert f"'{column}'" in msg and shows in msg, msg


def test_rejected_epochs_may_have_missing_mags(handmade):
    stars, labels, _ = handmade
    epochs = epochs_for(stars)
    epochs.loc[[0, 5], "mag"] = np.nan
    epochs.loc[[0, 5], "rejected"] = True
    assert validate_stars(stars, labels, epochs).counts["n_in"] == len(stars)


def test_suite_builders_state_the_cuts_from_their_knobs():
    suite = build_cuts_suite(max_feh_error=0.3, min_epochs=40, reject_unknown_feh_error=True,
                             reject_unknown_phi31_error=False)
    assert cut_keys(suite) == ["no_label", "type", "feh_error", "feh_error_unknown",
                               "amplitude_g", "amplitude_g_unknown", "n_epochs_g",
                               "phi31_g_error"]
    kwargs = {e.meta["rrlfeh"]["cut"]: e for e in suite.expectations}
    assert kwargs["feh_error"].max_value == 0.3 and kwargs["n_epochs_g"].min_value == 40
    assert kwargs["phi31_g_error"].row_condition is not None  # RRab only
    assert set(build_schema_suites()) == {"stars", "labels", "epochs"}
    with pytest.raises(ValueError, match="max_amplitude"):
        build_cuts_suite(max_amplitude=float("nan"))
    with pytest.raises(ValueError, match="RRd"):
        build_cuts_suite(types=("RRd",))


def test_data_docs_show_the_cuts_passing_on_the_kept_stars(handmade_result):
    """The cuts reject stars by design: the Data Docs show the suite on the kept stars, where
    it passes, not a 'Failed' page listing every rejected row."""
    pages = list(handmade_result.docs_index.parent.glob("validations/rrlfeh_cuts/**/*.html"))
    html = pages[0].read_text()
    assert "Succeeded" in html and "Failed" not in html.replace("Failed Only", "")  # a filter
    suites = handmade_result.counts["suites"]
    assert set(suites) == {"stars schema", "labels schema", "epochs schema",
                           "cuts on the kept stars"}
    assert all(s["success"] for s in suites.values())
    cut_rows = [e for e in suites["cuts on the kept stars"]["expectations"] if e["cut"]]
    assert {e["cut"] for e in cut_rows} >= {"feh_error", "amplitude_g", "n_epochs_g"}
    assert all(e["unexpected"] in (0, None) for e in cut_rows)


def test_validation_page_lists_the_cuts_by_reason_and_type(handmade_result):
    from rrlfeh.quality_page import validation_page

    page = validation_page(handmade_result.counts, "reports/gx/index.html")
    lines = page.splitlines()
    row = {ln.split("|")[1].strip(): [c.strip() for c in ln.split("|")[2:-1]]
           for ln in lines if ln.startswith("| ") and not ln.startswith("| cut |")}
    # the hand-made stars (tests/data/quality/stars.csv): 3 over the amplitude limit, 3 too few
    # epochs, 2 RRab with phi31 errors over the limit, none RRc; 7 kept of 18
    assert row["amplitude_g"][0] == "1.4" and row["amplitude_g"][-1] == "3"
    assert row["n_epochs_g"][-1] == "3"
    assert row["phi31_g_error"][-1] == "2" and row["phi31_g_error"][2] == "0"  # RRc column
    assert row["**kept**"][-1] == "7" and row["**in**"][-1] == "18"
    assert row["cuts on the kept stars"][0] == "passed"
    assert "Failed" not in page and "reports/gx/index.html" in page
