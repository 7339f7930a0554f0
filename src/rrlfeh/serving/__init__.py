"""Inference: user light curves -> [Fe/H] through the registered MLflow pyfunc."""
