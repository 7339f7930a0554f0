"""The validation page (reports/validation.md): the Great Expectations suites' results rendered
as the project's own Markdown, readable offline (GX's Data Docs load their styles from CDNs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rrlfeh.data import schema


def _suite_line(name: str, summary: Mapping[str, Any]) -> str:
    exp = summary["expectations"]
    passed = sum(e["success"] for e in exp)
    result = "passed" if summary["success"] else "**failed**"
    return f"| {name} | {result} | {passed} of {len(exp)} |"


def validation_page(counts: Mapping[str, Any], docs_index: str | None) -> str:
    """Markdown of validate's counts (`quality._counts` with `suites`): the schema suites, which
    must pass, and the paper's cuts as stars kept and rejected by reason, per type."""
    suites = counts.get("suites", {})
    md = ["# Data validation (Great Expectations)", "",
          f"{counts['n_in']} stars in, {counts['n_kept']} kept, {counts['n_rejected']} "
          "rejected by the paper's cuts (each rejected star with its reasons: "
          "`data/validated/rejected.parquet`).", "",
          "## Suites", "",
          "The schema suites check the raw tables and must pass (`validate` stops otherwise, "
          "naming table, column and stars). The cuts reject stars by design: the suite is run "
          "on every star to find the reasons, and again on the kept stars, where it must pass.",
          "", "| suite | result | expectations passed |", "|---|---|---|"]
    md += [_suite_line(name, s) for name, s in suites.items()]
    cuts = [e for s in suites.values() for e in s["expectations"] if e.get("cut")]
    limits = {e["cut"]: e.get("limit") for e in cuts}
    md += ["", "## The paper's cuts: stars rejected by reason", "",
           "A star can fail several cuts, so the rows can add up to more than the rejected "
           "stars.", "",
           "| cut | limit | " + " | ".join(schema.TYPES) + " | all |",
           "|---|---|" + "---|" * (len(schema.TYPES) + 1)]
    by_type = counts["by_type"]
    for cut, n in counts["rejected_by_reason"].items():
        per_type = " | ".join(str(by_type[t]["rejected_by_reason"].get(cut, 0))
                              for t in schema.TYPES)
        md.append(f"| {cut} | {limits.get(cut) or ''} | {per_type} | {n} |")
    md += ["| **kept** |  | " + " | ".join(str(by_type[t]["n_kept"]) for t in schema.TYPES)
           + f" | {counts['n_kept']} |",
           "| **in** |  | " + " | ".join(str(by_type[t]["n_in"]) for t in schema.TYPES)
           + f" | {counts['n_in']} |", ""]
    if counts.get("n_labels_without_star"):
        md += [f"{counts['n_labels_without_star']} labels name no star of the extract.", ""]
    if docs_index:
        md += [f"Great Expectations' own Data Docs: `{docs_index}` (its styles load from the "
               "internet).", ""]
    return "\n".join(md)
