"""`make bench`: the speed numbers quoted in the README, measured on this machine.

Speed targets live here, not in timed tests: a slow CI machine should not fail the suite.
"""

from __future__ import annotations

import json
import time

import torch

from .config import preset
from .data import synthetic
from .engine import segmentation_loss
from .stages import build_model


def generator_speed(n: int = 200) -> dict:
    out = {}
    for split in ("source_train", "target_train"):
        start = time.perf_counter()
        synthetic.generate_split(split, n, seed=0)
        out[split] = n / (time.perf_counter() - start)
    return out


def training_speed(iterations: int = 30, batch_size: int = 8) -> float:
    cfg = preset("default")
    model = build_model(cfg, 10).train()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    images = torch.rand(batch_size, 3, cfg.data.height, cfg.data.width)
    labels = torch.randint(0, 10, (batch_size, cfg.data.height, cfg.data.width))
    for it in range(iterations + 5):
        if it == 5:  # warm-up steps are not timed
            start = time.perf_counter()
        loss = segmentation_loss(model(images)[0], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return iterations * batch_size / (time.perf_counter() - start)


def main():
    torch.manual_seed(0)
    result = {
        "generator_images_per_second_one_core": generator_speed(),
        "training_images_per_second": training_speed(),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
