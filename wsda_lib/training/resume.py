"""What makes a stopped run end as an uninterrupted one does: the random number generators'
states (saved in the resume checkpoint with the step), and the signals after which a loop
stops at the end of its step with that checkpoint written (`StopRequests`)."""

from __future__ import annotations

import random
import signal
import threading

import numpy as np
import torch

from wsda_lib.core import distributed

# The signals after which a run with a resume checkpoint stops at the end of its step, saved.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def rng_state() -> dict:
    """The state of every global random generator: Python, NumPy, torch's CPU generator and
    the current GPU's (under torchrun each rank's own device, whose state equals rank 0's:
    every device is seeded alike and each rank draws the same sequence on its own)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}


def set_rng_state(state: dict) -> None:
    """Restore what `rng_state` returned."""
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class StopRequests:
    """SIGTERM (a scheduler's preemption or time limit, before its SIGKILL) or SIGINT while a
    loop runs: the step under way ends, then the loop stops (Loop.end_step). Handlers are
    installed only from the main thread and given back by `release`; a second Ctrl-C stops
    at once, as Python would."""

    def __init__(self, install: bool):
        self.signum, self.handlers = 0, {}
        if install and threading.current_thread() is threading.main_thread():
            self.handlers = {s: signal.signal(s, self._request) for s in STOP_SIGNALS}

    def _request(self, signum, frame) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def release(self) -> None:
        for s, handler in self.handlers.items():
            signal.signal(s, handler)
        self.handlers = {}

    def agreed(self, device) -> int:
        """The signal that asked to stop, agreed by every rank under torchrun (the highest
        any rank received), 0 for none."""
        if not distributed.is_distributed():
            return self.signum
        flag = torch.tensor([float(self.signum)], device=device)
        return int(distributed.all_reduce_max(flag).item())
