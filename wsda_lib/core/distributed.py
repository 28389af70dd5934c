"""Multi-process training with PyTorch DistributedDataParallel, started by torchrun.

`torchrun --nproc_per_node=N -m wsda_lib.cli train ...` sets WORLD_SIZE, RANK and LOCAL_RANK;
`init_from_env` then joins the process group (NCCL on GPUs, gloo on CPUs). Each rank draws
its own disjoint share of every training split (a DistributedSampler per domain), evaluates a
disjoint shard of each evaluation split, and the confusion matrices are summed across ranks, so
every rank reports the same metrics as a single process would. Only rank 0 writes runs.

No rank waits in a collective (barrier, all_reduce) while another does work whose length grows
with the data: such a wait dies at the process group's timeout, and torchrun then kills the
working rank too, before its cache is written, on every rerun. Work of that kind (the cached
data, self-training's pseudo labels) goes through `once`: the ranks take an exclusive file lock
beside the cache, the first to get it computes and writes the cache atomically, and the others
wait on the lock, which no timeout ends, then read the cache. `wsda train` prepares its data
this way before the process group forms.

The process group's timeout, the longest any collective may wait for the slowest rank, is
WSDA_DIST_TIMEOUT seconds (default 1800, `timeout`); a value that is not a positive number is
an error naming the variable.
"""

from __future__ import annotations

import hashlib
import math
import os
import socket
import warnings
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

try:  # POSIX; on Windows (no torchrun jobs sharing a disk there) `once` runs work unlocked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

TIMEOUT_VARIABLE = "WSDA_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (a no-op in a single process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """The element-wise maximum of a tensor over ranks, in place (a no-op in one process)."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


# Gradients are averaged in buckets of about this many bytes, DDP's default bucket size.
BUCKET_BYTES = 25 * 2**20


def average_gradients(parameters, bucket_bytes: int = BUCKET_BYTES) -> int:
    """Average the gradients of `parameters` over ranks in place, one all_reduce per bucket of
    about `bucket_bytes` (gradients of one dtype and device, flattened together), as DDP
    buckets them; returns the number of collectives (0 in one process). Each element is the
    sum over ranks divided by the world size, as with one all_reduce per tensor. The
    adaptation loop uses this rather than DDP wrappers: it runs the network twice and the
    discriminators three times per step, which DDP's one-forward-one-backward hooks do not
    allow."""
    if not is_distributed():
        return 0
    world, calls = world_size(), 0
    for bucket in _buckets([p.grad for p in parameters if p.grad is not None], bucket_bytes):
        flat = torch.cat([g.reshape(-1) for g in bucket])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= world
        offset = 0
        for g in bucket:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
        calls += 1
    return calls


def _buckets(tensors: list, bucket_bytes: int) -> list[list]:
    """`tensors` in order, cut into runs of one dtype and device of at most `bucket_bytes`
    (a tensor larger than that is a bucket of its own)."""
    buckets, size = [], 0
    for x in tensors:
        n = x.numel() * x.element_size()
        same = buckets and (buckets[-1][0].dtype, buckets[-1][0].device) == (x.dtype, x.device)
        if not same or size + n > bucket_bytes:
            buckets.append([])
            size = 0
        buckets[-1].append(x)
        size += n
    return buckets


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank. DDP broadcasts them
    before each forward, but the last training step updates each rank's copy from its own
    batch; evaluation and the saved checkpoint must see one model."""
    if is_distributed():
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def shard(n: int) -> range:
    """This rank's disjoint share of n evaluation items: rank, rank + world, ..."""
    return range(rank(), n, world_size())


def collective_timeout(environ=None) -> timedelta:
    """The process group's timeout: how long a collective waits for the slowest rank,
    WSDA_DIST_TIMEOUT seconds in `environ` (default os.environ): a positive number, e.g. 600
    or 2.5; unset or empty: 1800. Raises ValueError naming the variable for any other value.

    >>> collective_timeout({"WSDA_DIST_TIMEOUT": "90"}), collective_timeout({}).seconds
    (datetime.timedelta(seconds=90), 1800)
    """
    raw = (os.environ if environ is None else environ).get(TIMEOUT_VARIABLE, "").strip()
    if not raw:
        return timedelta(seconds=DEFAULT_TIMEOUT_S)
    try:
        seconds = float(raw)
        if math.isfinite(seconds) and seconds > 0:
            return timedelta(seconds=seconds)
    except (ValueError, OverflowError):
        pass
    raise ValueError(f"{TIMEOUT_VARIABLE}={raw!r}: expected a positive number of seconds, how "
                     f"long a collective may wait for the slowest rank (unset: "
                     f"{DEFAULT_TIMEOUT_S})")


def job_token(*parts) -> str | None:
    """A line naming this torchrun job on this host (host name, launching process, rendezvous
    id and restart, master address and port) and `parts`: the same on the job's ranks of one
    host, another in the next job. None in a single process (WORLD_SIZE unset or 1), which
    has no other rank to share work with. For `once`."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    names = ("TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT", "MASTER_ADDR", "MASTER_PORT",
             "WORLD_SIZE")
    job = [socket.gethostname(), str(os.getppid()), *(os.environ.get(k, "") for k in names)]
    return hashlib.sha256("\n".join(job + [str(p) for p in parts]).encode()).hexdigest()


def once(lock_path: str | Path, work: Callable, token: str | None = None,
         read: Callable | None = None):
    """Run `work()` on the ranks one at a time under an exclusive flock of the file
    `lock_path` (created, with its folder, beside the cache; left in place). `work` computes a
    cache and writes it atomically, or reads it when it is there: the first rank to take the
    lock computes, and the others wait on the lock, never in a collective, so no process-group
    timeout ends their wait however long the work takes; then they find the cache. Uses no
    process group: works in a single process and before or after the group forms. Returns
    what `work` (or `read`) returns; an error in `work` releases the lock and propagates.

    token (job_token): written into the lock file after `work`; a rank that finds its token
    there calls `read()` (default `work`) outside the lock instead, so the ranks of one job
    read a cache that another computed at the same time, not in turn. Where the file system
    refuses flock (OSError), this warns and calls `work` unlocked: the ranks then compute at
    the same time, each writing atomically, still before any collective."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        return work()
    with os.fdopen(os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666), "r+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        except OSError as e:
            warnings.warn(f"{lock_path}: cannot be locked ({e}); each rank computes its cache "
                          f"itself", stacklevel=2)
            return work()
        try:
            if token is None or f.read().strip() != token:
                result = work()
                if token is not None:
                    f.seek(0)
                    f.truncate()
                    f.write(token + "\n")
                    f.flush()
                return result
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    return (read or work)()


def init_from_env(device: str = "auto", timeout: timedelta | None = None) -> str:
    """Join the process group when torchrun started us (WORLD_SIZE > 1), with `timeout`
    (default collective_timeout(), from WSDA_DIST_TIMEOUT) for every collective; returns the
    device this rank should use. Prepare any cache whose length grows with the data before
    this (`once`): from here on the ranks wait for each other at most `timeout`."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return device
    timeout = timeout or collective_timeout()
    use_cuda = torch.cuda.is_available() and device != "cpu"
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout)
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"
