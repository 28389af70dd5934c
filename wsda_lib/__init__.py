"""wsda: domain adaptive semantic segmentation using weak labels."""

__version__ = "0.1.0"
