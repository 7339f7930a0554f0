"""Validate the raw tables and apply the sample cuts with Great Expectations: kept + rejected.

A broken schema stops the run (`SchemaValidationError`); a star failing a cut is rejected with every
reason it fails, taken from the suite's own per-row results (the suite is the single source of
truth). Data Docs HTML can be written for a human to browse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from rrlfeh.data import schema
from rrlfeh.quality_suite import (
    INDEX_COLUMNS,
    META_KEY,
    build_cuts_suite,
    build_schema_suites,
    cut_keys,
)

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite

DOCS_SITE = "rrlfeh"
MERGED_COLUMNS: tuple[str, ...] = (*schema.STARS, "feh", "feh_error")


class SchemaValidationError(schema.SchemaError):
    """A raw table breaks its schema suite: the run must stop (message names column and rows)."""


@dataclass(frozen=True)
class QualityResult:
    """Outcome of `validate_stars`.

    kept: stars merged with labels that pass every cut (columns MERGED_COLUMNS).
    rejected: one row per rejected star: source_id, type, reasons ('; '-joined, suite order).
    counts: n_in, n_kept, n_rejected, rejected_by_reason, by_type, n_labels_without_star (a star
        with several reasons counts once under each, so the reasons may sum above n_rejected).
    docs_index: the Data Docs index.html, when docs were asked for.
    """

    kept: pd.DataFrame
    rejected: pd.DataFrame
    counts: dict[str, Any]
    docs_index: Path | None = None
    cuts: list[str] = field(default_factory=list)


class _Runner:
    """An in-memory GX context that validates dataframes and, optionally, writes Data Docs."""

    def __init__(self, docs_dir: Path | None) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self._gx = gx
        self.ctx = gx.get_context(mode="ephemeral")
        self.ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
        # the ephemeral context's default site writes into a fresh temp dir: drop it
        for site in list(self.ctx.get_config().data_docs_sites or {}):
            self.ctx.delete_data_docs_site(site)
        self.docs_dir = None if docs_dir is None else Path(docs_dir).resolve()
        if self.docs_dir is not None:
            self.docs_dir.mkdir(parents=True, exist_ok=True)
            self.ctx.add_data_docs_site(site_name=DOCS_SITE, site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                  "base_directory": str(self.docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            })
        self.source = self.ctx.data_sources.add_pandas("rrlfeh")

    def run(self, name: str, suite: ExpectationSuite, df: pd.DataFrame) -> Any:
        """Validate `df` against `suite`; COMPLETE results indexed by the table's id columns."""
        gx = self._gx
        suite = self.ctx.suites.add(suite)
        batch = self.source.add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
        vd = self.ctx.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batch, suite=suite))
        index = [c for c in INDEX_COLUMNS[name] if c in df.columns]
        checkpoint = self.ctx.checkpoints.add(gx.Checkpoint(
            name=f"{name}_checkpoint", validation_definitions=[vd], actions=[],
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": index}))
        # a unique index: GX looks failing rows up by index label
        out = checkpoint.run(batch_parameters={"dataframe": df.reset_index(drop=True)})
        return next(iter(out.run_results.values()))

    def build_docs(self) -> Path | None:
        """Write the Data Docs site (index.html) under docs_dir; None when none were asked for."""
        if self.docs_dir is None:
            return None
        self.ctx.build_data_docs(site_names=[DOCS_SITE])
        return self.docs_dir / "index.html"


def _examples(result: dict[str, Any], column: str | None, max_examples: int) -> str:
    """'source_id=12 period=-0.5; ...' from a COMPLETE result's unexpected_index_list."""
    rows = result.get("unexpected_index_list") or []
    ids = result.get("unexpected_index_column_names") or []
    parts = [" ".join(f"{k}={_plain(row[k])}" for k in [*ids, *(k for k in row if k not in ids)]
                      if k in row) for row in rows[:max_examples]]
    if not parts and result.get("partial_unexpected_list"):
        parts = [f"{column}={_plain(v)}" for v in result["partial_unexpected_list"][:max_examples]]
    more = len(rows) - max_examples
    return "; ".join(parts) + (f"; ... ({more} more)" if more > 0 else "")


def _id_examples(ids: pd.Series, check: str, max_examples: int) -> str:
    """Row numbers of null ids, or the duplicated ids with their row numbers."""
    ids = ids.reset_index(drop=True)
    if check == "expect_column_values_to_be_unique":
        dup = ids[ids.duplicated(keep=False) & ids.notna()]
        groups = dup.groupby(dup, sort=False).groups
        parts = [f"{ids.name}={_plain(k)} in rows {list(v)}" for k, v in groups.items()]
    else:
        parts = [f"row {i}" for i in np.flatnonzero(ids.isna().to_numpy())]
    more = len(parts) - max_examples
    return "; ".join(parts[:max_examples]) + (f"; ... ({more} more)" if more > 0 else "")


def _plain(value: Any) -> Any:
    """numpy scalars as plain Python values, for readable messages."""
    return value.item() if isinstance(value, np.generic) else value


def _schema_problems(table: str, df: pd.DataFrame, vr: Any, max_examples: int) -> list[str]:
    """Readable lines for each failed expectation of a schema suite (empty when it passed)."""
    missing = [c for c in getattr(schema, table.upper()) if c not in df.columns]
    lines = [f"{table}: required column {c!r} is missing (have {sorted(map(str, df.columns))})"
             for c in missing]
    for r in vr.results:
        if r.success:
            continue
        cfg = r.expectation_config
        col = cfg.kwargs.get("column")
        if cfg.type == "expect_column_to_exist":
            continue  # reported above, with the columns present
        raised = bool((r.exception_info or {}).get("raised_exception"))
        if missing and (raised or col in missing or r.result.get("unexpected_count") is None):
            continue  # a consequence of the missing column
        if raised:
            msg = (r.exception_info or {}).get("exception_message")
            lines.append(f"{table}: column {col!r}: {cfg.type} could not run: {msg}")
        elif cfg.type == "expect_column_values_to_be_of_type":
            observed = r.result.get("observed_value")
            lines.append(f"{table}: column {col!r} has dtype {observed}, expected "
                         f"{cfg.kwargs.get('type_')}")
        else:
            res = r.result
            where = " (rows not rejected)" if cfg.kwargs.get("row_condition") else ""
            shown = ("value_set", "min_value", "max_value", "strict_min")
            detail = {k: _plain(v) for k, v in cfg.kwargs.items() if k in shown and v is not None}
            if col in INDEX_COLUMNS[table]:  # quoting the broken id itself says little
                examples = _id_examples(df[col], cfg.type, max_examples)
            else:
                examples = _examples(res, col, max_examples)
            lines.append(f"{table}: column {col!r} fails {cfg.type}{where} {detail}: "
                         f"{res.get('unexpected_count')} of {res.get('element_count')} rows, "
                         f"e.g. {examples}")
    return lines


def suite_summary(vr: Any) -> dict[str, Any]:
    """A suite's result as plain data: passed or not, and per expectation its type, column,
    outcome and failing rows (what the project's own validation page shows, offline)."""
    rows = []
    for r in vr.results:
        cfg = r.expectation_config
        meta = (cfg.meta or {}).get(META_KEY) or {}
        rows.append({"expectation": cfg.type, "column": cfg.kwargs.get("column"),
                     "cut": meta.get("cut"), "limit": meta.get("limit"),
                     "success": bool(r.success),
                     "unexpected": _plain((r.result or {}).get("unexpected_count")),
                     "rows": _plain((r.result or {}).get("element_count"))})
    return {"success": bool(vr.success), "expectations": rows}


def _format_value(value: Any, limit: str | None) -> str:
    """A star's value for a reason: short, but never printed equal to the limit it fails."""
    value = _plain(value)
    if isinstance(value, bool | str) or value is None:
        return str(value)
    if isinstance(value, int | np.integer) or (isinstance(value, float) and value.is_integer()
                                               and abs(value) < 1e15):
        return str(int(value))
    for digits in (3, 6, 17):
        text = f"{value:.{digits}g}"
        if text != limit:
            return text
    return repr(value)


def _reasons_by_star(suite: ExpectationSuite, vr: Any) -> dict[int, list[tuple[str, str]]]:
    """source_id -> [(cut, reason)], in suite order, read from the cuts suite's per-row results."""
    by_cut = {}
    for r in vr.results:
        meta = (r.expectation_config.meta or {}).get(META_KEY)
        if meta is None:
            continue
        if (r.exception_info or {}).get("raised_exception"):
            raise RuntimeError(f"cut {meta['cut']!r} could not be evaluated: "
                               f"{r.exception_info.get('exception_message')}")
        by_cut[meta["cut"]] = (meta, r)
    reasons: dict[int, list[tuple[str, str]]] = {}
    for cut in cut_keys(suite):
        meta, r = by_cut[cut]
        rows = r.result.get("unexpected_index_list") or []
        if len(rows) != (r.result.get("unexpected_count") or 0):
            raise RuntimeError(f"cut {cut!r}: GX listed {len(rows)} of "
                               f"{r.result.get('unexpected_count')} failing rows")
        column = r.expectation_config.kwargs["column"]
        template: str = meta["reason"]
        limit = meta.get("limit")
        for row in rows:
            text = template.format(value=_format_value(row.get(column), limit))
            reasons.setdefault(int(row["source_id"]), []).append((cut, text))
    return reasons


def validate_stars(stars: pd.DataFrame, labels: pd.DataFrame, epochs: pd.DataFrame, *,
                   max_feh_error: float = 0.4, max_amplitude: float = 1.4, min_epochs: int = 50,
                   max_phi31_error: float = 0.10, types: tuple[str, ...] = ("RRab", "RRc"),
                   reject_unknown_feh_error: bool = False,
                   reject_unknown_phi31_error: bool = True,
                   reject_unknown_amplitude: bool = True,
                   docs_dir: Path | None = None, max_examples: int = 5) -> QualityResult:
    """Check the three raw tables' schema, then apply the cuts to stars merged with labels.

    Raises SchemaValidationError (naming table, column and example ids) when a schema suite fails;
    Data Docs, if asked for, are written first so the failure can be browsed.
    """
    runner = _Runner(docs_dir)
    problems, suite_results = [], {}
    for table, suite in build_schema_suites().items():
        df = {"stars": stars, "labels": labels, "epochs": epochs}[table]
        vr = runner.run(table, suite, df)
        suite_results[f"{table} schema"] = suite_summary(vr)
        problems += _schema_problems(table, df, vr, max_examples)
    if problems:
        docs = runner.build_docs()
        where = f"\n(Data Docs: {docs})" if docs else ""
        raise SchemaValidationError("schema validation failed:\n  " + "\n  ".join(problems)
                                    + where)

    merged = stars.merge(labels, on="source_id", how="left", validate="one_to_one")
    merged = merged.loc[:, list(MERGED_COLUMNS)].reset_index(drop=True)
    suite = build_cuts_suite(
        max_feh_error=max_feh_error, max_amplitude=max_amplitude, min_epochs=min_epochs,
        max_phi31_error=max_phi31_error, types=types,
        reject_unknown_feh_error=reject_unknown_feh_error,
        reject_unknown_phi31_error=reject_unknown_phi31_error,
        reject_unknown_amplitude=reject_unknown_amplitude)
    # the cuts reject stars by design: they run on every star outside the Data Docs, and the
    # docs show the suite on the kept stars, where it must pass
    reasons = _reasons_by_star(suite, _Runner(None).run("cuts", suite, merged))
    ids = merged["source_id"].to_numpy()
    is_rejected = np.fromiter((int(i) in reasons for i in ids), bool, count=len(ids))
    kept = merged.loc[~is_rejected].reset_index(drop=True)
    kept_check = runner.run("cuts_kept", suite, kept)
    if not kept_check.success:
        failed = [r.expectation_config.type for r in kept_check.results if not r.success]
        raise RuntimeError(f"kept stars fail the cuts suite ({failed}): a cut not turned into "
                           "a rejection reason")
    docs = runner.build_docs()

    rejected = pd.DataFrame({
        "source_id": merged.loc[is_rejected, "source_id"].to_numpy(dtype="int64"),
        "type": merged.loc[is_rejected, "type"].astype("string").to_numpy(),
        "reasons": ["; ".join(text for _, text in reasons[int(i)]) for i in ids[is_rejected]],
    }).astype({"type": "string", "reasons": "string"})
    counts = _counts(merged, kept, rejected, cut_keys(suite), reasons, labels)
    counts["suites"] = {**suite_results, "cuts on the kept stars": suite_summary(kept_check)}
    return QualityResult(kept=kept, rejected=rejected, counts=counts, docs_index=docs,
                         cuts=cut_keys(suite))


def _counts(merged: pd.DataFrame, kept: pd.DataFrame, rejected: pd.DataFrame, cuts: list[str],
            reasons: dict[int, list[tuple[str, str]]], labels: pd.DataFrame) -> dict[str, Any]:
    """The DVC metrics: totals, rejections per cut, and the same per type."""

    def per_reason(ids: pd.Series) -> dict[str, int]:
        out = dict.fromkeys(cuts, 0)
        for i in ids:
            for cut, _ in reasons[int(i)]:
                out[cut] += 1
        return out

    by_type = {}
    for t in schema.TYPES:
        n_in = int((merged["type"] == t).sum())
        rej = rejected.loc[rejected["type"] == t, "source_id"]
        by_type[t] = {"n_in": n_in, "n_kept": int((kept["type"] == t).sum()),
                      "n_rejected": len(rej), "rejected_by_reason": per_reason(rej)}
    return {
        "n_in": len(merged), "n_kept": len(kept), "n_rejected": len(rejected),
        "rejected_by_reason": per_reason(rejected["source_id"]),
        "by_type": by_type,
        "n_labels_without_star": int((~labels["source_id"].isin(merged["source_id"])).sum()),
    }
