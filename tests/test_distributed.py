"""core/distributed.py: the gradient average of the adaptation loop under torchrun, bucketed
as DDP buckets it, gives what one all_reduce per tensor gives, in fewer collectives."""

import json
import os

import pytest
import torch

from wsda_lib.core.distributed import _buckets


def test_buckets_keep_the_order_and_cut_by_size_and_dtype():
    f32 = [torch.zeros(4) for _ in range(5)]         # 16 bytes each
    mixed = [*f32[:2], torch.zeros(4, dtype=torch.float64), *f32[2:]]
    cut = _buckets(mixed, bucket_bytes=40)
    assert [[x.dtype for x in b] for b in cut] == [[torch.float32] * 2, [torch.float64],
                                                   [torch.float32] * 2, [torch.float32]]
    assert [x for b in cut for x in b] == mixed                      # the same tensors, in order
    assert len(_buckets([torch.zeros(100)], bucket_bytes=8)) == 1    # too large: its own bucket


def _average(rank, world, path):
    """Worker: two ranks with different gradients average them, bucketed and per tensor."""
    import torch.distributed as dist

    from wsda_lib.core import distributed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["WSDA_TEST_PORT"])
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(rank)
    params = [torch.nn.Parameter(torch.zeros(s)) for s in (7, (3, 5), 11, 2)]
    for p in params:
        p.grad = torch.randn(p.shape) / 3
    expected = [p.grad.clone() for p in params]
    for g in expected:                    # one all_reduce per tensor, as before the buckets
        dist.all_reduce(g)
        g /= world
    calls = distributed.average_gradients(params, bucket_bytes=4 * 20)
    same = all(torch.equal(p.grad, e) for p, e in zip(params, expected, strict=True))
    (path / f"rank{rank}.json").write_text(json.dumps({"calls": calls, "same": same}))
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_average_gradients_in_buckets_as_per_tensor(tmp_path, gloo_port):
    import torch.multiprocessing as mp

    mp.spawn(_average, args=(2, tmp_path), nprocs=2)
    for rank in (0, 1):
        # 80-byte buckets of 28, 60, 44 and 8 bytes: [7], [3x5], [11, 2], 3 collectives, not 4
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == {"calls": 3,
                                                                           "same": True}
