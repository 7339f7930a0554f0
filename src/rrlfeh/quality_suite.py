"""Great Expectations suites, built from knobs: the paper's quality cuts and the raw tables' schema.

The suites are the single source of truth for what is checked: `quality.py` runs them and turns
their per-row results into kept / rejected tables. Each cut expectation carries, in its `meta`, the
key of the cut and the template of the rejection reason, so no rule is written twice.
Great Expectations takes ~3-6 s to import, so it is imported inside the functions.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from rrlfeh.data import schema

if TYPE_CHECKING:
    from great_expectations import ExpectationSuite

META_KEY = "rrlfeh"  # key in an expectation's meta: {"cut": ..., "reason": ...}
CUTS_SUITE = "rrlfeh_cuts"
SCHEMA_SUITES = {"stars": "rrlfeh_stars_schema", "labels": "rrlfeh_labels_schema",
                 "epochs": "rrlfeh_epochs_schema"}
INDEX_COLUMNS = {"stars": ["source_id"], "labels": ["source_id"],
                 "epochs": ["source_id", "transit_id"], "cuts": ["source_id"],
                 "cuts_kept": ["source_id"]}
# Great Expectations reports both pandas string dtypes ('string' and the pandas-3 default 'str')
# as 'str'; every other schema dtype is reported under its numpy name.
_GX_DTYPE = {"string": "str"}


def _tag(cut: str, reason: str, limit: float | None = None) -> dict[str, Any]:
    """The meta naming a cut, its reason template (`{value}`: the star's value) and its limit."""
    tag: dict[str, Any] = {"cut": cut, "reason": reason}
    if limit is not None:
        tag["limit"] = f"{limit:g}"
    return {META_KEY: tag}


def build_cuts_suite(*, max_feh_error: float = 0.4, max_amplitude: float = 1.4,
                     min_epochs: int = 50, max_phi31_error: float = 0.10,
                     types: tuple[str, ...] = ("RRab", "RRc"),
                     reject_unknown_feh_error: bool = False,
                     reject_unknown_phi31_error: bool = True,
                     reject_unknown_amplitude: bool = True) -> ExpectationSuite:
    """The paper's sample cuts (Monti et al. 2025) as a suite on the stars merged with labels.

    σ[Fe/H] ≤ max_feh_error, A_G ≤ max_amplitude, N_G ≥ min_epochs, σφ31 ≤ max_phi31_error for RRab
    only (RRc exempt), type in `types`, and a [Fe/H] label present. NaN is "unknown": Great
    Expectations skips nulls in range checks, so each unknown has its own not-null expectation,
    switched by a `reject_unknown_*` knob (feh_error unknown is kept by default: some label files
    give no errors at all, so there is nothing to cut on).
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    if not types:
        raise ValueError("types must name at least one type to keep")
    unknown = sorted(set(types) - set(schema.TYPES))
    if unknown:
        raise ValueError(f"types {unknown} are not known types {schema.TYPES}")
    for name, value in (("max_feh_error", max_feh_error), ("max_amplitude", max_amplitude),
                        ("min_epochs", min_epochs), ("max_phi31_error", max_phi31_error)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    rrab = Column("type") == "RRab"
    labelled = Column("feh").is_not_null()
    exps = [
        gxe.ExpectColumnValuesToNotBeNull(
            column="feh", meta=_tag("no_label", "no [Fe/H] label"),
            notes="Reject stars without a [Fe/H] label (no label row, or a null feh)."),
        gxe.ExpectColumnValuesToBeInSet(
            column="type", value_set=list(types),
            meta=_tag("type", f"type {{value}} not in {', '.join(types)}"),
            notes=f"Keep only the types {', '.join(types)}."),
        gxe.ExpectColumnValuesToBeBetween(
            column="feh_error", max_value=max_feh_error,
            meta=_tag("feh_error", f"feh_error {{value}} > {max_feh_error:g}", max_feh_error),
            notes=f"Paper cut: σ[Fe/H] ≤ {max_feh_error:g} dex."),
    ]
    if reject_unknown_feh_error:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(
            column="feh_error", row_condition=labelled,
            meta=_tag("feh_error_unknown", "feh_error unknown"),
            notes="Reject labelled stars whose [Fe/H] error is unknown."))
    exps.append(gxe.ExpectColumnValuesToBeBetween(
        column="amplitude_g", max_value=max_amplitude,
        meta=_tag("amplitude_g", f"amplitude_g {{value}} > {max_amplitude:g}",
                      max_amplitude),
        notes=f"Paper cut: peak-to-peak G amplitude ≤ {max_amplitude:g} mag."))
    if reject_unknown_amplitude:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(
            column="amplitude_g", meta=_tag("amplitude_g_unknown", "amplitude_g unknown"),
            notes="Reject stars whose G amplitude is unknown (the amplitude cut cannot apply)."))
    exps += [
        gxe.ExpectColumnValuesToBeBetween(
            column="n_epochs_g", min_value=min_epochs,
            meta=_tag("n_epochs_g", f"n_epochs_g {{value}} < {min_epochs:g}", min_epochs),
            notes=f"Paper cut: at least {min_epochs:g} clean G epochs."),
        gxe.ExpectColumnValuesToBeBetween(
            column="phi31_g_error", max_value=max_phi31_error, row_condition=rrab,
            meta=_tag("phi31_g_error", f"phi31_g_error {{value}} > {max_phi31_error:g}",
                      max_phi31_error),
            notes=f"Paper cut, RRab only (RRc exempt): σφ31 ≤ {max_phi31_error:g} rad."),
    ]
    if reject_unknown_phi31_error:
        exps.append(gxe.ExpectColumnValuesToNotBeNull(
            column="phi31_g_error", row_condition=rrab,
            meta=_tag("phi31_g_error_unknown", "phi31 error unknown"),
            notes="Reject RRab stars whose φ31 error is unknown (the σφ31 cut cannot be applied)."))

    suite = gx.ExpectationSuite(name=CUTS_SUITE, meta={"notes": "rrlfeh sample cuts"})
    for exp in exps:
        suite.add_expectation(exp)
    return suite


def cut_keys(suite: ExpectationSuite) -> list[str]:
    """The cut keys of a cuts suite, in suite order (the order reasons are listed in)."""
    return [e.meta[META_KEY]["cut"] for e in suite.expectations if META_KEY in (e.meta or {})]


def _columns_and_types(table: dict[str, str]) -> list[Any]:
    """Every schema column must exist and have the schema's dtype."""
    import great_expectations.expectations as gxe

    exps: list[Any] = []
    for col, dtype in table.items():
        exps.append(gxe.ExpectColumnToExist(column=col))
        exps.append(gxe.ExpectColumnValuesToBeOfType(column=col, type_=_GX_DTYPE.get(dtype, dtype)))
    return exps


def _finite(column: str, **kwargs: Any) -> list[Any]:
    """Not null and not ±inf (GX range checks skip nulls and let inf through a one-sided bound)."""
    import great_expectations.expectations as gxe

    return [gxe.ExpectColumnValuesToNotBeNull(column=column, **kwargs),
            gxe.ExpectColumnValuesToNotBeInSet(column=column, value_set=[math.inf, -math.inf],
                                               **kwargs)]


def build_schema_suites(*, types: tuple[str, ...] = schema.TYPES) -> dict[str, ExpectationSuite]:
    """Suites for the raw tables, keyed 'stars', 'labels', 'epochs': a failure here stops the run.

    Columns and dtypes of `schema.STARS` / `LABELS` / `EPOCHS`; source_id not null and unique in
    stars and labels (so the merge is one-to-one); type in the known set; period > 0 and finite;
    epoch_max finite; finite time and mag on the epochs rows not flagged rejected.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    stars = _columns_and_types(schema.STARS) + [
        gxe.ExpectColumnValuesToNotBeNull(column="source_id"),
        gxe.ExpectColumnValuesToBeUnique(column="source_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="type"),
        gxe.ExpectColumnValuesToBeInSet(column="type", value_set=list(types)),
        *_finite("period"),
        gxe.ExpectColumnValuesToBeBetween(column="period", min_value=0, strict_min=True),
        *_finite("epoch_max"),
    ]
    labels = _columns_and_types(schema.LABELS) + [
        gxe.ExpectColumnValuesToNotBeNull(column="source_id"),
        gxe.ExpectColumnValuesToBeUnique(column="source_id"),
    ]
    kept = Column("rejected") == False  # noqa: E712 (a GX row condition, not a test)
    epochs = _columns_and_types(schema.EPOCHS) + [
        gxe.ExpectColumnValuesToNotBeNull(column="source_id"),
        *_finite("time", row_condition=kept),
        *_finite("mag", row_condition=kept),
    ]
    suites = {}
    for table, exps in (("stars", stars), ("labels", labels), ("epochs", epochs)):
        suite = gx.ExpectationSuite(name=SCHEMA_SUITES[table],
                                    meta={"notes": f"schema of the {table} table"})
        for exp in exps:
            suite.add_expectation(exp)
        suites[table] = suite
    return suites
