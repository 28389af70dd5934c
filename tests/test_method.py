"""Each equation of docs/method.md §3-7 against values computed by hand on tiny tensors
(B=2 images, C=3 classes, a 2x2 map)."""

import math

import numpy as np
import pytest
import torch

from wsda_lib.method.category_alignment import (
    CategoryDiscriminators,
    category_adversarial_loss,
    category_attention,
    category_discriminator_loss,
    category_features,
    discriminator_accuracy,
)
from wsda_lib.method.domain import SOURCE_LABEL, TARGET_LABEL, domain_bce
from wsda_lib.method.output_alignment import (
    OutputDiscriminator,
    output_adversarial_loss,
    output_discriminator_loss,
)
from wsda_lib.method.pixel_adaptation import fourier_amplitude_swap, restyle_source
from wsda_lib.method.point_supervision import point_loss, sample_points
from wsda_lib.method.self_training import (
    class_thresholds,
    filter_pseudo_labels,
    pseudo_label_quality,
)
from wsda_lib.method.weak_classification import (
    image_class_scores,
    pseudo_weak_labels,
    smooth_max_pool,
    weak_label_loss,
)

LN = math.log


def logits_2x3x2x2():
    a = torch.zeros(2, 3, 2, 2)
    a[0, 0] = torch.tensor([[0.0, LN(3)], [0.0, 0.0]])   # mean exp = (1+3+1+1)/4 = 1.5
    a[0, 1] = LN(2)                                       # constant ln 2
    a[0, 2] = 0.0                                         # constant 0
    a[1, 0] = -2.0                                        # constant -2
    a[1, 1] = torch.tensor([[0.0, 0.0], [0.0, LN(5)]])   # mean exp = 2
    a[1, 2] = 1.0
    return a


def test_domain_convention_is_source_0_target_1():
    assert (SOURCE_LABEL, TARGET_LABEL) == (0.0, 1.0)
    # a discriminator logit of +inf means "target"
    assert domain_bce(torch.tensor([20.0]), TARGET_LABEL) < 1e-6
    assert domain_bce(torch.tensor([20.0]), SOURCE_LABEL) > 19


def test_smooth_max_pool_by_hand():
    pooled = smooth_max_pool(logits_2x3x2x2())
    expected = [[LN(1.5), LN(2), 0.0], [-2.0, LN(2), 1.0]]
    assert torch.allclose(pooled, torch.tensor(expected), atol=1e-6)
    # r = 2: (1/2) log mean exp(2A); for A = [0, 0, 0, ln(5)/2], mean exp(2A) = 2
    a = torch.tensor([0.0, 0.0, 0.0, LN(5) / 2]).view(1, 1, 2, 2)
    assert smooth_max_pool(a, r=2).item() == pytest.approx(LN(2) / 2)
    # large r approaches the max, small r the mean
    assert smooth_max_pool(a, r=200).item() == pytest.approx(LN(5) / 2, abs=0.01)
    assert smooth_max_pool(a, r=1e-4).item() == pytest.approx(LN(5) / 8, abs=1e-3)
    with pytest.raises(ValueError, match="adapt.smooth_max_r=0: expected > 0"):
        smooth_max_pool(a, r=0)


def test_image_scores_and_weak_label_loss_by_hand():
    a = logits_2x3x2x2()
    p = image_class_scores(a)
    # sigmoid(ln 1.5) = 0.6, sigmoid(ln 2) = 2/3, sigmoid(0) = 1/2
    assert torch.allclose(p[0], torch.tensor([0.6, 2 / 3, 0.5]))
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    p1 = torch.sigmoid(torch.tensor([-2.0, LN(2), 1.0]))
    image0 = (-LN(0.6) - LN(1 / 3) - LN(0.5)) / 3
    image1 = (-LN(1 - p1[0]) - LN(p1[1]) - LN(p1[2])) / 3
    assert weak_label_loss(a, y).item() == pytest.approx((image0 + image1) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="do not match"):
        weak_label_loss(a, y[:, :2])


def test_pseudo_weak_labels_threshold_0_2():
    a = logits_2x3x2x2()
    # image 1, class 0: sigmoid(-2) = 0.119 < 0.2 -> absent; every other score > 0.5
    assert pseudo_weak_labels(a).tolist() == [[1, 1, 1], [0, 1, 1]]
    assert pseudo_weak_labels(a, threshold=0.62).tolist() == [[0, 1, 0], [0, 1, 1]]
    assert not pseudo_weak_labels(a.requires_grad_()).requires_grad


def test_category_attention_and_features_by_hand():
    a = logits_2x3x2x2()
    alpha = category_attention(a)                                   # (2, 3, 4)
    assert torch.allclose(alpha[0, 0], torch.tensor([1 / 6, 1 / 2, 1 / 6, 1 / 6]))
    assert torch.allclose(alpha.sum(-1), torch.ones(2, 3))
    x = torch.zeros(2, 2, 2, 2)                                     # D = 2
    x[:, 0] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    x[:, 1] = torch.tensor([[0.0, 0.0], [0.0, 6.0]])
    a.requires_grad_()
    x.requires_grad_()
    f = category_features(a, x)                                     # (2, 3, 2)
    assert f.shape == (2, 3, 2)
    # F = Σ α·X: (1/6·1 + 1/2·2 + 1/6·3 + 1/6·4, 1/6·6) = (14/6, 1)
    assert torch.allclose(f[0, 0], torch.tensor([14 / 6, 1.0]))
    assert torch.allclose(f[0, 1], torch.tensor([2.5, 1.5]))       # uniform attention: the mean
    f.sum().backward()
    assert a.grad is None and x.grad is not None                    # attention is detached


def test_batched_category_discriminators_equal_separate_mlps():
    torch.manual_seed(0)
    disc = CategoryDiscriminators(num_classes=3, dim=4, hidden=5)
    feats = torch.randn(2, 3, 4)
    out = disc(feats)
    assert out.shape == (2, 3)
    for c in range(3):
        h = torch.relu(feats[:, c] @ disc.w1[c] + disc.b1[c])
        h = torch.relu(h @ disc.w2[c] + disc.b2[c])
        assert torch.allclose(out[:, c], (h @ disc.w3[c] + disc.b3[c]).squeeze(1), atol=1e-6)


def test_category_losses_use_present_classes_only():
    d = torch.tensor([[0.0, LN(3), 5.0], [7.0, -7.0, 9.0]])
    present = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    # BCE(0, label 0) = ln 2; BCE(ln 3, label 0) = -ln(1 - 3/4) = ln 4
    assert category_adversarial_loss(d, present).item() == pytest.approx((LN(2) + LN(4)) / 2)
    assert category_adversarial_loss(d, torch.zeros(2, 3)).item() == 0
    d_src = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    d_tgt = torch.tensor([[LN(3), 0.0, 0.0], [0.0, 0.0, 0.0]])
    p_src = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    p_tgt = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    # ½ BCE(0, 0) + ½ BCE(ln 3, 1) = ½ ln 2 + ½ ln(4/3)
    expected = 0.5 * LN(2) + 0.5 * LN(4 / 3)
    assert category_discriminator_loss(d_src, p_src, d_tgt, p_tgt).item() == pytest.approx(expected)
    assert discriminator_accuracy(torch.tensor([[-1.0]]), torch.ones(1, 1),
                                  torch.tensor([[-1.0]]), torch.ones(1, 1)).item() == 0.5


def test_output_discriminator_shape_and_losses():
    disc = OutputDiscriminator(num_classes=3, ndf=4)
    widths = [m.out_channels for m in disc.net if isinstance(m, torch.nn.Conv2d)]
    assert widths == [4, 8, 16, 32, 1]
    assert disc(torch.rand(2, 3, 64, 128)).shape == (2, 1, 2, 4)
    zeros = torch.zeros(2, 1, 2, 4)
    assert output_adversarial_loss(zeros).item() == pytest.approx(LN(2))
    # ½ BCE(+big, 0) + ½ BCE(-big, 1) is large; ½ BCE(-big, 0) + ½ BCE(+big, 1) is ~0
    assert output_discriminator_loss(zeros - 20, zeros + 20).item() < 1e-6
    assert output_discriminator_loss(zeros + 20, zeros - 20).item() > 19


def test_point_loss_by_hand():
    logits = torch.zeros(1, 2, 1, 1)
    logits[0, 0] = LN(3)                    # softmax = (3/4, 1/4) everywhere
    points = torch.tensor([[0, 1]])         # class 0 clicked at pixel 0, class 1 at pixel 1
    assert point_loss(logits, points, (1, 2)).item() == pytest.approx((LN(4 / 3) + LN(4)) / 2)
    assert point_loss(logits, torch.tensor([[0, -1]]), (1, 2)).item() == pytest.approx(LN(4 / 3))
    assert point_loss(logits, torch.tensor([[-1, -1]]), (1, 2)).item() == 0


def test_sample_points_lie_on_their_class():
    labels = np.array([[[0, 0, 1], [2, 2, 2]]], np.uint8)
    weak = np.array([[1, 0, 1]])
    points = sample_points(labels, weak, seed=0)
    assert points[0, 1] == -1
    flat = labels.reshape(-1)
    assert flat[points[0, 0]] == 0 and flat[points[0, 2]] == 2
    assert np.array_equal(points, sample_points(labels, weak, seed=0))


def test_fda_swaps_the_global_colour_and_keeps_content():
    torch.manual_seed(0)
    src = 0.3 + 0.2 * torch.rand(1, 3, 16, 32)
    tgt = 0.6 + 0.1 * torch.rand(1, 3, 16, 32)
    with pytest.raises(ValueError, match=r"adapt.fda_beta=0: expected in \(0, 0.5\]"):
        fourier_amplitude_swap(src, tgt, beta=0)
    out = fourier_amplitude_swap(src, tgt, beta=0.1)
    # the DC term (the mean colour) is the target's; the high frequencies are the source's
    assert torch.allclose(out.mean((2, 3)), tgt.mean((2, 3)), atol=1e-4)
    assert torch.allclose(out - out.mean((2, 3), keepdim=True),
                          src - src.mean((2, 3), keepdim=True), atol=0.05)
    with pytest.raises(ValueError, match="same shape"):
        fourier_amplitude_swap(src, tgt[..., :8])


@pytest.mark.parametrize("size", [(16, 32), (64, 128)])
def test_fda_at_a_small_beta_still_swaps_the_dc_term(size):
    """FDA's published beta = 0.01 floors the window's half-size to 0 at these sizes; FDA's
    own rule then swaps the 1x1 window, the DC term: the mean colour becomes the target's
    (the image was once returned unchanged, and 'pixel adaptation' did nothing)."""
    torch.manual_seed(0)
    src = 0.3 + 0.2 * torch.rand(2, 3, *size)
    tgt = 0.6 + 0.1 * torch.rand(2, 3, *size)
    out = fourier_amplitude_swap(src, tgt, beta=0.01)
    assert torch.allclose(out.mean((2, 3)), tgt.mean((2, 3)), atol=1e-4)
    assert torch.allclose(out - out.mean((2, 3), keepdim=True),
                          src - src.mean((2, 3), keepdim=True), atol=1e-4)
    restyled = restyle_source(src, tgt, prob=1.0, beta=0.01,
                              generator=torch.Generator().manual_seed(0))
    assert torch.equal(restyled, out)
    # the largest beta the config allows is one the function takes
    assert fourier_amplitude_swap(src, tgt, beta=0.5).shape == src.shape


def test_self_training_thresholds_filter_and_quality():
    conf = torch.tensor([[[0.9, 0.5], [0.7, 0.95]]])
    pred = torch.tensor([[[0, 0], [1, 1]]])
    thr = class_thresholds(conf, pred, num_classes=3, quantile=0.5, cap=0.9)
    # class 0: median of (0.9, 0.5) = 0.7; class 1: median of (0.7, 0.95) = 0.825; class 2: cap
    assert torch.allclose(thr, torch.tensor([0.7, 0.825, 0.9]))
    weak = torch.tensor([[1.0, 0.0, 1.0]])             # class 1 is absent from the image
    pseudo = filter_pseudo_labels(conf, pred, thr, weak)
    assert pseudo.tolist() == [[[0, 255], [255, 255]]]
    truth = np.array([[[0, 1], [1, 255]]])
    assert pseudo_label_quality(pseudo, truth) == {"precision": 100.0, "coverage": 100 / 3}
