"""Pure, vectorised light-curve science: period search, Fourier fits, classification."""
