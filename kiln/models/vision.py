"""Image classifiers: an MLP, a configurable CNN, and torchvision ResNets adapted to the input."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from kiln.models.registry import register_model


def _pair(image_size: int | Sequence[int]) -> tuple[int, int]:
    """28 or [28, 28] -> (28, 28): model.args.image_size may be one side or both."""
    if isinstance(image_size, int):
        return image_size, image_size
    if len(image_size) != 2:
        raise ValueError(f"image_size={list(image_size)}: give one side (28) or height and width ([28, 28])")
    return int(image_size[0]), int(image_size[1])


@register_model
def mlp(in_channels: int, image_size: int | Sequence[int], num_classes: int, hidden: Sequence[int] = (256, 128),
        dropout: float = 0.0) -> nn.Module:
    """Flatten, then Linear-ReLU(-Dropout) blocks, then a linear classifier."""
    layers: list[nn.Module] = [nn.Flatten()]
    h, w = _pair(image_size)
    width = in_channels * h * w
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        layers += [nn.Dropout(dropout)] if dropout else []
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _conv_block(c_in: int, c_out: int, batch_norm: bool) -> list[nn.Module]:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm)
    return [conv, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)] if batch_norm else [conv, nn.ReLU(inplace=True)]


@register_model
def cnn(  # noqa: PLR0913 — model.args: each hyperparameter by name, checked against this signature
        in_channels: int, image_size: int | Sequence[int], num_classes: int, channels: Sequence[int] = (32, 64, 128),
        convs_per_stage: int = 1, batch_norm: bool = True, dropout: float = 0.2, hidden: int = 0) -> nn.Module:
    """Stages of `convs_per_stage` 3x3 conv blocks, each stage ending in a 2x2 max-pool; then the classifier.

    (B, C, H, W) -> (B, channels[-1], H / 2^S, W / 2^S) -> flatten -> [Linear(hidden)] -> Linear(num_classes)
    """
    if not channels:
        raise ValueError("channels must list at least one stage width")
    layers: list[nn.Module] = []
    c_in, (h, w) = in_channels, _pair(image_size)
    for c_out in channels:
        for i in range(convs_per_stage):
            layers += _conv_block(c_in if i == 0 else c_out, c_out, batch_norm)
        layers.append(nn.MaxPool2d(2))
        c_in, h, w = c_out, h // 2, w // 2
    if h == 0 or w == 0:
        raise ValueError(f"{len(channels)} pooling stages shrink a {'x'.join(map(str, _pair(image_size)))} image "
                         "to nothing")
    layers += [nn.Flatten(), nn.Dropout(dropout)]
    features = c_in * h * w
    if hidden:
        layers += [nn.Linear(features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
        features = hidden
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


def _resnet(arch: str, in_channels: int, num_classes: int, small_input: bool) -> nn.Module:
    import torchvision

    model = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
    if small_input:
        # 28x28 inputs: a 3x3 stride-1 stem and no max-pool keep the spatial detail a 7x7/2 + pool would discard.
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    return model


@register_model
def resnet18(in_channels: int, num_classes: int, small_input: bool = True) -> nn.Module:
    """torchvision ResNet-18 with `in_channels` inputs; `small_input` swaps the stem for 28x28 images."""
    return _resnet("resnet18", in_channels, num_classes, small_input)


@register_model
def resnet34(in_channels: int, num_classes: int, small_input: bool = True) -> nn.Module:
    """torchvision ResNet-34 with `in_channels` inputs; `small_input` swaps the stem for 28x28 images."""
    return _resnet("resnet34", in_channels, num_classes, small_input)


@register_model
def resnet50(in_channels: int, num_classes: int, small_input: bool = True) -> nn.Module:
    """torchvision ResNet-50 with `in_channels` inputs; `small_input` swaps the stem for 28x28 images."""
    return _resnet("resnet50", in_channels, num_classes, small_input)
