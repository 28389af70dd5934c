"""Datasets: the embedded two-domain benchmark and (later) readers for the real datasets."""
