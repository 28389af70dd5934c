"""Datasets: the embedded two-domain benchmark and readers for GTA5, SYNTHIA and Cityscapes."""


def open_dataset(name: str, root, **kwargs):
    """One of the real datasets by name: "gta5", "synthia" or "cityscapes"."""
    from .cityscapes import cityscapes
    from .gta5 import gta5
    from .synthia import synthia

    readers = {"gta5": gta5, "synthia": synthia, "cityscapes": cityscapes}
    if name not in readers:
        raise ValueError(f"--dataset must be one of {sorted(readers)}, got {name!r}")
    return readers[name](root, **kwargs)
