"""Classical photometric-metallicity relations of RR Lyrae: the published ones as they stand,
and the same forms refitted, as baselines on the same stars as the network.

Coefficients are those gathered in shared/docs/SCIENCE.md (marked there where unverified). φ31
is in our cosine convention (schema.py); the relation of arXiv:2605.13811 is written for the
sine-series φ31 and gets `schema.phi31_sine` of ours. Period P in days, R21 = A2/A1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from rrlfeh.data import schema


def least_squares(features: np.ndarray, y: np.ndarray,
                  weights: np.ndarray | None = None) -> np.ndarray:
    """Coefficients [a, b...] of the (weighted) least-squares plane y = a + b·features: the one
    fit of every linear relation here and in `rrlfeh.training.baseline`."""
    y = np.asarray(y, float)
    a = np.column_stack([np.ones(len(y)), features])
    sw = np.sqrt(np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float))
    coef, *_ = np.linalg.lstsq(a * sw[:, None], y * sw, rcond=None)
    return coef


@dataclass(frozen=True)
class Relation:
    """A linear [Fe/H] relation in named features of (P, φ31, R21), with its source."""

    name: str
    source: str
    features: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (P, phi31, R21)
    coef: tuple[float, ...]  # intercept, then one slope a feature
    form: str = ""           # the linear model's variables (equal forms refit to one model)

    def predict(self, period, phi31, r21) -> np.ndarray:
        f = self.features(np.asarray(period, float), np.asarray(phi31, float),
                          np.asarray(r21, float))
        return self.coef[0] + f @ np.asarray(self.coef[1:])

    def refit(self, period, phi31, r21, feh, weights=None) -> Relation:
        """The same form with its coefficients fitted (weighted least squares) to `feh`."""
        f = self.features(np.asarray(period, float), np.asarray(phi31, float),
                          np.asarray(r21, float))
        coef = least_squares(f, feh, weights)
        return Relation(f"{self.name} refitted", f"{self.source}, refitted",
                        self.features, tuple(float(c) for c in coef), self.form)


def _p_phi31_sine(p, phi31, r21):
    return np.column_stack([p, schema.phi31_sine(phi31)])


def _p_phi31_pivot(p, phi31, r21):
    return np.column_stack([p - 0.6, phi31 - 2.0])


def _p_phi31_r21_pivot(p, phi31, r21):
    return np.column_stack([p - 0.6, phi31 - 2.0, r21 - 0.45])


def _p_phi31_rrc_pivot(p, phi31, r21):
    return np.column_stack([p - 0.3, phi31 - 3.5])


RRAB_PUBLISHED: tuple[Relation, ...] = (
    Relation("P-phi31 (72 HR stars)", "arXiv:2605.13811: -6.93 - 6.04 P + 1.65 phi31(sine)",
             _p_phi31_sine, (-6.93, -6.04, 1.65), "line P-phi31"),
    Relation("Iorio & Belokurov 2021", "IB21 posterior chain: a + b(P-0.6) + c(phi31-2)",
             _p_phi31_pivot, (-1.691, -4.722, 0.681), "line P-phi31"),
    Relation("Li et al. 2023", "Li+23 (unverified): a + b(P-0.6) + c(phi31-2) + d(R21-0.45)",
             _p_phi31_r21_pivot, (-1.888, -5.772, 1.090, 1.065), "plane P-phi31-R21"),
)

RRC_PUBLISHED: tuple[Relation, ...] = (
    Relation("Iorio & Belokurov 2021 form (RRc)",
             "IB21 RRc form a + b(P-0.3) + c(phi31-3.5), coefficients UNVERIFIED (chosen for the "
             "synthetic generator: phi31 ~ 3-4.5, a Li+23-like period slope)",
             _p_phi31_rrc_pivot, (-1.30, -8.5, 0.85)),
)

# The relation each type's synthetic [Fe/H] label is made with (rrlfeh.data.synthetic), applied
# to the φ31 fitted on the star's own epochs, as Muraveva et al. 2025 applied theirs to Gaia's.
LABEL_RELATIONS: dict[str, Relation] = {"RRab": RRAB_PUBLISHED[1], "RRc": RRC_PUBLISHED[0]}
