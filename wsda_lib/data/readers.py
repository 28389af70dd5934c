"""The real datasets by name, for the checker and the experiment's splits."""

from __future__ import annotations

from wsda_lib.data.cityscapes import cityscapes
from wsda_lib.data.gta5 import gta5
from wsda_lib.data.synthia import synthia

READERS = {"gta5": gta5, "synthia": synthia, "cityscapes": cityscapes}


def open_dataset(name: str, root, **kwargs):
    """One of the real datasets by name: "gta5", "synthia" or "cityscapes"; kwargs go to its
    reader (size, num_classes, split, ...)."""
    if name not in READERS:
        raise ValueError(f"dataset must be one of {sorted(READERS)}, got {name!r}")
    return READERS[name](root, **kwargs)


def check_dataset(name: str, root, **kwargs) -> str:
    """`wsda data check` as a sentence: the checker's report on the dataset tree at root
    (opened with checking=True: every file read or reported, every problem by file name
    under its kind), or why it cannot be opened at all."""
    try:
        report = open_dataset(name, root, size=None, checking=True, **kwargs).check()
        return f"{name} at {root}: {report}"
    except ValueError as e:  # DatasetError included
        return f"{name} at {root}: cannot be used yet: {e}"
