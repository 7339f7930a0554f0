"""Property-based tests (hypothesis) of `rrlfeh.preprocess` and of the registered pyfunc with
random bad stars beside good ones: NaN and infinite times and magnitudes, repeated or unsorted
times, one epoch, none usable, 100,000 epochs of one star, absurd magnitudes, text and integers
where numbers belong, duplicate rows.

The properties: no exception loses the other stars; every star comes back scored (finite) or
with a non-empty reason; the good stars' results equal those of the good stars processed alone
(an independent run), so a bad star can never change a good one's answer.
Bounded and deterministic (derandomize): a CI run sees the same examples every time.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rrlfeh import config
from rrlfeh.data.synthetic import generate
from rrlfeh.preprocess import preprocess_light_curves

from conftest import REPO, tracking

BOUNDED = settings(max_examples=30, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
KNOBS = dict(config.section(config.load_params(REPO / "params.yaml"), "preprocess")["curves"])
GOOD = generate(4, seed=11)  # real-format stars: clean epochs, period and epoch of maximum
GOOD_IDS = GOOD.stars["source_id"].to_numpy(np.int64)
GOOD_EPOCHS = GOOD.epochs.loc[~GOOD.epochs["rejected"]]
WILD = [np.nan, np.inf, -np.inf, 0.0, 1e30, -1e30, 1e300, -1e-300, 5e-324]


@dataclass(frozen=True)
class Star:
    """One star of a generated batch: its epochs, period and epoch of maximum as given (any
    dtype), and what it is (`kind`); `copy_of` names the good star it is a shuffled copy of."""

    source_id: int
    time: list
    mag: list
    period: object
    epoch_max: object
    kind: str
    in_star_table: bool = True
    copy_of: int | None = None


def good_star(i: int) -> Star:
    s = GOOD.stars.iloc[i]
    e = GOOD_EPOCHS[GOOD_EPOCHS["source_id"] == s["source_id"]]
    return Star(int(s["source_id"]), e["time"].tolist(), e["mag"].tolist(), float(s["period"]),
                float(s["epoch_max"]), "good")


def sine_star(sid: int, n: int, seed: int, period: float = 0.55) -> Star:
    """A clean RRab-like curve of n epochs over 1,000 d (for the 100,000-epoch case)."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.uniform(1700.0, 2700.0, n))
    ph = np.mod((t - 1700.0) / period, 1.0)
    m = 15.0 + 0.4 * np.cos(2 * np.pi * ph) + 0.1 * np.cos(4 * np.pi * ph + 0.5) \
        + rng.normal(0, 0.02, n)
    return Star(sid, t.tolist(), m.tolist(), period, 1700.0, "big")


floats_any = st.floats(allow_nan=True, allow_infinity=True, width=64)
wild = st.one_of(st.sampled_from(WILD), floats_any)


@st.composite
def bad_star(draw, sid: int) -> Star:
    """A star broken in one of the ways a user's file breaks (or entirely random)."""
    kind = draw(st.sampled_from([
        "random", "nan_mags", "inf_times", "repeated_times", "shuffled_copy", "one_epoch",
        "no_usable", "absurd_mags", "bad_period", "bad_epoch_max", "no_epochs", "not_in_table",
        "text_mags", "int_mags", "flat"]))
    base = good_star(draw(st.integers(0, len(GOOD_IDS) - 1)))
    t, m = list(base.time), list(base.mag)
    n = len(t)
    picks = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    period, epoch_max, in_table, copy_of = base.period, base.epoch_max, True, None
    if kind == "random":
        k = draw(st.integers(0, 60))
        t = draw(st.lists(wild, min_size=k, max_size=k))
        m = draw(st.lists(wild, min_size=k, max_size=k))
        period, epoch_max = draw(wild), draw(wild)
    elif kind == "nan_mags":
        for i in picks:
            m[i] = np.nan
    elif kind == "inf_times":
        for i in picks:
            t[i] = draw(st.sampled_from([np.inf, -np.inf, np.nan]))
    elif kind == "repeated_times":
        t, m = t + [t[i] for i in picks], m + [m[i] + 0.01 for i in picks]
    elif kind == "shuffled_copy":
        order = draw(st.permutations(range(n)))
        t, m, copy_of = [t[i] for i in order], [m[i] for i in order], base.source_id
    elif kind == "one_epoch":
        t, m = t[:1], m[:1]
    elif kind == "no_usable":
        m = [np.nan] * n
    elif kind == "absurd_mags":
        for i in picks:
            m[i] = draw(st.sampled_from([1e30, -1e30, 0.0, 1e300, -1e300]))
    elif kind == "bad_period":
        period = draw(st.sampled_from([0.0, -0.5, np.nan, np.inf, 1e-300, 1e30]))
    elif kind == "bad_epoch_max":
        epoch_max = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    elif kind == "no_epochs":
        t, m = [], []
    elif kind == "not_in_table":
        in_table = False
    elif kind == "text_mags":
        for i in picks:
            m[i] = draw(st.sampled_from(["bright", "", "15,2", "nan", None, "15.2"]))
    elif kind == "int_mags":
        m = [int(round(v)) for v in m]
    elif kind == "flat":
        m = [15.0] * n
    return Star(sid, t, m, period, epoch_max, kind, in_table, copy_of)


@st.composite
def batches(draw) -> list[Star]:
    """The good stars and 1-6 bad ones, in a random order."""
    n_bad = draw(st.integers(1, 6))
    bad = [draw(bad_star(900 + j)) for j in range(n_bad)]
    stars = [good_star(i) for i in range(len(GOOD_IDS))] + bad
    return draw(st.permutations(stars))


def arrays_of(stars: list[Star]):
    """The flat per-epoch arrays and per-star arrays of a batch, as a caller would pass them:
    float64 where every value is a number, object arrays as given otherwise."""
    def flat(values: list) -> np.ndarray:
        arr = np.array(values, dtype=object)
        try:
            return arr.astype(np.float64) if all(
                isinstance(v, (int, float)) and v is not None for v in values) else arr
        except (TypeError, ValueError):
            return arr

    sid = np.concatenate([np.full(len(s.time), s.source_id, np.int64) for s in stars]
                         or [np.array([], np.int64)])
    time = flat([v for s in stars for v in s.time])
    mag = flat([v for s in stars for v in s.mag])
    table = [s for s in stars if s.in_star_table]
    return (sid, time, mag, np.array([s.period for s in table], float),
            np.array([s.epoch_max for s in table], float),
            np.array([s.source_id for s in table], np.int64))


def run_preprocess(stars: list[Star]):
    sid, time, mag, period, epoch_max, star_id = arrays_of(stars)
    return preprocess_light_curves(sid, time, mag, period, epoch_max, star_id=star_id,
                                   n_points=264, **KNOBS)


PER_STAR = [f.name for f in fields(type(run_preprocess([good_star(0)])[0]))
            if f.name not in ("phase_grid",)]


def rows_of(pc) -> dict[int, int]:
    return {int(s): i for i, s in enumerate(pc.source_id)}


@pytest.fixture(scope="module")
def good_alone():
    """The good stars processed alone: the reference every batch is compared with."""
    pc, rej = run_preprocess([good_star(i) for i in range(len(GOOD_IDS))])
    assert len(rej) == 0 and sorted(pc.source_id) == sorted(GOOD_IDS)
    return pc


@BOUNDED
@given(stars=batches())
@example(stars=[good_star(i) for i in range(len(GOOD_IDS))] + [sine_star(999, 100_000, 1)])
def test_preprocess_keeps_every_star_and_the_good_ones_unchanged(good_alone, stars):
    pc, rej = run_preprocess(stars)  # never an exception: the batch is one call
    ids = {s.source_id for s in stars if s.in_star_table}
    done, rejected = set(pc.source_id.tolist()), set(rej["source_id"].tolist())
    outside = {s.source_id for s in stars if not s.in_star_table and s.time}
    assert done | rejected == ids | outside and not done & rejected
    assert rej["reason"].str.len().gt(0).all()
    for name in ("curves", "mean_mag", "std_mag", "amplitude", "edf", "resid_rms"):
        assert np.isfinite(getattr(pc, name)).all(), name
    assert set(GOOD_IDS) <= done
    here, ref = rows_of(pc), rows_of(good_alone)
    copies = {s.source_id: s.copy_of for s in stars if s.copy_of is not None}
    for sid, ref_id in [*((g, g) for g in GOOD_IDS.tolist()), *copies.items()]:
        for name in PER_STAR:
            if name == "source_id":
                continue
            np.testing.assert_allclose(getattr(pc, name)[here[sid]],
                                       getattr(good_alone, name)[ref[ref_id]],
                                       rtol=1e-6, atol=1e-6, err_msg=f"{name} of {sid}")
    big = [s for s in stars if s.kind == "big"]
    if big:  # the 100,000-epoch star is a clean curve: processed, every epoch used
        assert pc.n_epochs[here[big[0].source_id]] == 100_000


# ---- the registered pyfunc ------------------------------------------------------------------

REQUEST_SET = generate(6, seed=7)  # the stars of tests/data/requests: 5 RRab, 1 RRc
REQUEST_COLUMNS = ["source_id", "time", "mag", "flux", "flux_error", "rejected", "period",
                   "epoch_max", "type"]
LONG = REQUEST_SET.epochs.merge(REQUEST_SET.stars[["source_id", "period", "epoch_max", "type"]],
                                on="source_id")[REQUEST_COLUMNS]
GOOD_REQUEST_IDS = REQUEST_SET.stars["source_id"].tolist()[:4]


def rows_of_star(sid: int, new_id: int | None = None) -> pd.DataFrame:
    rows = LONG[LONG["source_id"] == sid].reset_index(drop=True)
    return rows if new_id is None else rows.assign(source_id=new_id)


@pytest.fixture(scope="module")
def champion(pipeline_project: Path):
    """models:/rrl-feh@champion of the tiny real repro, loaded in process as MLflow loads it."""
    import mlflow

    with tracking(f"sqlite:///{pipeline_project / 'mlflow.db'}"):
        return mlflow.pyfunc.load_model("models:/rrl-feh@champion")


@pytest.fixture(scope="module")
def good_feh(champion) -> pd.Series:
    """The good stars' [Fe/H], each predicted alone (the reference)."""
    feh = {}
    for sid in GOOD_REQUEST_IDS:
        out = champion.predict(rows_of_star(sid))
        assert out["status"].tolist() == ["ok"], out["status"].tolist()
        feh[sid] = float(out["feh"].iloc[0])
    return pd.Series(feh)


@st.composite
def bad_request_star(draw, sid: int) -> tuple[pd.DataFrame, str, int | None]:
    """(rows, kind, the good star it copies) of one broken star in the long form."""
    kind = draw(st.sampled_from([
        "random", "nan_mags", "inf_times", "duplicate_rows", "shuffled_copy", "one_epoch",
        "no_usable", "absurd_mags", "bad_period", "unknown_type", "conflicting_period",
        "all_rejected", "one_epoch_no_period", "int_mags", "text_mag"]))
    base = draw(st.sampled_from(GOOD_REQUEST_IDS))
    e = rows_of_star(base, sid)
    n = len(e)
    picks = draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
    copy_of = None
    if kind == "random":
        k = draw(st.integers(1, 40))
        e = pd.DataFrame({"source_id": sid, "time": draw(st.lists(wild, min_size=k, max_size=k)),
                          "mag": draw(st.lists(wild, min_size=k, max_size=k)),
                          "flux": np.nan, "flux_error": np.nan, "rejected": False,
                          "period": draw(wild), "epoch_max": draw(wild),
                          "type": draw(st.sampled_from(["RRab", "RRc", None, "rrc"]))})
    elif kind == "nan_mags":
        e.loc[picks, "mag"] = np.nan
    elif kind == "inf_times":
        e.loc[picks, "time"] = draw(st.sampled_from([np.inf, -np.inf, np.nan]))
    elif kind == "duplicate_rows":
        e = pd.concat([e, e.iloc[picks]], ignore_index=True)
    elif kind == "shuffled_copy":
        e, copy_of = e.sample(frac=1.0, random_state=draw(st.integers(0, 99))), base
    elif kind == "one_epoch":
        e = e.iloc[:1]
    elif kind == "no_usable":
        e["mag"] = np.nan
    elif kind == "absurd_mags":
        e.loc[picks, "mag"] = draw(st.sampled_from([1e30, -1e30, 0.0, 1e300]))
    elif kind == "bad_period":
        e["period"] = draw(st.sampled_from([0.0, -0.5, np.inf, 1e30, 1e-300]))
    elif kind == "unknown_type":
        e["type"] = draw(st.sampled_from(["RRd", "", "Cepheid", " "]))
    elif kind == "conflicting_period":
        e.loc[picks, "period"] = e["period"].iloc[0] * 1.5
    elif kind == "all_rejected":
        e["rejected"] = True
    elif kind == "one_epoch_no_period":
        e = e.iloc[:1].assign(period=np.nan, epoch_max=np.nan, type=None)
    elif kind == "int_mags":
        e["mag"] = e["mag"].round()
    elif kind == "text_mag":
        e = e.astype({"mag": object})
        e.loc[picks[0], "mag"] = draw(st.sampled_from(["bright", "15,2", "n/a"]))
    return e, kind, copy_of


def as_sent(frame: pd.DataFrame, how: str) -> pd.DataFrame:
    """The same values in other dtypes, as files and clients send them."""
    if how == "object_mag":
        return frame.astype({"mag": object})
    if how == "int_rejected":
        return frame.assign(rejected=frame["rejected"].astype(int))
    if how == "text_period":
        return frame.assign(period=[None if pd.isna(v) else repr(float(v))
                                    for v in frame["period"]])
    if how == "text_source_id":
        return frame.assign(source_id=frame["source_id"].astype(str))
    if how == "category_type":
        return frame.assign(type=frame["type"].astype("category"))
    return frame


@st.composite
def requests(draw):
    """The good stars' rows and 1-5 broken stars, rows in a random order, in one of the dtype
    forms; with the kinds of the broken stars and the copies of good ones."""
    bad = [draw(bad_request_star(900 + j)) for j in range(draw(st.integers(1, 5)))]
    frame = pd.concat([*(rows_of_star(s) for s in GOOD_REQUEST_IDS), *(b[0] for b in bad)],
                      ignore_index=True)
    frame = frame.sample(frac=1.0, random_state=draw(st.integers(0, 999))).reset_index(drop=True)
    how = draw(st.sampled_from(["as_is", "object_mag", "int_rejected", "text_period",
                                "text_source_id", "category_type"]))
    copies = {b[0]["source_id"].iloc[0]: b[2] for b in bad if b[2] is not None}
    return as_sent(frame, how), {b[1] for b in bad}, copies


@BOUNDED
@given(request=requests())
def test_pyfunc_answers_every_star_and_the_good_ones_unchanged(champion, good_feh, request):
    from rrlfeh.serving.inputs import signature_columns

    frame, kinds, copies = request
    out = champion.predict(signature_columns(frame))  # never an exception: every star answered
    asked = [int(s) for s in pd.unique(pd.to_numeric(frame["source_id"]))]
    assert out["source_id"].tolist() == asked  # one row a star, in first-appearance order
    ok = (out["status"] == "ok").to_numpy()
    assert np.isfinite(out.loc[ok, ["feh", "feh_std"]].to_numpy()).all()
    assert out.loc[~ok, "status"].str.strip().str.len().gt(0).all()
    by_id = out.set_index("source_id")
    # a star with text among its magnitudes is named as such, and only that star
    text = frame["mag"].map(lambda v: isinstance(v, str) and not _parses(v)).to_numpy(bool)
    with_text = set(pd.to_numeric(frame.loc[text, "source_id"]).astype(int))
    named = {s for s, status in by_id["status"].items() if "mag is not a number" in status}
    assert named == with_text, (named, with_text)
    for sid, ref in [*((s, s) for s in GOOD_REQUEST_IDS), *copies.items()]:
        assert by_id.loc[sid, "status"] == "ok", (sid, by_id.loc[sid, "status"])
        assert abs(by_id.loc[sid, "feh"] - good_feh[ref]) <= 1e-6, (sid, kinds)


def _parses(text: str) -> bool:
    """Whether a text is a number as Python reads one ('15.2', ' nan', '1e3'; not '15,2')."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_a_request_without_mag_is_one_line(champion):
    from rrlfeh.serving.pyfunc import RequestRejected

    with pytest.raises(RequestRejected) as info:
        champion.predict(rows_of_star(GOOD_REQUEST_IDS[0]).drop(columns="mag"))
    assert info.value.message.startswith("missing column(s) mag") and "\n" not in \
        info.value.message


def test_rrlfeh_predict_reads_integer_columns_and_names_text(pipeline_project, tmp_path):
    """A user's CSV with whole-number times (an int64 column, which MLflow's cast to double
    refused) is scored; one with text in a star's mag gives that star the reason and scores the
    other, where MLflow's check stopped the whole file with the frame in its message."""
    from rrlfeh.serving import predict

    frame = pd.concat([rows_of_star(s) for s in GOOD_REQUEST_IDS[:2]], ignore_index=True)
    frame.assign(time=frame["time"].round().astype(int)).to_csv(tmp_path / "int.csv",
                                                                index=False)
    text = frame.astype({"mag": object})
    text.loc[3, "mag"] = "bright"
    text.to_csv(tmp_path / "text.csv", index=False)
    kw = dict(model_uri="models:/rrl-feh@champion", tracking={"uri": "sqlite:///mlflow.db"},
              root=pipeline_project)
    with tracking(f"sqlite:///{pipeline_project / 'mlflow.db'}"):
        out = predict.run(tmp_path / "int.csv", tmp_path / "int_out.csv", **kw)
        assert out["source_id"].tolist() == GOOD_REQUEST_IDS[:2]
        assert out["status"].str.len().gt(0).all()
        text_out = predict.run(tmp_path / "text.csv", tmp_path / "text_out.csv", **kw)
    assert text_out["source_id"].tolist() == GOOD_REQUEST_IDS[:2]
    first, second = text_out["status"].tolist()
    assert first == "mag is not a number in 1 row(s) (e.g. 'bright')"
    assert second == "ok" and np.isfinite(text_out["feh"].iloc[1])
