"""Stage `validate`: the Great Expectations suite of the quality cuts on data/raw.

Writes the kept stars (merged with their labels), every rejected star with all its reasons, the
counts, the GX Data Docs and the validation page (reports/validation.md, readable offline). A
broken schema stops the stage (SchemaValidationError).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from rrlfeh.data import schema
from rrlfeh.io import write_json, write_parquet, write_text
from rrlfeh.quality_page import validation_page

log = logging.getLogger(__name__)

CUT_KNOBS = ("max_feh_error", "max_amplitude", "min_epochs", "max_phi31_error",
             "reject_unknown_feh_error", "reject_unknown_phi31_error", "reject_unknown_amplitude")


def run(raw_dir: Path, params: Mapping[str, Any], root: Path, metrics_path: Path) -> dict[str, Any]:
    """Validate data/raw against the suite; write kept, rejected, metrics and Data Docs."""
    from rrlfeh.quality import validate_stars

    tables = {name: pd.read_parquet(raw_dir / f"{name}.parquet")
              for name in ("stars", "labels", "epochs")}
    out_dir = root / params.get("out_dir", "data/validated")
    result = validate_stars(tables["stars"], tables["labels"], tables["epochs"],
                            docs_dir=root / params.get("docs_dir", "reports/gx"),
                            **{k: params[k] for k in CUT_KNOBS if k in params})
    rejected = pd.DataFrame({"source_id": result.rejected["source_id"], "stage": "validate",
                             "reason": result.rejected["reasons"]})
    write_parquet(result.kept, out_dir / "stars.parquet")
    write_parquet(schema.conform(rejected, schema.REJECTED, "rejected"),
                  out_dir / "rejected.parquet")
    write_json(result.counts, metrics_path)
    docs = None if result.docs_index is None else os.path.relpath(result.docs_index, root)
    write_text(validation_page(result.counts, docs),
               root / params["page"])
    log.info("validate: %d in, %d kept, %d rejected", result.counts["n_in"],
             result.counts["n_kept"], result.counts["n_rejected"])
    return result.counts
