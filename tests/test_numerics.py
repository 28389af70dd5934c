"""The speed work keeps what it must: the bit-identical changes give the values the slower code
gave (FDA on the drawn images only, max(1).indices for argmax, no discriminator weight
gradients in the generator step), the run keys of every run trained before train.precision
and train.channels_last existed are unchanged, and those two options do what they say."""

import pytest
import torch

import wsda_lib.training.engine
from wsda_lib.core.config import override, preset
from wsda_lib.method.objective import Discriminators
from wsda_lib.method.pixel_adaptation import fourier_amplitude_swap, restyle_source
from wsda_lib.stages import build_model, run_config, stage_config
from wsda_lib.training import runs
from wsda_lib.training.engine import train_adaptation, train_supervised
from wsda_lib.training.evaluate import predict


def test_fda_on_the_drawn_images_equals_fda_on_the_whole_batch():
    torch.manual_seed(0)
    source, target = torch.rand(6, 3, 16, 32), torch.rand(6, 3, 16, 32)
    before = source.clone()
    for prob, seed in ((0.5, 1), (0.0, 2), (1.0, 3)):
        drawn = torch.rand(6, generator=torch.Generator().manual_seed(seed)) < prob
        # what restyle_source computed before: every image swapped, then the drawn ones kept
        expected = torch.where(drawn.view(-1, 1, 1, 1),
                               fourier_amplitude_swap(source, target, 0.1), source)
        got = restyle_source(source, target, prob, 0.1, torch.Generator().manual_seed(seed))
        assert torch.equal(got, expected)
    assert torch.equal(source, before)  # the batch given is not modified
    # targets of another size are resized to the source's first, as before
    wide = torch.rand(6, 3, 20, 40)
    drawn = torch.rand(6, generator=torch.Generator().manual_seed(4)) < 0.5
    resized = torch.nn.functional.interpolate(wide, size=(16, 32), mode="bilinear",
                                              align_corners=False)
    expected = torch.where(drawn.view(-1, 1, 1, 1),
                           fourier_amplitude_swap(source, resized, 0.1), source)
    assert torch.equal(restyle_source(source, wide, 0.5, 0.1, torch.Generator().manual_seed(4)),
                       expected)


def test_prediction_is_the_first_maximum_like_argmax():
    class Fixed(torch.nn.Module):
        def __init__(self, logits):
            super().__init__()
            self.logits = logits

        def forward(self, images):
            return self.logits, None

    tied = torch.zeros(2, 4, 3, 5)
    tied[:, 2:] = 1.0                              # classes 2 and 3 tie at every pixel
    assert predict(Fixed(tied), torch.zeros(2, 3, 3, 5)).unique().tolist() == [2]
    logits = torch.randn(4, 10, 8, 16)
    assert torch.equal(predict(Fixed(logits), torch.zeros(4, 3, 32, 64)),
                       torch.nn.functional.interpolate(logits, size=(32, 64), mode="bilinear",
                                                       align_corners=False).argmax(1))


def test_discriminators_get_weight_gradients_from_their_own_step_only(smoke_bench, monkeypatch):
    """One gradient per discriminator weight per step: the generator's backward pass runs
    through the discriminators to their inputs without computing their weight gradients."""
    calls = {}

    class Counted(Discriminators):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            for name, p in self.named_parameters():
                p.register_hook(lambda g, name=name: calls.__setitem__(name,
                                                                        calls.get(name, 0) + 1))

    monkeypatch.setattr(wsda_lib.training.engine, "Discriminators", Counted)
    cfg = stage_config("uda_category", override(preset("smoke"), **{"adapt.iterations": 3}))
    model = build_model(cfg, smoke_bench.class_set)
    train_adaptation(model, smoke_bench["source_train"], smoke_bench["target_train"],
                     smoke_bench["target_val"], cfg, 0, "cpu", progress=False)
    assert calls and set(calls.values()) == {3}
    assert any(name.startswith("output.") for name in calls)
    assert any(name.startswith("category.") for name in calls)


@pytest.mark.slow
def test_freezing_the_discriminators_in_the_generator_step_changes_no_weight(smoke_bench,
                                                                              monkeypatch):
    """The same run with the freeze turned into a no-op (the code before it) ends with the
    same network and discriminator weights, bit for bit."""
    cfg = stage_config("uda_pixel", override(preset("smoke"), **{"adapt.iterations": 4}))
    made = []

    class Kept(Discriminators):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(wsda_lib.training.engine, "Discriminators", Kept)

    def adapt():
        torch.manual_seed(0)
        model = build_model(cfg, smoke_bench.class_set)
        train_adaptation(model, smoke_bench["source_train"], smoke_bench["target_train"],
                         smoke_bench["target_val"], cfg, 0, "cpu", progress=False)
        return model.state_dict(), made[-1].state_dict()

    frozen = adapt()
    monkeypatch.setattr(Kept, "requires_grad_", lambda self, flag=True: self)
    kept = adapt()
    for a, b in zip(frozen, kept, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _without_benchmark(config: dict) -> dict:
    """A run's key config without the benchmark's fingerprint, which joined the keys when the
    benchmark was calibrated: every embedded run trained before then trains again (its
    images changed); what these tests pin is that the other fields keep their keys."""
    return {k: v for k, v in config.items() if k != "benchmark"}


def test_runs_trained_before_the_numerics_options_keep_their_keys():
    # the keys 019e931 (before train.precision, train.channels_last and adapt.restyle, which
    # leave keys alone at their defaults) gave these runs, on the images they were trained on
    key = lambda *a: runs.config_key(_without_benchmark(run_config(*a)))  # noqa: E731
    assert key("source_only", preset("smoke"), 0) == "cfadaa5e751d"
    assert key("uda_pixel", preset("default"), 1) == "8860342ae809"
    fast = override(preset("default"), **{"train.precision": "bf16"})
    assert run_config("uda_pixel", fast, 1)["train"]["precision"] == "bf16"
    assert runs.config_key(_without_benchmark(run_config("uda_pixel", fast, 1))) != \
        "8860342ae809"
    layout = override(preset("default"), **{"train.channels_last": True})
    assert run_config("source_only", layout, 0)["train"]["channels_last"] is True


def _conv_output_dtypes(model):
    seen = set()
    first = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    first.register_forward_hook(lambda m, i, o: seen.add((o.dtype, o.is_contiguous(
        memory_format=torch.channels_last) and not o.is_contiguous())))
    return seen


def test_bf16_and_channels_last_train_in_them_and_hand_back_a_plain_model(smoke_bench):
    cfg = override(preset("smoke"), **{"train.precision": "bf16", "train.channels_last": True,
                                       "train.iterations": 2, "adapt.iterations": 2,
                                       "train.eval_every": 10**6})
    model = build_model(cfg, smoke_bench.class_set)
    seen = _conv_output_dtypes(model)
    history = train_supervised(model, smoke_bench["source_train"], smoke_bench["target_val"],
                               cfg.train, 0, "cpu", progress=False)
    assert (torch.bfloat16, True) in seen             # training: bf16, NHWC
    assert all(torch.isfinite(torch.tensor(history["loss"])))
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in model.parameters())
    seen.clear()
    predict(model.eval(), smoke_bench["target_val"][0]["image"][None])
    assert seen == {(torch.float32, False)}            # evaluation: fp32, contiguous
    adapt = stage_config("uda_pixel", cfg)
    seen.clear()
    history = train_adaptation(model.train(), smoke_bench["source_train"],
                               smoke_bench["target_train"], smoke_bench["target_val"], adapt, 0,
                               "cpu", progress=False)
    assert (torch.bfloat16, True) in seen
    assert all(torch.isfinite(torch.tensor(history["disc"])))
    assert all(p.is_contiguous() for p in model.parameters())


def test_the_default_numerics_are_fp32_and_contiguous(smoke_bench):
    cfg = override(preset("smoke"), **{"train.iterations": 1, "train.eval_every": 10**6})
    assert (cfg.train.precision, cfg.train.channels_last) == ("fp32", False)
    model = build_model(cfg, smoke_bench.class_set)
    seen = _conv_output_dtypes(model)
    train_supervised(model, smoke_bench["source_train"], smoke_bench["target_val"], cfg.train,
                     0, "cpu", progress=False)
    assert seen == {(torch.float32, False)}
