"""The run's headline figures, the one DVC metrics file (`reports/headline.json`): per type,
Table 1 of the served model (K-fold out of fold and test split, RMSE and R²), the line's test
RMSE on the same stars, the sparse curves at 20 and 25 epochs against the line, ±1σ coverage;
and the champion's version. Every other figure (the star counts too) stays in the stages' own
reports, so that `dvc metrics show` stays a line a run."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SPARSE_CUTS = ("20", "25")   # the epoch counts of the headline (issue: where the line fails)
DIGITS = 4
# a type's figures, in reading order (`rrlfeh compare` shows them so; the file is key-sorted)
FIELDS = ("oof_rmse", "oof_r2", "test_rmse", "test_r2", "line_test_rmse",
          *(f"n{c}_{m}" for c in SPARSE_CUTS for m in ("rmse", "line_rmse")), "test_1sigma")


def _r(v: Any) -> Any:
    return round(float(v), DIGITS) if isinstance(v, int | float) and v is not None else v


def headline(report: Mapping[str, Any], sparse: Mapping[str, Any] | None,
             register: Mapping[str, Any] | None) -> dict[str, Any]:
    """The headline of one run from the report's metrics, `reports/sparse.json` and
    `reports/register.json` (either may be None: a run without them)."""
    out: dict[str, Any] = {}
    if register:
        version = register.get("version") if register.get("promoted") else register.get(
            "champion_version", register.get("version"))
        out["model"] = f"{register.get('model_name')} v{version}"
    for kind, m in report.items():
        if not isinstance(m, Mapping) or ("served" not in m and "skipped" not in m):
            continue
        if "skipped" in m:
            out[kind] = {"skipped": str(m["skipped"])[:80]}
            continue
        s, rel = m["served"], m.get("relation", {})
        row = {"oof_rmse": _r(s.get("oof_rmse")), "oof_r2": _r(s.get("oof_r2")),
               "test_rmse": _r(s.get("test_rmse")), "test_r2": _r(s.get("test_r2")),
               "line_test_rmse": _r(rel.get("test_rmse")),
               "test_1sigma": _r(m.get("coverage_test", {}).get("within_1sigma"))}
        cuts = ((sparse or {}).get(kind) or {}).get("with_period") or {}
        for cut in SPARSE_CUTS:
            if cut in cuts:
                row[f"n{cut}_rmse"] = _r(cuts[cut]["champion"]["rmse"])
                row[f"n{cut}_line_rmse"] = _r(cuts[cut]["line"]["rmse"])
        out[kind] = row
    return out
