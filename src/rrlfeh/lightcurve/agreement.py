"""Do two periods of one star agree, and if not, how are they related?

A period found in G is checked against one found independently in BP or RP: equal to a
relative `tolerance` (0.1 % by default), or related as a harmonic (P/2, 2P, 2P/3, 3P/2) or as
an alias of Gaia's scanning law, whose spin (6 h, 4 cycles/d) and precession (62.97 d) put
side peaks at f +- 4 k c/d and f +- 1/62.97 d (Eyer et al. 2017), or unrelated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SPIN_FREQUENCY = 4.0                  # c/d: Gaia's 6-h spin
PRECESSION_FREQUENCY = 1.0 / 62.97    # c/d: Gaia's precession
HARMONICS = {"half": 0.5, "double": 2.0, "two thirds": 2.0 / 3.0, "three halves": 1.5}


def relation(p_ref: float, p_other: float, tolerance: float = 1e-3) -> str:
    """'agree', 'no period', a harmonic name ('half': p_other = p_ref / 2, ...), 'alias spin'
    / 'alias precession' (frequencies differ by the scanning law's), or 'unrelated'."""
    if not (np.isfinite(p_ref) and np.isfinite(p_other) and p_ref > 0 and p_other > 0):
        return "no period"
    if abs(p_other / p_ref - 1.0) <= tolerance:
        return "agree"
    for name, ratio in HARMONICS.items():
        if abs(p_other / (p_ref * ratio) - 1.0) <= tolerance:
            return name
    df = abs(1.0 / p_other - 1.0 / p_ref)
    f_tol = tolerance / p_ref
    for name, step, k_max in (("alias spin", SPIN_FREQUENCY, 2),
                              ("alias precession", PRECESSION_FREQUENCY, 2)):
        if any(abs(df - k * step) <= f_tol for k in range(1, k_max + 1)):
            return name
    return "unrelated"


def compare_periods(periods: pd.DataFrame, ref: str, others: tuple[str, ...],
                    tolerance: float = 1e-3) -> pd.DataFrame:
    """Per star, how the `others` period columns relate to the `ref` column (a column a pair)."""
    out = periods[["source_id"]].copy()
    for col in others:
        out[f"{col}_vs_{ref}"] = [relation(a, b, tolerance) for a, b in
                                  zip(periods[ref], periods[col], strict=True)]
    return out


def summary(rel: pd.Series) -> dict[str, float | int]:
    """Counts and shares of each relation among stars that have both periods."""
    both = rel[rel != "no period"]
    counts = both.value_counts()
    return {"n_both": int(len(both)), "n_no_period": int((rel == "no period").sum()),
            **{f"n_{k.replace(' ', '_')}": int(v) for k, v in counts.items()},
            "share_agree": float((both == "agree").mean()) if len(both) else float("nan")}
