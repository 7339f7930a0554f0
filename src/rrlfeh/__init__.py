"""rrlfeh: [Fe/H] of RR Lyrae stars from Gaia light curves with a GRU (Monti et al. 2025)."""

import warnings

__version__ = "0.1.0"

# mlflow.types imports pyspark whenever it is installed (the optional Spark extra), and pyspark
# 4.3 then warns on every import that pandas 3 is "not fully supported"; the Spark scoring test
# checks the numbers against in-process scoring instead
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas",
                        category=FutureWarning)
