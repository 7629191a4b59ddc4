"""What a run directory becomes for a reader: plots, reports, comparisons."""
