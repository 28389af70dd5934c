"""What a record says about where it came from: the commit of the code that ran, the machine,
the peak memory. The commit is that of the checkout the package is imported from, and only
when the package's folder sits at that checkout's root: an installed package (in a venv,
wherever it lies) records none rather than another repository's."""

from __future__ import annotations

import datetime
import os
import platform
import resource
import subprocess
from pathlib import Path

import torch

PACKAGE = Path(__file__).resolve().parent.parent


def commit(short: bool = False) -> str | None:
    """The commit of the checkout this package is imported from; None outside a git checkout
    (an installed wheel). The full hash, with "+changes" when the tracked files differ from
    it (the bench, the GPU check); with `short`, the abbreviated hash alone, as results.json
    and the readers' copies record it: the series rewrites tracked files (those very records)
    while it runs, so a mark of changes would be its own."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=PACKAGE, capture_output=True, text=True,
                              check=True).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != PACKAGE.parent:
            return None  # a package installed inside some other repository's tree
        if short:
            return git("rev-parse", "--short", "HEAD")
        head, changed = git("rev-parse", "HEAD"), git("status", "--porcelain",
                                                      "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if changed else "")


def machine() -> dict:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in
                   Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30 \
        if hasattr(os, "sysconf") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "memory_gib": round(gib, 1) if gib else None, "python": platform.python_version(),
            "torch": torch.__version__, "platform": platform.platform(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def peak_rss_gib() -> float:
    """Peak RSS of this process and of its largest finished child (the notebook kernels)."""
    kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
              resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return kib / 2**20


def run_metadata(preset: str, device) -> dict:
    """Preset, commit, date and machine of a run, for results.json and the records beside it."""
    machine_line = (f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, "
                    f"torch {torch.__version__}, device {device}")
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"preset": preset, "commit": commit(short=True) or "unknown", "date": date,
            "machine": machine_line}
