"""Preprocessing: fold -> periodic smoothing spline -> resample -> standardise (vectorised)."""

from rrlfeh.preprocess.curves import (
    ProcessedCurves,
    preprocess_folded,
    preprocess_light_curves,
    preprocess_tables,
)
from rrlfeh.preprocess.network_input import CHANNELS, network_input

__all__ = ["CHANNELS", "ProcessedCurves", "network_input", "preprocess_folded",
           "preprocess_light_curves", "preprocess_tables"]
