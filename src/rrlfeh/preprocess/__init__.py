"""Preprocessing: fold -> periodic smoothing spline -> resample -> standardise (vectorised)."""

from rrlfeh.preprocess.curves import (
    ProcessedCurves,
    preprocess_folded,
    preprocess_light_curves,
    preprocess_tables,
)

__all__ = ["ProcessedCurves", "preprocess_folded", "preprocess_light_curves", "preprocess_tables"]
