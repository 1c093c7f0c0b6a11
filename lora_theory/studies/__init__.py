"""Studies: sweeps that return tidy DataFrames (one row per measured point) for the figures."""
