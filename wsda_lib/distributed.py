"""Multi-process training with PyTorch DistributedDataParallel, started by torchrun.

`torchrun --nproc_per_node=N -m wsda_lib.cli train ...` sets WORLD_SIZE, RANK and LOCAL_RANK;
`init_from_env` then joins the process group (NCCL on GPUs, gloo on CPUs). Each rank draws
its own disjoint share of every training split (a DistributedSampler per domain), evaluates a
disjoint shard of each evaluation split, and the confusion matrices are summed across ranks, so
every rank reports the same metrics as a single process would. Only rank 0 writes files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


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


def average_gradients(parameters) -> None:
    """Average the gradients of `parameters` over ranks in place (a no-op in one process).
    The adaptation loop uses this rather than DDP wrappers: it runs the network twice and
    the discriminators three times per step, which DDP's one-forward-one-backward hooks
    do not allow."""
    if is_distributed():
        world = world_size()
        for p in parameters:
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad /= world


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


def init_from_env(device: str = "auto") -> str:
    """Join the process group when torchrun started us (WORLD_SIZE > 1); returns the device
    this rank should use."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return device
    use_cuda = torch.cuda.is_available() and device != "cpu"
    dist.init_process_group("nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return "cpu"
