"""Rejection reasons counted by kind for the metrics."""

import numpy as np
import pandas as pd

from rrlfeh.reasons import reason_counts


def test_reasons_are_split_and_counted_by_kind():
    reasons = pd.Series([
        "no significant period in 0.2-1 d (best 0.96881 d, false-alarm probability 0.0056 > 0.001)",
        "no significant period in 0.2-1 d (best 0.21 d, false-alarm probability 1 > 0.001)",
        "too few points: 3 usable < 12; phase gap 0.31 > 0.25",
        "phase gap 0.5 > 0.25",
    ])
    assert reason_counts(reasons) == {
        "no significant period in #-# d": 2,
        "phase gap # > #": 2,
        "too few points: # usable < #": 1,
    }


def test_no_reasons_no_counts():
    assert reason_counts(pd.Series([], dtype="string")) == {}


def test_first_of_names_the_first_stars_then_how_many_more():
    from rrlfeh.reasons import first_of

    assert first_of([3, 1, 2]) == "[3, 1, 2]"
    assert first_of(np.arange(25, dtype=np.int64), 20) == f"{list(range(20))} and 5 more"
    assert first_of([]) == "[]"
