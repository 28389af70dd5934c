"""The paper's method: one file per idea, each equation one documented function."""
