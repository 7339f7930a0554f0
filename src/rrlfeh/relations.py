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


@dataclass(frozen=True)
class Relation:
    """A linear [Fe/H] relation in named features of (P, φ31, R21), with its source."""

    name: str
    source: str
    features: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (P, phi31, R21)
    coef: tuple[float, ...]  # intercept, then one slope a feature

    def predict(self, period, phi31, r21) -> np.ndarray:
        f = self.features(np.asarray(period, float), np.asarray(phi31, float),
                          np.asarray(r21, float))
        return self.coef[0] + f @ np.asarray(self.coef[1:])

    def refit(self, period, phi31, r21, feh, weights=None) -> Relation:
        """The same form with its coefficients fitted (weighted least squares) to `feh`."""
        from rrlfeh.training.baseline import LinearRelation

        f = self.features(np.asarray(period, float), np.asarray(phi31, float),
                          np.asarray(r21, float))
        fit = LinearRelation().fit(f, np.asarray(feh, float), weights)
        return Relation(f"{self.name} refitted", f"{self.source}, refitted",
                        self.features, tuple(float(c) for c in fit.coef_))


def _p_phi31_sine(p, phi31, r21):
    return np.column_stack([p, schema.phi31_sine(phi31)])


def _p_phi31_pivot(p, phi31, r21):
    return np.column_stack([p - 0.6, phi31 - 2.0])


def _p_phi31_r21_pivot(p, phi31, r21):
    return np.column_stack([p - 0.6, phi31 - 2.0, r21 - 0.45])


RRAB_PUBLISHED: tuple[Relation, ...] = (
    Relation("P-phi31 (72 HR stars)", "arXiv:2605.13811: -6.93 - 6.04 P + 1.65 phi31(sine)",
             _p_phi31_sine, (-6.93, -6.04, 1.65)),
    Relation("Iorio & Belokurov 2021", "IB21 posterior chain: a + b(P-0.6) + c(phi31-2)",
             _p_phi31_pivot, (-1.691, -4.722, 0.681)),
    Relation("Li et al. 2023", "Li+23 (unverified): a + b(P-0.6) + c(phi31-2) + d(R21-0.45)",
             _p_phi31_r21_pivot, (-1.888, -5.772, 1.090, 1.065)),
)
