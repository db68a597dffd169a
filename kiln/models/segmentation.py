"""kiln's segmentation model: a small U-Net that trains on a CPU (torchvision's segmentation builders and
segmentation-models-pytorch are named as model.name: torchvision:NAME / smp:NAME)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kiln.models.registry import register_model


def _double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """Encoder stages of two 3x3 convs and a 2x2 max-pool; a decoder that upsamples (transposed conv), joins the
    encoder's features of the same size and applies two 3x3 convs; a 1x1 conv to class scores (B, C, H, W) at the
    input's size (H and W need not divide by 2^stages: the upsampled features are padded to the skip's size)."""

    def __init__(self, in_channels: int, num_classes: int, channels: Sequence[int] = (16, 32, 64)):
        super().__init__()
        if not channels:
            raise ValueError("channels must list at least one stage width")
        widths = list(channels)
        self.down = nn.ModuleList([_double_conv(c_in, c_out) for c_in, c_out in zip([in_channels, *widths[:-1]], widths)])
        self.pool = nn.MaxPool2d(2)
        self.bottom = _double_conv(widths[-1], 2 * widths[-1])
        ups = list(reversed(widths))
        self.up = nn.ModuleList([nn.ConvTranspose2d(2 * c, c, 2, stride=2) for c in ups])
        self.merge = nn.ModuleList([_double_conv(2 * c, c) for c in ups])
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            x = up(x)
            dh, dw = skip.shape[2] - x.shape[2], skip.shape[3] - x.shape[3]
            x = nn.functional.pad(x, (0, dw, 0, dh))
            x = merge(torch.cat([skip, x], 1))
        return self.head(x)


@register_model
def unet(in_channels: int, num_classes: int, channels: Sequence[int] = (16, 32, 64)) -> nn.Module:
    """A small U-Net: class scores per pixel (B, num_classes, H, W) at the input's size."""
    return UNet(in_channels, num_classes, channels)
