"""`rrlfeh summary`: what `make repro` ends with, in one screen: Table 1 per type (K-fold
validation, mean +- std over folds) with the classical relation on the same folds, what the gate
serves (network, relation or their stack), the paper's GRU retrained here, the registered
version and the champion, and the scored catalogue's counts."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

TABLE1 = ("r2", "wrmse", "wmae", "rmse", "mae")


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def render(root: Path, params: Mapping[str, Any]) -> str:
    """The summary as text (missing reports are said, not an error)."""
    lines: list[str] = []
    cv = _read(root / "reports/crossval.json")
    if cv is None:
        lines.append("no reports/crossval.json yet: run `dvc repro`")
    else:
        lines.append("Table 1: K-fold validation, mean +- std over folds "
                     "(network; the classical relation on the same folds)")
        head = f"{'type':5} {'stars':>5}  " + "  ".join(f"{m:>15}" for m in TABLE1)
        lines += [head, "-" * len(head)]
        for kind, m in cv.items():
            if "val" not in m:
                lines.append(f"{kind:5} skipped: {m.get('skipped', '?')}")
                continue
            cells = [f"{m['val'][k]['mean']:7.3f} +- {m['val'][k]['std']:5.3f}" for k in TABLE1]
            base = [f"{m['baseline_val'][k]['mean']:7.3f} +- {m['baseline_val'][k]['std']:5.3f}"
                    for k in TABLE1]
            lines.append(f"{kind:5} {m['n_stars']:5d}  " + "  ".join(cells))
            lines.append(f"{'line':5} {'':5}  " + "  ".join(base))
            st = m.get("stack", {})
            lines.append(f"{'':11} out of fold: network R2 {m['oof']['r2']:.3f} RMSE "
                         f"{m['oof']['rmse']:.3f}; relation R2 {m['baseline_oof']['r2']:.3f} "
                         f"RMSE {m['baseline_oof']['rmse']:.3f} dex")
            if st:
                lines.append(f"{'':11} served: {st['served']} ({st['reason']})")
    ref = _read(root / "reports/reference.json")
    for kind, m in (ref or {}).items():
        if "oof" in m:
            lines.append(f"{kind:5} the paper's GRU retrained here ({m['n_folds']} folds): out "
                         f"of fold R2 {m['oof']['r2']:.3f} RMSE {m['oof']['rmse']:.3f}")
    tr = _read(root / "reports/train.json")
    for kind, m in (tr or {}).items():
        if "test" in m:
            c = m["coverage_test"]
            lines.append(f"{kind:5} test split ({m['n_stars_test']} stars, used once): served "
                         f"R2 {m['test']['r2']:.3f} RMSE {m['test']['rmse']:.3f}; relation R2 "
                         f"{m['baseline_test']['r2']:.3f} RMSE {m['baseline_test']['rmse']:.3f}"
                         f"; within 1/2 feh_std {100 * c['within_1sigma']:.0f} % / "
                         f"{100 * c['within_2sigma']:.0f} %")
    rep = _read(root / "reports/report.json")
    if rep is not None:
        name = params.get("report", {}).get("name", "report")
        lines.append(f"report: reports/{name}.md, every star in "
                     f"{params.get('report', {}).get('scored_csv', '?')}")
    reg = _read(root / "reports/register.json")
    if reg is not None:
        champ = reg.get("champion_version")
        lines.append("")
        lines.append(f"registry: {reg['model_name']} v{reg['version']} "
                     f"({'registered now' if reg['registered'] else 'already registered'}); "
                     f"@{reg['alias']} -> " + (f"v{champ}" if champ else "none"))
        lines.append(f"  {reg['decision']}")
    sc = _read(root / "reports/score.json")
    if sc is not None:
        lines.append(f"catalogue: {sc['n_stars']} stars, {sc['n_ok']} scored "
                     f"({sc['n_in_domain']} in the training domain) by {sc['model_uri']} "
                     f"(v{sc['model_version']}) -> data/scored/catalogue.parquet")
    return "\n".join(lines)
