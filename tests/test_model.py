import pytest
import torch

from wsda_lib.models import build_deeplab
from wsda_lib.models.deeplab import ASPP, load_backbone_weights


def test_slim_output_stride_8_and_feature_map():
    model = build_deeplab(10, "slim", base_width=8).eval()
    logits, features = model(torch.rand(2, 3, 64, 128))
    assert logits.shape == (2, 10, 8, 16)
    assert features.shape == (2, 64, 8, 16) and model.feature_dim == 64


def test_resnet101_is_dilated_to_stride_8():
    model = build_deeplab(19, "resnet101").eval()
    with torch.no_grad():
        logits, features = model(torch.rand(1, 3, 64, 64))
    assert logits.shape == (1, 19, 8, 8) and features.shape == (1, 2048, 8, 8)


def test_legacy_aspp_sums_only_the_first_two_branches():
    torch.manual_seed(0)
    aspp = ASPP(4, 3, rates=(1, 2, 3, 4))
    x = torch.rand(1, 4, 6, 6)
    expected = aspp.branches[0](x) + aspp.branches[1](x)
    aspp.legacy = True
    assert torch.allclose(aspp(x), expected)
    aspp.legacy = False
    assert torch.allclose(aspp(x), sum(b(x) for b in aspp.branches))


def test_frozen_bn_keeps_running_stats_in_train_mode():
    model = build_deeplab(3, "slim", base_width=4, freeze_bn=True).train()
    bn = model.backbone.stem[1]
    before = bn.running_mean.clone()
    model(torch.rand(2, 3, 32, 32))
    assert torch.equal(bn.running_mean, before) and not bn.weight.requires_grad


def test_head_gets_ten_times_the_learning_rate():
    groups = build_deeplab(3, "slim", base_width=4).parameter_groups(1e-3)
    assert [g["lr"] for g in groups] == [1e-3, pytest.approx(1e-2)]


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="model.backbone=.vgg.: expected one of"):
        build_deeplab(3, "vgg")
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        build_deeplab(3, "resnet50", backbone_weights=str(tmp_path / "missing.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="bad.pth"):
        load_backbone_weights(torch.nn.Linear(1, 1), bad)
