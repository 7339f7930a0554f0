"""Write the static request bodies of tests/serving (run from the repository root:
`.venv/bin/python tests/data/requests/make_requests.py`).

The epochs are two stars of `rrlfeh.data.synthetic.generate(6, seed=7)`, in data/raw's own
format (source_id, time, mag, flux, flux_error, rejected; period, epoch_max, type from its
stars table), so the bodies are what a client sends for a real-format star.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from rrlfeh.data import synthetic

HERE = Path(__file__).resolve().parent
RRAB, RRC = 3850942787981824176, 644596422725171114


def long_form(s: synthetic.SyntheticSet, sid: int, star_values: bool = True) -> pd.DataFrame:
    e = s.epochs[s.epochs["source_id"] == sid].reset_index(drop=True)
    e = e[["source_id", "time", "mag", "flux", "flux_error", "rejected"]].copy()
    if star_values:
        star = s.stars.set_index("source_id").loc[sid]
        e["period"], e["epoch_max"], e["type"] = star["period"], star["epoch_max"], star["type"]
    return e


def cell(v):
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and math.isnan(v) else v


def write_split(frame: pd.DataFrame, name: str) -> None:
    body = {"dataframe_split": {"columns": list(frame.columns),
                                "data": [[cell(v) for v in row]
                                         for row in frame.itertuples(index=False)]}}
    (HERE / name).write_text(json.dumps(body, allow_nan=False) + "\n")


def main() -> None:
    s = synthetic.generate(6, seed=7)
    a, c = long_form(s, RRAB), long_form(s, RRC)
    write_split(a.drop(columns=["mag"]), "missing_mag.json")
    write_split(a.drop(columns=["source_id"]), "missing_source_id.json")
    (HERE / "not_json.txt").write_text(a.to_csv(index=False))
    (HERE / "empty.txt").write_text("")
    nulls = a.copy()
    nulls.loc[::7, "time"] = float("nan")  # a few epochs without a time: left out, star scored
    all_null = c.copy()
    all_null["time"] = float("nan")  # no epoch has a time: the star gets a status
    write_split(pd.concat([nulls, all_null], ignore_index=True), "null_times.json")
    c_bare = long_form(s, RRC, star_values=False)
    three = pd.concat([a[~a["rejected"]].head(3), c_bare[~c_bare["rejected"]].head(3)],
                      ignore_index=True)
    write_split(three, "three_epochs.json")
    rrd = a.copy()
    rrd["type"] = "RRd"
    write_split(rrd, "unknown_type.json")
    text = a.astype({"mag": object})
    text.loc[2, "mag"] = "bright"
    write_split(text, "text_mag.json")
    (HERE / "no_dataframe_key.json").write_text(json.dumps(
        {"columns": ["source_id", "time", "mag"],
         "data": [[cell(v) for v in r] for r in a[["source_id", "time", "mag"]].head(5)
                  .itertuples(index=False)]}) + "\n")


if __name__ == "__main__":
    main()
