"""Gaia-DR3-like observing for synthetic stars: sky positions, source ids, transit times, noise.

Why: the synthetic stars must look like archive rows to every later stage, so the cadence (pairs of
transits 106.5 min apart from the two fields of view, in visits tens of days apart over 34 months),
the per-transit G uncertainty and the 64-bit source ids follow the Gaia DR3 data model.
Sources: transit spacing and epoch counts measured on ../shared/data/gaia_dr3 (pairs 0.0740 d apart,
spin steps 0.25 d, visit gaps mostly 10-50 d, times 1666.4-2704.4); G uncertainty per transit from
SCIENCE.md (Gaia DR3 uncertainty model, no calibration floor); source_id = HEALPix level-12 nested
index * 2**35 + a running number (Gaia DR3 documentation, source_id definition).
"""

from __future__ import annotations

import numpy as np

FOV_SEPARATION_D: float = 106.5 / 1440.0   # preceding -> following field of view, d
SPIN_PERIOD_D: float = 0.25                # Gaia spin period (6 h), d
G_ZERO_POINT: float = 25.6874              # Gaia DR3 G zero point: flux = 10**(-0.4 (G - ZP)) e-/s

# Per-transit G uncertainty (SCIENCE.md), mag, at G = 12 .. 20.5; flat brighter than 14.
_NOISE_G = np.array([12.0, 13.0, 14.0, 15.0, 16.0, 17.0, 18.0, 19.0, 20.0, 20.5])
_NOISE_MMAG = np.array([1.2, 1.2, 1.2, 1.7, 2.7, 4.6, 7.9, 14.7, 28.0, 40.0])


def g_mag_error(g: np.ndarray) -> np.ndarray:
    """Per-transit G uncertainty (mag) at magnitude `g`: the DR3 table interpolated in log."""
    g = np.clip(np.asarray(g, dtype=float), _NOISE_G[0], _NOISE_G[-1])
    return 1e-3 * np.exp(np.interp(g, _NOISE_G, np.log(_NOISE_MMAG)))


def mag_to_flux(mag: np.ndarray) -> np.ndarray:
    """G magnitude to flux in e-/s with the Gaia DR3 zero point."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - G_ZERO_POINT))


def sample_mean_mag(rng: np.random.Generator, n: int, *, mag_min: float = 12.0,
                    mag_max: float = 20.0, mag_slope: float = 0.25) -> np.ndarray:
    """Intensity-mean G drawn from p(G) ~ 10**(mag_slope G) on [mag_min, mag_max] (more faint)."""
    lo, hi = 10.0 ** (mag_slope * mag_min), 10.0 ** (mag_slope * mag_max)
    return np.log10(lo + rng.random(n) * (hi - lo)) / mag_slope


def sample_epoch_counts(rng: np.random.Generator, n: int, *, median: float = 55.0,
                        sigma_ln: float = 0.45, n_min: int = 20, n_max: int = 250) -> np.ndarray:
    """G transits per star: log-normal (median ~55, long tail), redrawn outside [n_min, n_max]."""
    counts = np.empty(n, dtype=np.int64)
    todo = np.arange(n)
    while todo.size:
        draw = np.rint(median * np.exp(sigma_ln * rng.standard_normal(todo.size))).astype(np.int64)
        ok = (draw >= n_min) & (draw <= n_max)
        counts[todo[ok]] = draw[ok]
        todo = todo[~ok]
    return counts


def sample_transit_times(rng: np.random.Generator, counts: np.ndarray, *,
                         t_start: float = 1666.4, t_end: float = 2704.4,
                         extra_spins_mean: float = 0.3, single_fov_prob: float = 0.3,
                         skip_prob: float = 0.25, gap_sigma_ln: float = 0.5,
                         split_visit_prob: float = 0.05,
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Transit times for stars with `counts` transits each, Gaia-like and vectorised.

    A visit is 1 + Poisson(extra_spins_mean) consecutive spins (6 h apart), each giving a transit
    pair 106.5 min apart (one of the two dropped with single_fov_prob at the end of a visit);
    each later transit of a visit skips one field-of-view slot with skip_prob (a missed FOV, which
    makes the 6 h same-FOV steps of the real cadence); a few visits (split_visit_prob) continue
    1-4 d later. Visit gaps are log-normal, then all visits of a star are scaled to span the
    baseline [t_start, t_end]. Returns (star index per transit, time, field of view 0/1),
    grouped by star (sort by time within a star).
    """
    counts = np.asarray(counts, dtype=np.int64)
    n_stars, v_max = counts.size, int(counts.max(initial=1))
    # visit sizes in transits, (n_stars, v_max); enough visits for the largest count
    spins = 1 + rng.poisson(extra_spins_mean, size=(n_stars, v_max))
    sizes = 2 * spins - (rng.random((n_stars, v_max)) < single_fov_prob)
    ends = np.cumsum(sizes, axis=1)
    starts = ends - sizes
    used = starts < counts[:, None]                       # visits that hold at least one transit
    sizes = np.where(used, np.minimum(sizes, counts[:, None] - starts), 0)
    n_visits = used.sum(axis=1)
    # visit start times: log-normal gaps (one leading, one trailing) scaled to the baseline
    gaps = np.exp(gap_sigma_ln * rng.standard_normal((n_stars, v_max + 1)))
    gaps[:, 1:] = np.where(np.arange(1, v_max + 1)[None, :] <= n_visits[:, None], gaps[:, 1:], 0.0)
    cum = np.cumsum(gaps, axis=1)
    span = (t_end - t_start) - 6.0                         # room for the last visit's length
    visit_t = t_start + cum[:, :v_max] / cum[:, -1:] * span
    split = rng.random((n_stars, v_max)) < split_visit_prob
    split_after = rng.integers(1, 4, size=(n_stars, v_max))   # transits before the split
    split_days = rng.uniform(1.0, 4.0, size=(n_stars, v_max))
    # flatten to one row per transit
    flat_sizes = sizes[used]
    star = np.repeat(np.nonzero(used)[0], flat_sizes)
    vt = np.repeat(visit_t[used], flat_sizes)
    first = np.repeat(np.cumsum(flat_sizes) - flat_sizes, flat_sizes)
    j = np.arange(star.size) - first                      # index within the visit
    skipped = np.cumsum((rng.random(star.size) < skip_prob) & (j > 0))
    slot = j + skipped - skipped[first]                   # FOV slot: 2 per spin
    fov = slot % 2
    t = vt + (slot // 2) * SPIN_PERIOD_D + fov * FOV_SEPARATION_D
    t = t + np.where(np.repeat(split[used], flat_sizes) & (slot >= 2 * np.repeat(
        split_after[used], flat_sizes)), np.repeat(split_days[used], flat_sizes), 0.0)
    t = t + rng.normal(0.0, 2e-5, size=t.size)   # ~2 s timing jitter across the focal plane
    return star, t, fov


def sample_sky(rng: np.random.Generator, n: int, *, bulge_fraction: float = 0.3,
               bulge_sigma_deg: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """(ra, dec) in deg: isotropic halo plus a Gaussian bulge around the Galactic centre."""
    from astropy import units as u
    from astropy.coordinates import SkyCoord

    bulge = rng.random(n) < bulge_fraction
    z = rng.uniform(-1.0, 1.0, n)
    lon = rng.uniform(0.0, 360.0, n)
    lat = np.degrees(np.arcsin(z))
    lon = np.where(bulge, rng.normal(0.0, bulge_sigma_deg, n) % 360.0, lon)
    lat = np.where(bulge, np.clip(rng.normal(0.0, bulge_sigma_deg, n), -89.0, 89.0), lat)
    icrs = SkyCoord(l=lon * u.deg, b=lat * u.deg, frame="galactic").icrs
    return np.asarray(icrs.ra.deg), np.asarray(icrs.dec.deg)


def healpix_nested(ra_deg: np.ndarray, dec_deg: np.ndarray, order: int = 12) -> np.ndarray:
    """Nested HEALPix index of (ra, dec) at `order` (the ang2pix_nest algorithm, vectorised)."""
    nside = 1 << order
    z = np.sin(np.radians(dec_deg))
    za = np.abs(z)
    tt = (np.radians(ra_deg) % (2 * np.pi)) / (0.5 * np.pi)     # in [0, 4)
    # equatorial zone
    t1 = nside * (0.5 + tt)
    t2 = nside * z * 0.75
    jp = (t1 - t2).astype(np.int64)
    jm = (t1 + t2).astype(np.int64)
    ifp, ifm = jp // nside, jm // nside
    face_eq = np.where(ifp == ifm, ifp | 4, np.where(ifp < ifm, ifp, ifm + 8))
    ix_eq = jm & (nside - 1)
    iy_eq = nside - (jp & (nside - 1)) - 1
    # polar caps
    ntt = np.minimum(tt.astype(np.int64), 3)
    tp = tt - ntt
    tmp = nside * np.sqrt(3.0 * (1.0 - za))
    jp2 = np.minimum((tp * tmp).astype(np.int64), nside - 1)
    jm2 = np.minimum(((1.0 - tp) * tmp).astype(np.int64), nside - 1)
    north = z >= 0
    face_pol = np.where(north, ntt, ntt + 8)
    ix_pol = np.where(north, nside - jm2 - 1, jp2)
    iy_pol = np.where(north, nside - jp2 - 1, jm2)
    eq = za <= 2.0 / 3.0
    face = np.where(eq, face_eq, face_pol)
    ix = np.where(eq, ix_eq, ix_pol)
    iy = np.where(eq, iy_eq, iy_pol)
    return face * nside * nside + _interleave(ix) + 2 * _interleave(iy)


def _interleave(x: np.ndarray) -> np.ndarray:
    """Spread the bits of x to the even bit positions (Morton order), for up to 16-bit x."""
    x = x.astype(np.int64)
    out = np.zeros_like(x)
    for bit in range(16):
        out |= ((x >> bit) & 1) << (2 * bit)
    return out


def make_source_ids(rng: np.random.Generator, ra_deg: np.ndarray, dec_deg: np.ndarray,
                    *, max_running: int = 400_000) -> np.ndarray:
    """Unique DR3-like source ids: HEALPix-12 index of the position * 2**35 + a running number."""
    base = healpix_nested(ra_deg, dec_deg, order=12) * (1 << 35)
    ids = base + rng.integers(1, max_running, size=base.size)
    while True:   # collisions need the same level-12 pixel and number: vanishingly rare
        _, first = np.unique(ids, return_index=True)
        dup = np.setdiff1d(np.arange(ids.size), first)
        if dup.size == 0:
            return ids.astype(np.int64)
        ids[dup] = base[dup] + rng.integers(1, max_running, size=dup.size)


def make_transit_ids(time: np.ndarray, fov: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Unique int64 transit ids that, like Gaia's, grow with on-board time and encode FOV and row.

    Units of 2**10 ns since t = 1500 d, times 16, plus FOV (bit 3) and CCD row (bits 0-2); rare
    collisions between different stars are broken by stepping the time count.
    """
    ticks = np.rint((time - 1500.0) * 86400e9 / 1024.0).astype(np.int64)
    ids = ticks * 16 + fov.astype(np.int64) * 8 + row.astype(np.int64)
    order = np.argsort(ids, kind="stable")
    s = ids[order]
    while True:
        dup = np.nonzero(np.diff(s) <= 0)[0] + 1
        if dup.size == 0:
            break
        s[dup] = s[dup - 1] + 16
    ids[order] = s
    return ids
