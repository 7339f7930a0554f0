"""Stage `acquire`: the chosen source writes data/raw/{stars,epochs,labels,rejected}.parquet.

Every source (synthetic, files, gaia) goes through the same conform-and-write step, so later
stages cannot tell them apart. Outputs are written atomically; the Gaia batch cache lives outside
the DVC outputs so a failed run resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from rrlfeh.config import AcquireParams
from rrlfeh.data import schema
from rrlfeh.data.files import RawTables, acquire_from_files, empty
from rrlfeh.io import write_json, write_parquet
from rrlfeh.reasons import one_row_a_star, reason_counts

log = logging.getLogger(__name__)

OUTPUTS = ("stars", "epochs", "labels", "rejected")


def from_synthetic(kwargs: dict[str, Any]) -> RawTables:
    """The embedded default: a deterministic synthetic Gaia-DR3-like sample."""
    from rrlfeh.data.synthetic import generate

    kw = dict(kwargs)
    s = generate(int(kw.pop("n_stars")), **kw)
    return RawTables(stars=s.stars, epochs=s.epochs, labels=s.labels,
                     rejected=empty(schema.REJECTED)).conformed()


def from_gaia(p: AcquireParams, client: Any = None) -> RawTables:
    """The Gaia archive at acquire.gaia.archive_url through astroquery (resumable batches);
    `client` replaces astroquery's Gaia object (tests inject one at that boundary)."""
    from rrlfeh.data.gaia import acquire_from_gaia

    g = p.gaia
    stars, epochs, labels, rejected = acquire_from_gaia(
        g.cache_dir, g.labels, max_stars=g.max_stars, batch_size=g.batch_size,
        retries=g.retries, backoff_s=g.backoff_s, timeout_s=g.timeout_s, client=client,
        archive_url=g.archive_url, reask=g.reask)
    return RawTables(stars=stars, epochs=epochs, labels=labels,
                     rejected=rejected.assign(stage="acquire")).conformed()


def collect(p: AcquireParams, client: Any = None) -> RawTables:
    """Run the source that params.yaml chose (`client`: see from_gaia)."""
    if p.source == "synthetic":
        return from_synthetic(dict(p.synthetic))
    if p.source == "files":
        f = p.files
        return acquire_from_files(f.epochs, f.labels, f.stars, dict(p.derive))
    return from_gaia(p, client)


def summarise(t: RawTables) -> dict[str, Any]:
    """Counts for DVC metrics: stars by type, epochs, labels, derived values, rejections."""
    derived = {flag: int(t.stars[flag].sum()) for flag in schema.DERIVED_FLAGS}
    period = t.stars["period"]
    return {
        "n_stars": len(t.stars),
        "n_stars_by_type": t.stars["type"].value_counts().to_dict(),
        "n_epoch_rows": len(t.epochs),
        "n_epochs_rejected": int(t.epochs["rejected"].sum()),
        "n_labels": len(t.labels),
        "n_labelled_stars": int(t.stars["source_id"].isin(t.labels["source_id"]).sum()),
        "n_derived": derived,
        "n_period_rrab_range": int(period.between(0.42, 1.0).sum()),
        "n_period_rrc_range": int(period.between(0.2, 0.42, inclusive="left").sum()),
        "n_rejected": len(t.rejected),
        "rejected_by_reason": reason_counts(t.rejected["reason"]),
    }


def run(p: AcquireParams, metrics_path: Path) -> dict[str, Any]:
    """Collect the tables from the source, write them to p.out_dir, and write the metrics."""
    tables = collect(p)
    # star by star: `score` streams the epochs in chunks of whole stars
    epochs = tables.epochs.sort_values(["source_id", "time"], kind="stable", ignore_index=True)
    # one row a star set aside (e.g. no photometry and an unreadable label): reasons '; '-joined
    tables = dataclasses.replace(tables, epochs=epochs,
                                 rejected=one_row_a_star(tables.rejected)).conformed()
    for name in OUTPUTS:
        write_parquet(getattr(tables, name), p.out_dir / f"{name}.parquet")
    metrics = {"source": p.source, **summarise(tables)}
    write_json(metrics, metrics_path)
    log.info("acquire (%s): %d stars, %d epoch rows, %d labels, %d rejected", p.source,
             metrics["n_stars"], metrics["n_epoch_rows"], metrics["n_labels"],
             metrics["n_rejected"])
    return metrics
