"""DeepLab-v2: a dilated ResNet backbone at output stride 8 and an ASPP classifier.

`DeepLabV2(x)` returns `(logits, features)`: logits A (B, C, H/8, W/8) and the backbone's last
feature map X (B, D, H/8, W/8), which the category-wise alignment pools (docs/method.md §5).

Two backbones sit behind one constructor, `build_deeplab`:
* "resnet101" / "resnet50": torchvision ResNets with `replace_stride_with_dilation`, for paper
  scale; weights come only from a local checkpoint path, never from a download.
* "slim": the ResNet-18 layout (BasicBlocks, 2-2-2-2) with a configurable base width, for a CPU.

Images enter as floats in [0, 1]; the model normalises them itself with ImageNet statistics, so
that datasets, plots and the model agree on one image format.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from wsda_lib.core.config import check_range

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
    """The ResNet-18 block, with a dilation so later stages keep their resolution."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class SlimResNet(nn.Module):
    """ResNet-18 layout at output stride 8: layer3 and layer4 dilate (2, 4) instead of striding."""

    def __init__(self, base_width: int = 16):
        super().__init__()
        w = base_width
        self.stem = nn.Sequential(
            nn.Conv2d(3, w, 7, 2, 3, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )                                                                    # stride 4
        self.layer1 = nn.Sequential(BasicBlock(w, w), BasicBlock(w, w))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, stride=2), BasicBlock(2 * w, 2 * w))  # 8
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, dilation=2),
                                    BasicBlock(4 * w, 4 * w, dilation=2))
        self.layer4 = nn.Sequential(BasicBlock(4 * w, 8 * w, dilation=4),
                                    BasicBlock(8 * w, 8 * w, dilation=4))
        self.out_channels = 8 * w

    def forward(self, x):
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class TorchvisionResNet(nn.Module):
    """torchvision ResNet-50/101 with strides 2 of layer3/layer4 turned into dilations 2/4."""

    def __init__(self, depth: int):
        super().__init__()
        make = {50: torchvision.models.resnet50, 101: torchvision.models.resnet101}[depth]
        net = make(weights=None, replace_stride_with_dilation=[False, True, True])
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1, net.layer2, net.layer3, net.layer4)
        self.out_channels = 2048

    def forward(self, x):
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class ASPP(nn.Module):
    """DeepLab-v2 classifier: parallel dilated 3x3 convs whose logits are summed.

    legacy=True reproduces the inherited AdaptSegNet quirk (docs/method.md §8): a `return` inside
    the loop summed only the first two branches, so only dilations 6 and 12 counted.
    """

    def __init__(self, c_in: int, num_classes: int, rates=(6, 12, 18, 24), legacy: bool = False):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(c_in, num_classes, 3, padding=r, dilation=r) for r in rates)
        for conv in self.branches:
            nn.init.normal_(conv.weight, 0, 0.01)
            nn.init.zeros_(conv.bias)
        self.legacy = legacy

    def forward(self, x):
        used = self.branches[:2] if self.legacy else self.branches
        return sum(branch(x) for branch in used)


class DeepLabV2(nn.Module):
    def __init__(self, backbone: nn.Module, num_classes: int, aspp_rates=(6, 12, 18, 24),
                 legacy_aspp: bool = False, freeze_bn: bool = False,
                 freeze_bn_affine: bool = False):
        super().__init__()
        self.backbone = backbone
        self.classifier = ASPP(backbone.out_channels, num_classes, aspp_rates, legacy_aspp)
        self.feature_dim = backbone.out_channels
        self.freeze_bn = freeze_bn
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        # freeze_bn: BatchNorm in eval mode (running statistics) with its affine weights
        # frozen. freeze_bn_affine: only the affine weights frozen, statistics in training
        # mode (per batch, running statistics updated): the released code's BatchNorm.
        if freeze_bn or freeze_bn_affine:
            for m in self.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.requires_grad_(False)
                    m.bias.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_bn:  # frozen BN keeps its running statistics in training too
            for m in self.backbone.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
        return self

    def forward(self, images):                       # images: (B, 3, H, W) in [0, 1]
        x = (images - self.mean) / self.std
        features = self.backbone(x)                  # (B, D, H/8, W/8)
        logits = self.classifier(features)           # (B, C, H/8, W/8)
        return logits, features

    def parameter_groups(self, lr: float, head_lr_mult: float = 10.0):
        """Backbone at lr, classifier at head_lr_mult * lr (the paper's 10x head)."""
        backbone = [p for p in self.backbone.parameters() if p.requires_grad]
        return [{"params": backbone, "lr": lr, "lr_mult": 1.0},
                {"params": list(self.classifier.parameters()), "lr": lr * head_lr_mult,
                 "lr_mult": head_lr_mult}]


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load a local backbone checkpoint (e.g. ImageNet ResNet-101); never downloads."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights {path}: no such file "
                                f"(expected a local PyTorch state dict; nothing is downloaded)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        if "Weights only load failed" in str(e):  # objects besides tensors and plain values
            raise ValueError(f"backbone weights {path}: the file holds pickled Python objects "
                             f"besides tensors (e.g. numpy values), which wsda does not load "
                             f"(they can run code); re-save it with only the state dict's "
                             f"tensors") from None
        raise ValueError(f"backbone weights {path}: could not be read as a PyTorch state "
                         f"dict ({type(e).__name__}: {first})") from None
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    # torchvision names the stem conv1/bn1; ours groups them as stem.0/stem.1.
    rename = {"conv1.": "stem.0.", "bn1.": "stem.1."}
    state = {next((new + k[len(old):] for old, new in rename.items() if k.startswith(old)), k): v
             for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = backbone.load_state_dict(state, strict=False)
    if missing:
        raise ValueError(f"backbone weights {path}: {len(missing)} parameters missing, "
                         f"e.g. {missing[:3]}; expected a ResNet state dict matching the backbone")
    if unexpected:
        raise ValueError(f"backbone weights {path}: {len(unexpected)} unexpected keys, "
                         f"e.g. {unexpected[:3]}")


def build_deeplab(num_classes: int, backbone: str = "slim", base_width: int = 16,
                  aspp_rates=(6, 12, 18, 24), legacy_aspp: bool = False,
                  freeze_bn: bool = False, backbone_weights: str | None = None,
                  freeze_bn_affine: bool = False) -> DeepLabV2:
    """DeepLab-v2 with the named backbone: "slim" (CPU), "resnet50" or "resnet101" (paper)."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    check_range("model.backbone", backbone)
    if backbone == "slim":
        net = SlimResNet(check_range("model.base_width", base_width))
    else:
        net = TorchvisionResNet(int(backbone[len("resnet"):]))
    if backbone_weights:
        load_backbone_weights(net, backbone_weights)
    return DeepLabV2(net, num_classes, tuple(aspp_rates), legacy_aspp, freeze_bn,
                     freeze_bn_affine)
