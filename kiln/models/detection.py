"""kiln's detection model: a small FCOS that trains on a CPU from scratch — torchvision's FCOS (anchor-free, one
stage: no region proposals to learn first) on a small convolutional backbone with a feature pyramid. torchvision's
detection builders are named as model.name: torchvision:NAME."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from kiln.models.registry import register_model


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    """Halve the resolution, then a second 3x3 conv (BatchNorm, ReLU)."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True), nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class PyramidBackbone(nn.Module):
    """Stages of stride 2 each; the last `levels` stages' features joined top-down by torchvision's
    FeaturePyramidNetwork into maps of `out_channels` (what torchvision's detectors take as a backbone)."""

    def __init__(self, in_channels: int, channels: Sequence[int], levels: int, out_channels: int):
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        widths = list(channels)
        if not 1 <= levels <= len(widths):
            raise ValueError(f"levels must be between 1 and the number of stages ({len(widths)})")
        self.stages = nn.ModuleList([_stage(c_in, c_out) for c_in, c_out in zip([in_channels, *widths[:-1]], widths)])
        self.levels = levels
        self.fpn = FeaturePyramidNetwork(widths[-levels:], out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features[-self.levels:])))


@register_model
def fcos_small(  # noqa: PLR0913 — model.args: each hyperparameter by name, checked against this signature
        in_channels: int, num_classes: int, image_size: int | Sequence[int] = 128,
        channels: Sequence[int] = (16, 32, 64, 128), levels: int = 2, out_channels: int = 64, head_convs: int = 2,
        score_thresh: float = 0.05, nms_thresh: float = 0.6) -> nn.Module:
    """A small FCOS detector (~0.5M parameters): `channels` stages of stride 2, the last `levels` of them (strides 8
    and 16 by default) feeding the pyramid and the heads, `head_convs` convs in each head. FCOS learns an object at
    the level where a location's largest distance to the box's sides is 4 to 8 times the stride (the first level
    takes smaller ones too, the last larger ones). Called as torchvision's detectors are: with targets in training
    (returns its losses), without (returns detections scored at least `score_thresh`, after NMS at `nms_thresh`)."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSHead

    backbone = PyramidBackbone(in_channels, channels, levels, out_channels)
    strides = [2 ** (len(channels) - levels + 1 + i) for i in range(levels)]
    anchors = AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * levels)  # FCOS: one point per location
    head = FCOSHead(out_channels, 1, num_classes, num_convs=head_convs)
    side = [image_size, image_size] if isinstance(image_size, int) else list(image_size)
    # kiln's data is normalised already: the detector's own transform leaves pixels as they come and keeps the size
    return FCOS(backbone, num_classes, min_size=min(side), max_size=max(side), image_mean=[0.0] * in_channels,
                image_std=[1.0] * in_channels, anchor_generator=anchors, head=head, score_thresh=score_thresh,
                nms_thresh=nms_thresh)
