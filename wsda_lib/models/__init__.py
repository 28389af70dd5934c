"""Networks: DeepLab-v2 (and, with the method, its discriminators)."""

from wsda_lib.models.deeplab import DeepLabV2, build_deeplab

__all__ = ["DeepLabV2", "build_deeplab"]
