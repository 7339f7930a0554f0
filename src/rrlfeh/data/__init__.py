"""Sources of the three raw tables (stars, epochs, labels) and their schema."""
