"""The full objective (docs/method.md §7) against values computed by hand: with all-zero
logits every softmax, sigmoid and BCE term is log 2, so the total is log 2 times the sum of
the weights that are on."""

import math

import pytest
import torch

from wsda_lib.core.config import AdaptConfig
from wsda_lib.method.objective import (
    Discriminators,
    LossWeights,
    StepOutputs,
    discriminator_loss,
    generator_loss,
    segmentation_loss,
)
from wsda_lib.method.pixel_adaptation import restyle_source

LN2 = math.log(2)


class Zeros(torch.nn.Module):
    """A discriminator that cannot tell: logit 0 for everything (output shape (B, *shape))."""

    def __init__(self, *shape):
        super().__init__()
        self.shape, self.p = shape, torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.zeros(len(x), *self.shape) + 0 * self.p


def _batch():
    logits_s = torch.zeros(1, 2, 2, 2, requires_grad=True)
    labels_s = torch.tensor([[[0, 1], [255, 1]]])
    logits_t = torch.zeros(1, 2, 2, 2, requires_grad=True)
    feats = torch.ones(1, 3, 2, 2)
    return logits_s, labels_s, logits_t, feats


def _outputs(logits_s, labels_s, logits_t, feats, size_t, **more):
    return StepOutputs(logits_s, feats, labels_s, (2, 2), logits_t, feats, size_t, **more)


def _discs(weights):
    discs = Discriminators(weights, num_classes=2, feature_dim=3, output_width=4)
    discs.output = Zeros(1, 1, 1) if weights.lambda_adv else None
    discs.category = Zeros(2) if weights.lambda_cw else None
    return discs


def test_segmentation_loss_by_hand():
    logits = torch.zeros(1, 2, 1, 1)
    logits[0, 0] = 2.0  # upsampled to 1x2: both pixels favour class 0; 255 is ignored
    expected = -torch.log_softmax(torch.tensor([2.0, 0.0]), 0)[0]
    assert segmentation_loss(logits, torch.tensor([[[0, 255]]])).item() == pytest.approx(
        expected.item())


def test_generator_loss_sums_the_weighted_terms():
    w = LossWeights(lambda_adv=0.1, lambda_c=0.5, lambda_cw=0.01, lambda_point=2.0,
                    lambda_st=3.0)
    logits_s, labels_s, logits_t, feats = _batch()
    out = _outputs(logits_s, labels_s, logits_t, feats, (2, 2),
                   weak_t=torch.tensor([[1.0, 0.0]]), points_t=torch.tensor([[0, -1]]),
                   pseudo_t=torch.tensor([[[1, 1], [0, 255]]]))
    loss, terms = generator_loss(w, _discs(w), out, dropout=0.0)
    assert loss.item() == pytest.approx(LN2 * (1 + 0.1 + 0.5 + 0.01 + 2.0 + 3.0))
    assert all(v.dim() == 0 and not v.requires_grad for v in terms.values())  # on the device
    assert {k: float(v) for k, v in terms.items()} == pytest.approx({k: LN2 for k in
                                   ("seg", "weak", "adv", "adv_cw", "point", "self_training")})
    loss.backward()
    assert logits_t.grad is not None and logits_s.grad is not None


def test_a_term_that_is_off_is_not_computed():
    w = LossWeights()  # only L_seg
    logits_s, labels_s, logits_t, feats = _batch()
    out = _outputs(logits_s, labels_s, logits_t, feats, (2, 2))
    loss, terms = generator_loss(w, _discs(w), out)
    assert loss.item() == pytest.approx(LN2) and set(terms) == {"seg"}
    assert discriminator_loss(_discs(w), out) == (None, {})


def test_discriminator_loss_and_accuracy_by_hand():
    w = LossWeights(lambda_adv=1.0, lambda_cw=1.0)
    logits_s, _, logits_t, feats = _batch()
    weak_s, weak_t = torch.tensor([[1.0, 1.0]]), torch.tensor([[1.0, 0.0]])
    out = _outputs(logits_s, None, logits_t, feats, (2, 2), weak_s=weak_s, weak_t=weak_t)
    loss, terms = discriminator_loss(_discs(w), out)
    # ½(log 2 + log 2) for each discriminator
    assert loss.item() == pytest.approx(2 * LN2) and float(terms["disc"]) == pytest.approx(2 * LN2)
    # logit 0 predicts domain label 0 = source: the 2 source pairs are right, the 1 target wrong
    assert float(terms["disc_cw_accuracy"]) == pytest.approx(2 / 3)


def test_points_and_output_space_use_the_target_size():
    """Points index the target image (H', W'), which at paper scale differs from the
    source's: a point on the last target pixel must be scored there."""
    w = LossWeights(lambda_point=1.0)
    logits_s, labels_s, _, feats = _batch()
    logits_t = torch.zeros(1, 2, 2, 3)
    logits_t[0, 1, 1, 2] = 5.0        # class 1 only at the bottom-right logit
    out = _outputs(logits_s, labels_s, logits_t, feats, (4, 6),
                   points_t=torch.tensor([[-1, 4 * 6 - 1]]))
    _, terms = generator_loss(w, _discs(w), out)
    expected = -torch.log_softmax(torch.tensor([0.0, 5.0]), 0)[1].item()
    assert float(terms["point"]) == pytest.approx(expected, abs=1e-5)


def test_weights_follow_the_config_switches():
    paper = AdaptConfig()  # the paper's UDA recipe: every term of §7 on, pseudo-weak labels
    w = LossWeights.from_config(paper)
    assert (w.lambda_adv, w.lambda_c, w.lambda_cw, w.lambda_point, w.lambda_st) == \
        (0.001, 0.01, 0.001, 0, 0)
    human = LossWeights.from_config(AdaptConfig(weak_labels="point"))
    assert (human.lambda_c, human.lambda_point) == (0.2, 1.0)
    off = LossWeights.from_config(AdaptConfig(weak_labels="none", weak_loss=False,
                                              category_alignment=False))
    assert (off.lambda_adv, off.lambda_c, off.lambda_cw) == (0.001, 0, 0)
    discs = Discriminators(off, num_classes=3, feature_dim=4, output_width=4)
    assert discs.output is not None and discs.category is None


def test_restyle_source_uses_translated_images_and_one_draw_per_image():
    source, target = torch.zeros(4, 3, 8, 8), torch.ones(4, 3, 8, 8)
    translated = torch.full((4, 3, 8, 8), 0.5)
    g, reference = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    out = restyle_source(source, target, 1.0, 0.1, g, translated)
    assert torch.equal(out, translated)
    reference.manual_seed(0), torch.rand(4, generator=reference)
    assert torch.equal(torch.rand(1, generator=g), torch.rand(1, generator=reference))
    assert torch.equal(restyle_source(source, target, 0.0, 0.1, g), source)
    with pytest.raises(ValueError, match="fda_prob"):
        restyle_source(source, target, 1.5, 0.1, g)
