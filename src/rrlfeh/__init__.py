"""rrlfeh: [Fe/H] of RR Lyrae stars from Gaia light curves with a GRU (Monti et al. 2025)."""

__version__ = "0.1.0"
