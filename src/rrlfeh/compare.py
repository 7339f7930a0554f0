"""`rrlfeh compare` (`make compare`): the headline of every run DVC knows (the workspace, the
commit and its named experiments: default, gaia-dr3, dg22), side by side, one column a run and
one row a figure, so that it fits a screen whatever the number of figures."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rrlfeh.headline import FIELDS

HEADLINE = "reports/headline.json"


def _headline(entry: Mapping[str, Any]) -> dict[str, Any] | None:
    data = (entry.get("data") or {}).get("metrics", {}).get(HEADLINE, {})
    return data.get("data") if isinstance(data, Mapping) else None


def runs(exp_show: list[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """{run name: its headline} from `dvc exp show --json`: the workspace (when it differs from
    its commit), each commit by branch name (or short hash), each experiment by its name."""
    out: dict[str, dict[str, Any]] = {}
    for entry in exp_show:
        name = "workspace" if entry.get("rev") == "workspace" else (
            entry.get("name") or str(entry.get("rev", "?"))[:7])
        head = _headline(entry)
        if head is not None:
            out[name] = head
        for exp in entry.get("experiments") or []:
            rev = (exp.get("revs") or [{}])[0]
            head = _headline(rev)
            if head is not None:
                out[rev.get("name") or str(rev.get("rev", "?"))[:7]] = head
    if "workspace" in out and any(v == out["workspace"] for k, v in out.items()
                                  if k != "workspace"):
        del out["workspace"]  # the same as a commit or an experiment shown beside it
    return out


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'RRab test_rmse': 0.05, ...}: nested keys joined by a space."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{key} "))
        else:
            out[key] = v
    return out


def _reading_order(row: str) -> tuple[int, str, int]:
    """The model first, then type by type the headline's FIELDS in order, anything else last."""
    if " " not in row:
        return (0, row, 0)
    kind, field = row.split(" ", 1)
    return (1, kind, FIELDS.index(field) if field in FIELDS else len(FIELDS))


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def table(columns: Mapping[str, Mapping[str, Any]], width: int = 14) -> str:
    """One column a run, one row a figure (in the order first met), cells cut to `width`."""
    flat = {name: flatten(h) for name, h in columns.items()}
    rows = sorted(dict.fromkeys(k for f in flat.values() for k in f), key=_reading_order)
    label = max([len("figure"), *map(len, rows)])
    names = [n[:width] for n in flat]
    lines = ["figure".ljust(label) + "".join(f"  {n:>{width}}" for n in names),
             "-" * (label + (width + 2) * len(names))]
    for r in rows:
        lines.append(r.ljust(label) + "".join(
            f"  {_cell(f.get(r))[:width]:>{width}}" for f in flat.values()))
    return "\n".join(lines)


def show(root: Path, dvc: str = "dvc") -> str:
    """The comparison of the runs of the DVC project at `root`."""
    res = subprocess.run([dvc, "exp", "show", "--json", "--no-pager"], cwd=root,
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"dvc exp show failed: {res.stderr.strip().splitlines()[-1:]}")
    found = runs(json.loads(res.stdout))
    if not found:
        return f"no run with {HEADLINE} yet: run `make repro` (and `make realdata`, `make dg22`)"
    return table(found)
