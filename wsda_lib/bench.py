"""`make bench`: the speed numbers quoted in the README, measured on this machine.

Speed targets live here, not in timed tests: a slow CI machine should not fail the suite.
"""

from __future__ import annotations

import json
import time

import torch

from .config import override, preset
from .data import synthetic
from .data.classes import EMBEDDED
from .data.splits import InMemorySplit
from .data.weak_labels import class_pixel_counts, typical_areas
from .engine import train_adaptation, train_supervised
from .method.category_alignment import CategoryDiscriminators
from .method.objective import segmentation_loss
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
    model = build_model(cfg, EMBEDDED).train()
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


def category_discriminator_speed(num_classes: int, dim: int, batch: int, repeats: int = 20):
    """Forward + backward of the C category discriminators: the batched einsum of
    CategoryDiscriminators against a Python loop over C separate nn.Sequential MLPs (the
    released code's layout). Returns milliseconds per call for both."""
    batched = CategoryDiscriminators(num_classes, dim)
    looped = torch.nn.ModuleList(
        torch.nn.Sequential(torch.nn.Linear(dim, dim), torch.nn.ReLU(),
                            torch.nn.Linear(dim, dim), torch.nn.ReLU(), torch.nn.Linear(dim, 1))
        for _ in range(num_classes))
    feats = torch.randn(batch, num_classes, dim)

    def run_batched():
        batched(feats).sum().backward()

    def run_looped():
        torch.stack([d(feats[:, c]) for c, d in enumerate(looped)], 1).sum().backward()

    out = {}
    for name, fn in (("batched_ms", run_batched), ("python_loop_ms", run_looped)):
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        out[name] = 1000 * (time.perf_counter() - start) / repeats
    return out


def adaptation_step_cost(iterations: int = 20) -> dict:
    """Milliseconds per step of source-only training (one batch) and of the full UDA
    adaptation step (source and target batches, every term and both discriminators)."""
    cfg = override(preset("default"), **{"train.iterations": iterations,
                                         "adapt.iterations": iterations,
                                         "train.eval_every": 10 ** 6,
                                         "adapt.pixel_adaptation": True})
    images, labels = synthetic.generate_split("source_train", 64, seed=0)
    typical = typical_areas(class_pixel_counts(labels, EMBEDDED.num_classes), labels[0].size)
    split = InMemorySplit("bench", images, labels, EMBEDDED, typical)
    tiny = InMemorySplit("bench_val", images[:1], labels[:1], EMBEDDED, typical)
    model = build_model(cfg, EMBEDDED)
    start = time.perf_counter()
    train_supervised(model, split, tiny, cfg.train, 0, "cpu", progress=False)
    supervised = 1000 * (time.perf_counter() - start) / iterations
    start = time.perf_counter()
    train_adaptation(model, split, split, tiny, cfg, 0, "cpu", progress=False)
    adaptation = 1000 * (time.perf_counter() - start) / iterations
    return {"source_only_step_ms": supervised, "uda_step_ms": adaptation,
            "ratio": adaptation / supervised}


def main():
    torch.manual_seed(0)
    result = {
        "generator_images_per_second_one_core": generator_speed(),
        "training_images_per_second": training_speed(),
        "adaptation_step": adaptation_step_cost(),
        "category_discriminators_embedded_C10_D128_B8": category_discriminator_speed(10, 128, 8),
        "category_discriminators_paper_C19_D2048_B1": category_discriminator_speed(19, 2048, 1,
                                                                                   repeats=5),
        "torch_threads": torch.get_num_threads(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
