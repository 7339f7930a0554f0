"""Gaia-DR3-sized synthetic epoch photometry in the archive's RAW layout (G, BP, RP), in parts.

Why: scoring all of Gaia DR3 (270,905 RR Lyrae in vari_rrlyrae) on one machine needs an input
of that size in the archive's own form, made offline and in bounded memory. The stars are those
of `rrlfeh.data.synthetic.generate`, `part_stars` at a time, each part with its own seed
(`numpy.random.SeedSequence([seed, part])`): `to_epochs(part, band="G")` gives that call's G
epochs back, with the source ids renumbered so that they are unique over all parts (the HEALPix
part of each id kept, the running number the star's place in the whole set). The labels' Fourier
fit of `generate` (70 % of its time; an epoch file carries no labels) is skipped, so the stars
table's phi31_g / r21_g are the drawn values with their errors.

BP and RP: the star's own G model curve (the truth table) scaled to A_BP/A_G = 1.30 and
A_RP/A_G = 0.78 (approximate Gaia DR3 amplitude ratios of RR Lyrae, Clementini et al. 2023; an
assumption here), shifted by the mean colours and observed a little after G. Measured on
../shared/data/gaia_dr3 (medians over its 498,398 transits): BP-G 0.26, G-RP 0.43 mag; per-
transit errors 3.7 (BP) and 3.2 (RP) times G's; times 0.00031 / 0.00040 d after G's; BP/RP
variability-rejected 7.4 / 8.3 %; BP/RP missing 6 %.

Written: OUT/epochs/part-NNNNN.parquet (RAW exploded, one row a transit, the 25 columns of the
shared DR3 file, each part sorted by source_id and transit_id, every star whole in one part),
OUT/stars.parquet (schema.STARS: period, epoch_max, type a star, as vari_rrlyrae gives them) and
OUT/manifest.json. A stopped run resumes: finished parts are kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rrlfeh.data import schema
from rrlfeh.io import atomic_path, write_json

log = logging.getLogger(__name__)

SOLUTION_ID = 375316653866487564          # the shared DR3 file's (one value for all rows)
ZERO_POINTS = {"bp": 25.3385, "rp": 24.7479}   # Gaia DR3 BP / RP zero points, mag
# per band: amplitude ratio to G, mean colour (band - G), error ratio to G, time lag (d),
# variability-rejected share, missing share
BAND_MODEL = {"bp": (1.30, 0.26, 3.7, 0.00031, 0.074, 0.06),
              "rp": (0.78, -0.43, 3.2, 0.00040, 0.083, 0.06)}
RAW_FILE_COLUMNS: tuple[str, ...] = (
    "solution_id", "source_id", "transit_id", "g_transit_time", "g_transit_flux",
    "g_transit_flux_error", "g_transit_flux_over_error", "g_transit_mag", "bp_obs_time",
    "bp_flux", "bp_flux_error", "bp_flux_over_error", "bp_mag", "rp_obs_time", "rp_flux",
    "rp_flux_error", "rp_flux_over_error", "rp_mag", "variability_flag_g_reject",
    "variability_flag_bp_reject", "variability_flag_rp_reject", "g_other_flags",
    "bp_other_flags", "rp_other_flags", "rejected_by_photometry")
_RUNNING_BITS = 35                          # source_id = HEALPix-12 index * 2**35 + running
ROW_GROUP = 100_000                         # rows per parquet row group (readers stream these)


@dataclass(frozen=True)
class RawSpec:
    """What `write_raw_parts` makes: n_stars stars in parts of part_stars, from `seed`."""

    n_stars: int
    seed: int = 42
    part_stars: int = 10_000

    @property
    def n_parts(self) -> int:
        return -(-self.n_stars // self.part_stars)

    def part_size(self, k: int) -> int:
        return min(self.part_stars, self.n_stars - k * self.part_stars)

    def part_seed(self, k: int) -> int:
        return int(np.random.SeedSequence([self.seed, k]).generate_state(1)[0])


@contextlib.contextmanager
def _labels_skipped() -> Iterator[None]:
    """`generate` without its labels' Fourier fit (every fit 'failed': no labels, the drawn
    phi31/R21 kept); its random draws, epochs and stars are otherwise the same."""
    from rrlfeh.data import synthetic

    def no_fit(epochs: pd.DataFrame, star: np.ndarray, period: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({c: np.full(len(period), np.nan)
                             for c in ("phi31", "phi31_error", "r21")})

    real = synthetic.fit_clean_epochs
    synthetic.fit_clean_epochs = no_fit
    try:
        yield
    finally:
        synthetic.fit_clean_epochs = real


def raw_part(spec: RawSpec, k: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(RAW epoch rows, stars) of part `k`: `generate`'s stars with ids renumbered, G as it
    drew them, BP and RP from their model curves."""
    from rrlfeh.data.synthetic import generate

    with _labels_skipped(), _quiet("rrlfeh.data.synthetic"):
        s = generate(spec.part_size(k), seed=spec.part_seed(k))
    old = s.stars["source_id"].to_numpy(np.int64)
    new = (old >> _RUNNING_BITS << _RUNNING_BITS) + k * spec.part_stars + 1 + np.arange(old.size)
    index = pd.Index(old)
    star = index.get_indexer(s.epochs["source_id"].to_numpy(np.int64))
    truth_row = pd.Index(s.truth["source_id"].to_numpy(np.int64)).get_indexer(old)[star]
    g = s.epochs
    mag, flux, flux_error = (g[c].to_numpy(float) for c in ("mag", "flux", "flux_error"))
    null = ~np.isfinite(mag)
    rejected = g["rejected"].to_numpy(bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        raw = {"solution_id": np.full(len(g), SOLUTION_ID, np.int64),
               "source_id": new[star], "transit_id": g["transit_id"].to_numpy(np.int64),
               "g_transit_time": g["time"].to_numpy(float), "g_transit_flux": flux,
               "g_transit_flux_error": flux_error,
               "g_transit_flux_over_error": flux / flux_error, "g_transit_mag": mag}
    rng = np.random.default_rng([spec.seed, k, 1])
    sigma_g = schema.mag_error(g)
    for band in ("bp", "rp"):
        raw.update(_band(rng, band, s.truth.iloc[truth_row], raw["g_transit_time"], sigma_g,
                         null))
    raw.update(variability_flag_g_reject=rejected & ~null,
               variability_flag_bp_reject=raw.pop("_bp_reject"),
               variability_flag_rp_reject=raw.pop("_rp_reject"),
               g_other_flags=np.zeros(len(g), np.int64), bp_other_flags=np.zeros(len(g), np.int64),
               rp_other_flags=np.zeros(len(g), np.int64), rejected_by_photometry=null)
    epochs = pd.DataFrame({c: raw[c] for c in RAW_FILE_COLUMNS})
    epochs = epochs.sort_values(["source_id", "transit_id"], kind="stable", ignore_index=True)
    stars = s.stars.assign(source_id=new).sort_values("source_id", ignore_index=True)
    return epochs, stars


def _band(rng: np.random.Generator, band: str, truth: pd.DataFrame, g_time: np.ndarray,
          sigma_g: np.ndarray, null: np.ndarray) -> dict[str, np.ndarray]:
    """The RAW columns of BP or RP at the G transits (`truth`: each transit's star row)."""
    from rrlfeh.data.synthetic_shapes import N_HARMONICS, model_mag

    ratio, colour, err_ratio, lag, reject, missing = BAND_MODEL[band]
    k = range(1, N_HARMONICS + 1)
    amps = truth[[f"amp_{i}" for i in k]].to_numpy(float) * ratio
    phases = truth[[f"phase_{i}" for i in k]].to_numpy(float)
    time = g_time + lag
    mean_g = truth["a0"].to_numpy(float)
    true = model_mag(time, truth["period"].to_numpy(float), truth["epoch_max"].to_numpy(float),
                     mean_g + colour, amps, phases)
    sigma = err_ratio * np.where(np.isfinite(sigma_g), sigma_g, np.nanmedian(sigma_g))
    mag = true + sigma * rng.standard_normal(time.size)
    gone = null | (rng.random(time.size) < missing)
    flux = 10.0 ** (-0.4 * (mag - ZERO_POINTS[band]))
    flux_error = flux * sigma / schema.MAG_PER_FLUX
    mag, flux, flux_error = (np.where(gone, np.nan, a) for a in (mag, flux, flux_error))
    return {f"{band}_obs_time": time, f"{band}_flux": flux, f"{band}_flux_error": flux_error,
            f"{band}_flux_over_error": flux / flux_error, f"{band}_mag": mag,
            f"_{band}_reject": (rng.random(time.size) < reject) & ~gone}


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """The generator's per-call log line (one a part) at WARNING while parts are made."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _write_part(spec: RawSpec, k: int, out: Path) -> tuple[int, int]:
    """Part `k` written (epochs and stars, each atomically); (stars, epoch rows)."""
    epochs, stars = raw_part(spec, k)
    with atomic_path(out / "stars" / f"part-{k:05d}.parquet") as tmp:
        stars.to_parquet(tmp, index=False)
    with atomic_path(out / "epochs" / f"part-{k:05d}.parquet") as tmp:
        epochs.to_parquet(tmp, index=False, row_group_size=ROW_GROUP)
    return len(stars), len(epochs)


def write_raw_parts(out: Path, spec: RawSpec, jobs: int = 1) -> dict:
    """Write the parts of `spec` under `out` (`jobs` processes; finished parts kept, so a
    stopped run resumes), then stars.parquet and manifest.json; the manifest's content."""
    from tqdm import tqdm

    out = Path(out)
    manifest = out / "manifest.json"
    if manifest.exists():
        done = json.loads(manifest.read_text())
        if done.get("spec") == asdict(spec):
            log.info("synth-raw: %s already holds these %d stars", out, spec.n_stars)
            return done
        raise ValueError(f"{out} holds another synthetic set ({done.get('spec')}); "
                         "choose an empty folder")
    todo = [k for k in range(spec.n_parts)
            if not ((out / "epochs" / f"part-{k:05d}.parquet").exists()
                    and (out / "stars" / f"part-{k:05d}.parquet").exists())]
    if len(todo) < spec.n_parts:
        log.info("synth-raw: resuming, %d of %d parts already written", spec.n_parts - len(todo),
                 spec.n_parts)
    bar = tqdm(total=spec.n_stars, initial=spec.n_stars - sum(spec.part_size(k) for k in todo),
               desc="synth-raw", unit="star", mininterval=2.0)
    if jobs <= 1:
        for k in todo:
            bar.update(_write_part(spec, k, out)[0])
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            for n, _ in pool.map(_write_part, [spec] * len(todo), todo, [out] * len(todo)):
                bar.update(n)
    bar.close()
    n_rows = _merge_stars(out, spec.n_parts)
    info = {"spec": asdict(spec), "n_parts": spec.n_parts, "epochs": "epochs/",
            "layout": "Gaia EPOCH_PHOTOMETRY RAW, exploded (one row a transit), G BP RP",
            "n_epoch_rows": n_rows, "stars": "stars.parquet",
            "generator": "rrlfeh.data.synthetic_raw"}
    write_json(info, manifest)
    return info


def _merge_stars(out: Path, n_parts: int) -> int:
    """stars/part-*.parquet streamed into one stars.parquet (then removed); the number of
    epoch rows over all parts (from the parts' footers)."""
    import pyarrow.parquet as pq

    parts = [out / "stars" / f"part-{k:05d}.parquet" for k in range(n_parts)]
    with atomic_path(out / "stars.parquet") as tmp:
        writer = None
        for path in parts:
            table = pq.read_table(path)
            writer = writer or pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
        if writer is not None:
            writer.close()
    shutil.rmtree(out / "stars")
    return sum(pq.ParquetFile(out / "epochs" / f"part-{k:05d}.parquet").metadata.num_rows
               for k in range(n_parts))
