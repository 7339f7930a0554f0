"""Write the tiny Gaia-archive-format fixtures in this folder (invented stars, not real data).

- `EPOCH_PHOTOMETRY-<id>.xml`: DataLink EPOCH_PHOTOMETRY, INDIVIDUAL layout, TABLEDATA VOTable as
  the archive writes it (band column, G/BP/RP rows, boolean flags, null as empty <TD/> or NaN).
  The archive's own file names are 'EPOCH_PHOTOMETRY-Gaia DR3 <id>.xml'; the fake client maps them.
- `raw_epochs.csv`: the same G (and BP/RP) transits in the RAW layout, exploded to rows.
- `vari_rrlyrae_query.xml`: the answer to `gaia.rrlyrae_adql()` for four stars; the fourth
  (RRc, 4 000 000 000 000 000 004) has no epoch photometry file, so it must come back as missing.
Run: .venv/bin/python tests/data/gaia/make_fixtures.py
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
ZP_G = 25.6874  # G zero point (Vega), flux in e-/s
SOLUTION = 375316653866487564

HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<VOTABLE version="1.4" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
 xmlns="http://www.ivoa.net/xml/VOTable/v1.3"
 xsi:schemaLocation="http://www.ivoa.net/xml/VOTable/v1.3 http://www.ivoa.net/xml/VOTable/v1.3">
<RESOURCE type="results">
<INFO name="QUERY_STATUS" value="OK"/>
<TABLE>
"""
TAIL = """</TABLEDATA>
</DATA>
</TABLE>
</RESOURCE>
</VOTABLE>
"""

EPOCH_FIELDS = [
    ('datatype="long" name="source_id" ucd="meta.id;meta.main"', "source_id"),
    ('datatype="long" name="transit_id" ucd="meta.id"', "transit_id"),
    ('arraysize="*" datatype="char" name="band" ucd="instr.bandpass"', "band"),
    ('datatype="double" name="time" ucd="time.epoch" unit="d"', "time"),
    ('datatype="double" name="mag" ucd="phot.mag" unit="mag"', "mag"),
    ('datatype="double" name="flux" ucd="phot.flux" unit="electron/s"', "flux"),
    ('datatype="double" name="flux_error" ucd="stat.error;phot.flux" unit="electron/s"',
     "flux_error"),
    ('datatype="float" name="flux_over_error" ucd="stat.snr"', "flux_over_error"),
    ('datatype="boolean" name="rejected_by_photometry" ucd="meta.code.status"',
     "rejected_by_photometry"),
    ('datatype="boolean" name="rejected_by_variability" ucd="meta.code.status"',
     "rejected_by_variability"),
    ('datatype="long" name="other_flags" ucd="meta.code"', "other_flags"),
    ('datatype="long" name="solution_id" ucd="meta.version"', "solution_id"),
]

# (transit_id, time, G mag or None, rejected_by_photometry, rejected_by_variability)
STARS = {
    4000000000000000001: [
        (17239868698150574, 1705.11231, 15.812, False, False),
        (17243961009435107, 1705.18600, 15.344, False, False),
        (23455961034532509, 1817.51402, 16.010, False, True),   # rejected by variability
        (23460053286688098, 1817.58774, 15.700, False, False),
    ],
    4000000000000000002: [
        (19883021175367680, 1753.02218, 16.421, False, False),
        (19887113426755931, 1753.09590, None, True, False),      # null flux/mag, photometry
        (26094012365271230, 1865.42001, 16.950, False, False),
    ],
    4000000000000000003: [
        (21540125781163522, 1783.00412, 17.201, False, False),
        (21544218032551773, 1783.07784, 17.350, True, False),    # rejected by photometry
        (30011233211874400, 1936.27533, 17.105, False, False),
    ],
}


def g_row(mag: float | None) -> tuple[str, str, str, str]:
    """(mag, flux, flux_error, flux_over_error) as archive strings; None gives nulls."""
    if mag is None:
        return "NaN", "", "", ""
    flux = 10 ** (-0.4 * (mag - ZP_G))
    err = 0.004 * flux
    return f"{mag:.6f}", f"{flux:.6f}", f"{err:.6f}", f"{flux / err:.4f}"


def td(value: object) -> str:
    return "<TD/>" if value == "" else f"<TD>{value}</TD>"


def bool_text(flag: bool) -> str:
    return "true" if flag else "false"


def write_epoch_files() -> None:
    for sid, transits in STARS.items():
        lines = [HEAD] + [f"<FIELD {attrs}/>\n" for attrs, _ in EPOCH_FIELDS]
        lines.append("<DATA>\n<TABLEDATA>\n")
        for band, dt, dmag in (("G", 0.0, 0.0), ("BP", 0.00002, 0.31), ("RP", 0.00004, -0.52)):
            for tid, t, mag, rej_phot, rej_var in transits:
                m = None if mag is None else mag + dmag
                mag_s, flux_s, err_s, snr_s = g_row(m)
                cells = [sid, tid, band, f"{t + dt:.8f}", mag_s, flux_s, err_s, snr_s,
                         bool_text(rej_phot), bool_text(rej_var and band == "G"),
                         4096 if rej_phot else 0, SOLUTION]
                lines.append("<TR>" + "".join(td(c) for c in cells) + "</TR>\n")
        lines.append(TAIL)
        (HERE / f"EPOCH_PHOTOMETRY-{sid}.xml").write_text("".join(lines))


def write_raw_csv() -> None:
    head = ("solution_id,source_id,transit_id,g_transit_time,g_transit_flux,g_transit_flux_error,"
            "g_transit_flux_over_error,g_transit_mag,bp_obs_time,bp_mag,rp_obs_time,rp_mag,"
            "variability_flag_g_reject,variability_flag_bp_reject,variability_flag_rp_reject,"
            "g_other_flags,bp_other_flags,rp_other_flags,rejected_by_photometry")
    rows = [head]
    for sid, transits in STARS.items():
        for tid, t, mag, rej_phot, rej_var in transits:
            mag_s, flux_s, err_s, snr_s = g_row(mag)
            mag_s = "" if mag is None else mag_s
            bp = "" if mag is None else f"{mag + 0.31:.6f}"
            rp = "" if mag is None else f"{mag - 0.52:.6f}"
            rows.append(",".join(str(c) for c in (
                SOLUTION, sid, tid, f"{t:.8f}", flux_s, err_s, snr_s, mag_s,
                f"{t + 0.00002:.8f}", bp, f"{t + 0.00004:.8f}", rp,
                rej_var, False, False, 4096 if rej_phot else 0, 0, 0, rej_phot)))
    (HERE / "raw_epochs.csv").write_text("\n".join(rows) + "\n")


QUERY_FIELDS = [
    ('datatype="long" name="source_id" ucd="meta.id;meta.main"', "source_id"),
    ('arraysize="*" datatype="char" name="best_classification" ucd="meta.code.class"', ""),
    ('datatype="double" name="pf" ucd="time.period" unit="d"', ""),
    ('datatype="double" name="p1_o" ucd="time.period" unit="d"', ""),
    ('datatype="double" name="epoch_g" ucd="time.epoch" unit="d"', ""),
    ('datatype="double" name="peak_to_peak_g" ucd="phot.mag;arith.diff" unit="mag"', ""),
    ('datatype="double" name="int_average_g" ucd="phot.mag;stat.mean" unit="mag"', ""),
    ('datatype="short" name="num_clean_epochs_g" ucd="meta.number"', ""),
    ('datatype="double" name="phi31_g" ucd="stat.fourier" unit="rad"', ""),
    ('datatype="double" name="phi31_g_error" ucd="stat.error" unit="rad"', ""),
    ('datatype="double" name="r21_g" ucd="stat.fourier"', ""),
    ('datatype="double" name="ra" ucd="pos.eq.ra;meta.main" unit="deg"', ""),
    ('datatype="double" name="dec" ucd="pos.eq.dec;meta.main" unit="deg"', ""),
]
QUERY_ROWS = [
    (4000000000000000001, "RRab", 0.5612345, "", 1705.0213, 0.98, 15.71, 3, 2.0345, 0.021,
     0.4711, 271.2345, -30.1234),
    (4000000000000000002, "RRab", 0.6123456, "", 1753.0011, 0.67, 16.55, 2, 2.3001, 0.064,
     0.4203, 12.3456, 45.6789),
    (4000000000000000003, "RRc", "", 0.3312345, 1783.0100, 0.41, 17.15, 2, 3.8901, 0.150,
     0.1902, 150.5001, -2.5003),
    (4000000000000000004, "RRc", "", 0.2876543, 1800.0000, 0.38, 17.90, 55, 4.0100, 0.180,
     0.2100, 210.0002, 60.0004),
]


def write_query() -> None:
    lines = [HEAD] + [f"<FIELD {attrs}/>\n" for attrs, _ in QUERY_FIELDS]
    lines.append("<DATA>\n<TABLEDATA>\n")
    for row in QUERY_ROWS:
        lines.append("<TR>" + "".join(td(c) for c in row) + "</TR>\n")
    lines.append(TAIL)
    (HERE / "vari_rrlyrae_query.xml").write_text("".join(lines))


if __name__ == "__main__":
    write_epoch_files()
    write_raw_csv()
    write_query()
