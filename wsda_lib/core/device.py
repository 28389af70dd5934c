"""Which device a run uses, and its seeds: the two facts every layer above needs before it
trains or evaluates anything."""

from __future__ import annotations

import random
import re

import numpy as np
import torch


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (every device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class NoCuda(RuntimeError):
    """A CUDA device asked for (the GPU check) on a machine without one."""


DEVICE_NAMES = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def resolve_device(name: str = "auto") -> torch.device:
    """"auto" -> the GPU when one is present, else the CPU; "cpu", "mps", "cuda" or "cuda:N"
    as given. Raises ValueError naming the value for any other name, and for a CUDA device
    on a machine without one."""
    if not isinstance(name, str) or not DEVICE_NAMES.match(name):
        raise ValueError(f"device {name!r}: expected 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N'")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: no CUDA GPU is available; use 'auto' or 'cpu'")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r}: no Apple GPU (MPS) is available; use 'auto' or "
                         f"'cpu'")
    return torch.device(name)
