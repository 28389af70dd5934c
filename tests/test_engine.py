import pytest
import torch

from wsda_lib.core.config import override, preset
from wsda_lib.core.device import resolve_device
from wsda_lib.data.classes import EMBEDDED
from wsda_lib.method import pixel_adaptation
from wsda_lib.method.objective import segmentation_loss
from wsda_lib.stages import build_model, run_stage, stage_config
from wsda_lib.training.engine import train_adaptation, train_supervised
from wsda_lib.training.loop import poly_lr


def test_poly_schedule_by_hand():
    assert poly_lr(1.0, 0, 10, 0.9) == 1.0
    assert poly_lr(1.0, 5, 10, 0.9) == pytest.approx(0.5 ** 0.9)


def test_segmentation_loss_ignores_255():
    logits = torch.zeros(1, 2, 1, 1)
    logits[0, 0] = 2.0  # upsampled to 1x2: both pixels favour class 0
    labels = torch.tensor([[[0, 255]]])
    expected = -torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0]
    assert segmentation_loss(logits, labels).item() == pytest.approx(expected.item())


def test_training_is_deterministic_and_learns(smoke_bench):
    cfg = override(preset("smoke"), **{"train.iterations": 12, "train.eval_every": 6})
    weights, histories = [], []
    for _ in range(2):
        torch.manual_seed(123)  # model init; train_supervised reseeds the loop itself
        model = build_model(cfg, EMBEDDED)
        h = train_supervised(model, smoke_bench["source_train"], smoke_bench["source_val"],
                             cfg.train, seed=0, device="cpu", progress=False)
        weights.append(model.state_dict())
        histories.append(h)
    assert histories[0]["loss"] == histories[1]["loss"]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert histories[0]["val_iteration"] == [6, 12]
    assert histories[0]["loss"][-1] < histories[0]["loss"][0]


def test_run_stage_caches(smoke_bench, tmp_path):
    cfg = override(preset("smoke"), **{"train.iterations": 4, "train.eval_every": 4})
    first = run_stage("source_only", cfg, smoke_bench, 0, "cpu", tmp_path, progress=False)
    second = run_stage("source_only", cfg, smoke_bench, 0, "cpu", tmp_path, progress=False)
    assert not first.run.loaded and second.run.loaded
    assert second.metrics["target_test"]["miou"] == first.metrics["target_test"]["miou"]
    for k, v in first.model.state_dict().items():
        assert torch.equal(v, second.model.state_dict()[k])
    with pytest.raises(ValueError, match="unknown stage"):
        run_stage("magic", cfg, smoke_bench, 0, "cpu", tmp_path)


def test_device_errors_are_named():
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda': no CUDA GPU is available"):
            resolve_device("cuda")


def _scrambled(split):
    """A copy of a split whose labels and image-level labels are garbage."""
    import copy

    import numpy as np

    other = copy.copy(split)
    other.images, other.labels = split.images, np.full_like(split.labels, 3)
    other._weak_labels = np.ones_like(split.weak_labels)
    return other


def test_uda_never_reads_target_labels(smoke_bench):
    cfg = stage_config("uda_pixel", override(preset("smoke"), **{"adapt.iterations": 4,
                                                                 "train.eval_every": 100}))
    results = []
    for target in (smoke_bench["target_train"], _scrambled(smoke_bench["target_train"])):
        torch.manual_seed(0)
        model = build_model(cfg, EMBEDDED)
        h = train_adaptation(model, smoke_bench["source_train"], target,
                             smoke_bench["target_val"], cfg, seed=0, device="cpu",
                             progress=False)
        results.append((model.state_dict(), h))
    (w0, h0), (w1, h1) = results
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert h0["seg"] == h1["seg"] and h0["weak"] == h1["weak"] and h0["adv_cw"] == h1["adv_cw"]
    # only what is logged about the pseudo-weak labels against the GT image labels differs
    assert h0["pseudo_true"] != h1["pseudo_true"]
    assert h0["pseudo_labelled"] == h1["pseudo_labelled"]


def test_the_engine_refuses_switches_that_cannot_train(smoke_bench):
    cfg = override(preset("smoke"), **{"adapt.weak_labels": "none"})  # L_c still on
    model = build_model(cfg, EMBEDDED)
    with pytest.raises(ValueError, match="adapt.weak_loss and adapt.category_alignment"):
        train_adaptation(model, smoke_bench["source_train"], smoke_bench["target_train"],
                         smoke_bench["target_val"], cfg, seed=0, device="cpu", progress=False)


def test_translated_source_folder_replaces_the_fda_stand_in(smoke_bench, tmp_path,
                                                           monkeypatch):
    from PIL import Image

    from wsda_lib.data.files import DatasetError
    from wsda_lib.data.translated import TranslatedSource

    source = smoke_bench["source_train"]
    with pytest.raises(DatasetError, match="00000.png: translated image missing"):
        TranslatedSource(source, tmp_path)
    for i in range(len(source)):  # "translated" = the image at half the size, inverted
        Image.fromarray(255 - source.images[i][::2, ::2]).save(tmp_path / f"{i:05d}.png")
    item = TranslatedSource(source, tmp_path)[3]
    assert item["translated"].shape == item["image"].shape
    assert abs((item["translated"] + item["image"]).mean().item() - 1) < 0.05
    cfg = override(preset("smoke"), **{"adapt.iterations": 2, "train.eval_every": 100,
                                       "adapt.translated_source_dir": str(tmp_path)})


    def no_fda(*args, **kwargs):
        raise AssertionError("the FDA stand-in ran although translated images were given")

    monkeypatch.setattr(pixel_adaptation, "fourier_amplitude_swap", no_fda)
    result = run_stage("uda_pixel", cfg, smoke_bench, 0, "cpu", tmp_path / "runs",
                       progress=False)
    assert result.run.dir.name.startswith("uda_pixel") and result.metrics["history"]["seg"]


def test_one_adaptation_step_shows_each_term_on_one_batch(smoke_bench):
    """What a notebook does to show the objective at work: one source and one target batch
    through the network (forward_both), then generator_loss and discriminator_loss on the
    step's outputs; each term is a 0-d tensor, and the loss is their weighted sum."""
    from torch.utils.data import default_collate

    from wsda_lib.method.objective import (
        Discriminators,
        LossWeights,
        discriminator_loss,
        generator_loss,
    )
    from wsda_lib.training.engine import forward_both

    cfg = stage_config("uda_category", preset("smoke"))
    weights = LossWeights.from_config(cfg.adapt)
    model = build_model(cfg, EMBEDDED).train()
    discs = Discriminators(weights, EMBEDDED.num_classes, model.feature_dim,
                           cfg.adapt.output_disc_width)
    src = default_collate([smoke_bench["source_train"][i] for i in range(4)])
    tgt = default_collate([smoke_bench["target_train"][i] for i in range(4)])
    out, log = forward_both(model, src, tgt, cfg.adapt)
    loss, terms = generator_loss(weights, discs, out, dropout=0.0)
    assert set(terms) == {"seg", "weak", "adv", "adv_cw"}
    a = cfg.adapt
    assert loss.item() == pytest.approx(float(terms["seg"] + a.lambda_c * terms["weak"]
                                              + a.lambda_adv * terms["adv"]
                                              + a.lambda_cw * terms["adv_cw"]), rel=1e-5)
    assert 0 <= float(log["pseudo_precision"]) <= 100 and out.weak_t.shape == (4, 10)
    _, d_terms = discriminator_loss(discs, out)
    assert {"disc", "disc_accuracy", "disc_cw_accuracy"} == set(d_terms)


def test_an_adaptation_step_syncs_with_the_host_three_times(smoke_bench, monkeypatch):
    """On a GPU each copy of a value to the host waits for the queued work. The adaptation
    loop's steps make three: the finiteness checks of the generator's and the
    discriminators' losses before their optimiser steps, and L_seg's check for a batch with
    no labelled pixel; the logged terms and weak-label statistics stay on the device and are
    copied once per log interval (before this change: 20 per step). Counted by wrapping
    the tensor methods that copy to the host, outside torch's own code (Adam's step counter
    is a CPU tensor)."""
    import traceback

    cfg = override(stage_config("uda_pixel", preset("smoke")),
                   **{"adapt.iterations": 20, "train.eval_every": 1000})
    model = build_model(cfg, EMBEDDED)
    counts = {"loop": 0}
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            caller = traceback.extract_stack(limit=2)[0]
            if "wsda_lib" in caller.filename and counts.get("on"):
                counts["loop"] += 1
                counts[caller.name] = counts.get(caller.name, 0) + 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    from wsda_lib.training import loop as loop_module

    finish = loop_module.Loop.finish
    monkeypatch.setattr(loop_module.Loop, "finish",
                        lambda self, n: counts.update(on=False) or finish(self, n))
    monkeypatch.setattr(loop_module.Loop, "__iter__", _counting_iter(loop_module.Loop.__iter__,
                                                                     counts))
    train_adaptation(model, smoke_bench["source_train"], smoke_bench["target_train"],
                     smoke_bench["target_val"], cfg, 0, "cpu", progress=False, log_every=10)
    assert (counts["check_finite"], counts["segmentation_loss"]) == (2 * 20, 20)
    # one copy per log interval (.cpu(), then .tolist() of the copy, already on the host)
    assert counts["host_values"] == 2 * (20 // 10)
    assert not any(counts.get(f) for f in ("generator_loss", "discriminator_loss",
                                           "weak_label_log", "discriminator_accuracy",
                                           "presence_precision_recall", "forward_both"))
    # the rest is the last step's validation (learning curve): evaluate() and its bar
    assert counts["loop"] - 3 * 20 - 4 < 10


def _counting_iter(original, counts):
    def iterate(self):
        counts["on"] = True
        yield from original(self)
    return iterate


def test_tensorboard_curves_are_the_logged_history_and_change_no_key(tmp_path, capsys,
                                                                     monkeypatch):
    """train.tensorboard=True writes each term's mean per log interval, the learning rate and
    the validation mIoU into <run dir>/tensorboard, the very values metrics.json logs; the run
    key is the same as without it; without the package, the stage is refused before it
    trains, saying how to install the extra."""
    import json
    import sys

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from wsda_lib.cli import main

    args = ["train", "--preset", "smoke", "--stage", "adaptsegnet", "--run-dir", str(tmp_path),
            "--device", "cpu", "--set", "train.tensorboard=True"]
    assert main(args) == 0
    [run] = [p.parent for p in tmp_path.rglob("adaptsegnet-*/metrics.json")]
    history = json.loads((run / "metrics.json").read_text())["history"]
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    seg = [(e.step, e.value) for e in events.Scalars("train/seg")]
    assert seg == [(s, pytest.approx(v, rel=1e-6)) for s, v in
                   zip(history["iteration"], history["seg"], strict=True)]
    assert [e.value for e in events.Scalars("val/miou")] == pytest.approx(history["val_miou"])
    assert "train/lr" in events.Tags()["scalars"] and "train/adv" in events.Tags()["scalars"]
    assert main([*args[:-1], "train.tensorboard=False"]) == 0   # the same key: loaded
    assert len(list(tmp_path.rglob("adaptsegnet-*/metrics.json"))) == 1
    monkeypatch.setitem(sys.modules, "tensorboard", None)       # as if not installed
    capsys.readouterr()
    assert main([*args[:4], "uda_weak", *args[5:]]) == 2
    assert "pip install -e '.[tensorboard]'" in capsys.readouterr().err
    assert not list(tmp_path.rglob("uda_weak-*/checkpoint.pt"))


class _Decoded(torch.utils.data.Dataset):
    """A split read from files, as far as the stream can tell: each item made when asked,
    from its index alone (a worker process makes the same item)."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return {"image": torch.full((3, 2, 2), float(i)), "index": i}


@pytest.mark.slow
def test_workers_read_the_same_batches_in_the_same_order_and_resume_exactly():
    """train.workers > 0: a DataLoader's worker processes read the batches beside the step;
    they are the in-process stream's, epoch after epoch, and a stream restored from a state
    saved mid-epoch (a killed run's resume checkpoint) goes on with the same batches, with
    workers or without. The global RNG is left as the in-process stream leaves it."""
    from wsda_lib.training.engine import batches

    def take(stream, n):
        return [next(stream)["index"].tolist() for _ in range(n)]

    torch.manual_seed(0)
    plain = take(batches(_Decoded(), 3, seed=4, device="cpu"), 7)    # 3 batches an epoch
    after_plain = torch.rand(1)
    torch.manual_seed(0)
    stream = batches(_Decoded(), 3, seed=4, device="cpu", workers=2)
    assert take(stream, 7) == plain and torch.equal(torch.rand(1), after_plain)
    torch.manual_seed(0)
    first = batches(_Decoded(), 3, seed=4, device="cpu", workers=2)
    take(first, 4)                                                    # one batch into epoch 2
    state = first.state_dict()
    for workers in (2, 0):
        resumed = batches(_Decoded(), 3, seed=4, device="cpu", workers=workers)
        resumed.load_state_dict(state)
        assert take(resumed, 3) == plain[4:7], workers
