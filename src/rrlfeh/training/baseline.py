"""The classical baseline and the served combination: a linear [Fe/H] relation in the per-star
features the network sees, chosen and fitted on the training folds, and the stack of relation
and network (its weight chosen out of fold per bin of epochs in `rrlfeh.training.served`).

Features come from the training arrays (`TrainingSet.phi31`, `.r21`: the Fourier fit of each
star's own epochs, `rrlfeh.lightcurve.features`, as `preprocess.network_input.star_values` puts
them into the network's channels), so the relation and the network read the same numbers. The
forms are the textbook photometric-metallicity relations: the line a + b·P + c·φ31 and the plane
with R21 (Li et al. 2023); (φ31, R21) for curves without periods. They are fitted by ordinary
least squares: the gate compares plain RMSE, and a user's spreadsheet line is fitted that way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rrlfeh.relations import least_squares

# relation forms: the features of each, in order (TrainingSet attributes)
FORMS: dict[str, tuple[str, ...]] = {
    "line P-phi31": ("period", "phi31"),
    "plane P-phi31-R21": ("period", "phi31", "r21"),
    "plane phi31-R21 (no period)": ("phi31", "r21"),
}
STACK_STEP = 0.01  # grid of the network's weight in the stack, 0..1


def forms_for(data) -> list[str]:
    """The relation forms this data can use (the forms with P need every period known)."""
    has_p = np.isfinite(np.asarray(data.period, float)).all()
    return [f for f, cols in FORMS.items() if ("period" in cols) == has_p]


def relation_features(data, form: str) -> np.ndarray:
    """(N, k) features of `form` from a TrainingSet (or any object with the same attributes)."""
    cols = [getattr(data, c) for c in FORMS[form]]
    if any(c is None for c in cols):
        raise ValueError(f"{getattr(data, 'kind', 'data')}: no per-star features (rerun "
                         "`rrlfeh preprocess`)")
    return np.column_stack([np.asarray(c, float) for c in cols])


def plane_features(data) -> np.ndarray:
    """The classical plane's features: (P, φ31, R21), or (φ31, R21) where any period is unknown
    (curves without periods, e.g. DG22)."""
    return relation_features(data, forms_for(data)[-1])


class LinearRelation:
    """Least-squares plane [Fe/H] = a + b·features (optionally weighted)."""

    def fit(self, features: np.ndarray, y: np.ndarray,
            weights: np.ndarray | None = None) -> LinearRelation:
        self.coef_ = least_squares(features, y, weights)
        return self

    def predict(self, features: np.ndarray) -> np.ndarray:
        return self.coef_[0] + features @ self.coef_[1:]


def _own(data) -> np.ndarray:
    """True for the stars' own curves (not sparse copies) of a TrainingSet."""
    return ~np.asarray(getattr(data, "is_copy", np.zeros(len(data), bool)), bool)


def relation_oof(data, form: str, folds: Sequence[tuple[int, np.ndarray, np.ndarray]]
                 ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Out-of-fold predictions of `form` (mean over repeats) for every row and each fold's
    validation predictions; folds are (repeat, train index, validation index). The relation is
    fitted on the stars' own curves of the training part (the line a user fits), never on the
    sparse copies."""
    f, own = relation_features(data, form), _own(data)
    n_repeats = max(r for r, _, _ in folds)
    oof, per_fold = np.zeros((n_repeats, len(data))), []
    for r, tr, va in folds:
        tr = tr[own[tr]]
        pred = LinearRelation().fit(f[tr], data.y[tr]).predict(f[va])
        oof[r - 1, va] = pred
        per_fold.append(pred)
    return oof.mean(axis=0), per_fold


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y, float) - np.asarray(pred, float)) ** 2)))


def choose_relation(data, folds: Sequence[tuple[int, np.ndarray, np.ndarray]]
                    ) -> dict[str, Any]:
    """The relation form with the lowest out-of-fold RMSE on the training folds (the stars' own
    curves), refitted on all training stars: {form, features, coef, oof (predictions of every
    row), per_fold, rmse_by_form}."""
    own = _own(data)
    scored = {form: relation_oof(data, form, folds) for form in forms_for(data)}
    by_form = {form: rmse(data.y[own], oof[own]) for form, (oof, _) in scored.items()}
    best = min(by_form, key=by_form.get)
    fit = LinearRelation().fit(relation_features(data, best)[own], data.y[own])
    return {"form": best, "features": list(FORMS[best]),
            "coef": [float(c) for c in fit.coef_], "oof": scored[best][0],
            "per_fold": scored[best][1], "rmse_by_form": by_form}


def relation_predict(relation: Mapping[str, Any], values: Mapping[str, np.ndarray]
                     ) -> np.ndarray:
    """A fitted relation ({features, coef}) applied to per-star values by feature name."""
    coef = np.asarray(relation["coef"], float)
    f = np.column_stack([np.asarray(values[c], float) for c in relation["features"]])
    return coef[0] + f @ coef[1:]
