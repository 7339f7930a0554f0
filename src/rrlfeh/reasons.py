"""Rejection reasons: one row a star, and counts for metrics (one key per kind of reason)."""

from __future__ import annotations

import pandas as pd

_DETAILS = r"\s*\([^)]*\)"          # '(best 0.21 d, false-alarm probability 0.79 > 0.001)'
_NUMBERS = r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?"


def reason_counts(reasons: pd.Series) -> dict[str, int]:
    """Stars per kind of reason: '; '-joined reasons split, details and numbers masked by '#'."""
    kinds = (reasons.astype("string").str.split("; ").explode().dropna()
             .str.replace(_DETAILS, "", regex=True)
             .str.replace(_NUMBERS, "#", regex=True).str.strip())
    return {str(k): int(v) for k, v in kinds.value_counts().items()}


def one_row_a_star(rejected: pd.DataFrame) -> pd.DataFrame:
    """Rejections merged per star (a star set aside and with an unreadable label is one row,
    its reasons '; '-joined), in first-seen order."""
    if not rejected["source_id"].duplicated().any():
        return rejected
    return (rejected.groupby("source_id", sort=False)
            .agg(stage=("stage", "first"), reason=("reason", "; ".join)).reset_index())


def first_of(values, limit: int = 10) -> str:
    """The first `limit` of `values` as a list, then how many more: the one way a message names
    many stars ('[1, 2, 3] and 41 more')."""
    items = list(values.tolist() if hasattr(values, "tolist") else values)
    more = len(items) - limit
    return f"{items[:limit]}" + (f" and {more} more" if more > 0 else "")
