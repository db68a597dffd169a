"""The field's model libraries by name: `torchvision:NAME` (every classification builder torchvision has) and
`timm:NAME` (any timm model; `pip install kiln-train[timm]`).

A model is built for the data without a table of families: the classifier through the library's own
`num_classes` argument (so no family's head has to be found and swapped), the first convolution or patch
embedding for `in_channels` (timm: its own `in_chans`; torchvision: the first 3-channel Conv2d, rebuilt, with
pretrained kernels adapted by the sum/repeat rule when weights are loaded), and the head recorded as the module
that produces the `num_classes` outputs, so `model.freeze: backbone`, `unfreeze_at_epoch` and
`optim.backbone_lr_mult` work for every family.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from kiln.core.errors import KilnError, first_line
from kiln.core.model_names import torchvision_names  # read from torchvision's source; a test checks it
from kiln.models.freeze import HEAD_ATTR, built_head

LIBRARIES = ("torchvision", "timm", "hf", "smp")
VISION_LIBRARIES = ("torchvision", "timm", "smp")


def library_of(name: str) -> str | None:
    """'torchvision' for `torchvision:resnet50`, 'timm' for `timm:vit_tiny_patch16_224`, 'hf' for
    `hf:bert-base-uncased` (kiln.models.hf), else None."""
    prefix, sep, _ = name.partition(":")
    return prefix if sep and prefix in LIBRARIES else None


def timm_names(pattern: str = "") -> list[str]:
    """timm's model names ([] when timm is not installed)."""
    if importlib.util.find_spec("timm") is None:
        return []
    import timm

    return list(timm.list_models(pattern or "*"))


def factory(name: str) -> Callable[..., nn.Module]:
    """The builder kiln calls with the data's num_classes, in_channels and image_size plus model.args."""
    library, arch = name.split(":", 1)
    if library == "hf":
        from kiln.models.hf import factory as hf_factory

        return hf_factory(arch)
    if library == "timm":
        return _timm_factory(arch)
    if library == "smp":
        return _smp_factory(arch)
    return _torchvision_factory(arch)


def _smp_factory(arch: str) -> Callable[..., nn.Module]:
    """segmentation-models-pytorch's architectures (`smp:Unet`, `smp:FPN`, `smp:DeepLabV3Plus`, ...) with any of its
    encoders (model.args.encoder_name, default resnet34), randomly initialised: its ImageNet encoder weights are a
    download, taken only with model.download=true and model.args.encoder_weights=imagenet."""
    if importlib.util.find_spec("segmentation_models_pytorch") is None:
        raise KilnError(f"model.name=smp:{arch} needs segmentation-models-pytorch: pip install "
                        "'kiln-train[segmentation]' (or pip install segmentation-models-pytorch)")
    import segmentation_models_pytorch as smp

    names = sorted(n for n in dir(smp) if isinstance(getattr(smp, n), type) and issubclass(getattr(smp, n), nn.Module)
                   and n[0].isupper())
    if arch not in names:
        raise KilnError(unknown_library_model("smp", arch, names))

    def build(num_classes: int, in_channels: int = 3, encoder_name: str = "resnet34",
              encoder_weights: str | None = None, download: bool = False, **args: Any) -> nn.Module:
        if encoder_weights is not None and not download:
            raise KilnError(f"model.args.encoder_weights={encoder_weights} downloads the encoder's weights: set "
                            "model.download=true to allow it (kiln makes no hidden downloads)")
        return smp.create_model(arch, encoder_name=encoder_name, encoder_weights=encoder_weights,
                                in_channels=in_channels, classes=num_classes, **args)

    return build


def _torchvision_factory(arch: str) -> Callable[..., nn.Module]:
    import torchvision

    names = list(torchvision_names())
    if arch not in names:
        raise KilnError(unknown_library_model("torchvision", arch, names))
    builder = torchvision.models.get_model_builder(arch)
    own = _model_class_params(builder)

    def build(num_classes: int, in_channels: int = 3, image_size: int | tuple[int, int] | None = None,
              **args: Any) -> nn.Module:
        kwargs = dict(args)
        if "aux_logits" in own:  # GoogLeNet, Inception v3: one output; their pretrained aux heads are ignored
            kwargs.setdefault("aux_logits", False)
        if "init_weights" in own:
            kwargs.setdefault("init_weights", True)
        if "weights_backbone" in inspect.signature(builder).parameters:  # segmentation, detection: no ImageNet
            kwargs.setdefault("weights_backbone", None)  # download; weights come from model.pretrained
        if "min_size" in own and image_size is not None:  # detectors: work at the data's size, not upscaled to 800
            kwargs.setdefault("min_size", min(_pair(image_size)))
            kwargs.setdefault("max_size", max(_pair(image_size)))
        if "image_size" in own and image_size is not None:  # ViT: the position embeddings follow the data
            kwargs.setdefault("image_size", _square(arch, image_size))
        try:
            model = builder(weights=None, num_classes=num_classes, **kwargs)
        except AssertionError as e:  # torchvision asserts shapes, e.g. a ViT's image size against its patch size
            raise KilnError(f"torchvision:{arch} cannot be built for {kwargs.get('image_size', image_size)} px "
                            f"inputs ({e or 'a shape check failed'}); set data.image_size to a size it takes "
                            "(a ViT: a multiple of its patch size, e.g. 224)") from None
        if in_channels != 3:
            _rebuild_stem(model, in_channels, arch)
        with contextlib.suppress(KilnError):  # a detector's heads are convolutions over anchors: no one layer
            setattr(model, HEAD_ATTR, built_head(model, num_classes, arch))  # (model.head names it for freezing)
        return model

    build.__signature__ = _signature(own)  # type: ignore[attr-defined]  # model.args are checked against it
    return build


def _timm_factory(arch: str) -> Callable[..., nn.Module]:
    if importlib.util.find_spec("timm") is None:
        raise KilnError(f"model.name=timm:{arch} needs timm: pip install 'kiln-train[timm]' (or pip install timm)")
    import timm

    if not timm.is_model(arch):
        raise KilnError(unknown_library_model("timm", arch, timm_names()))

    def build(num_classes: int, in_channels: int = 3, image_size: int | tuple[int, int] | None = None,
              **args: Any) -> nn.Module:
        kwargs = dict(args)
        pretrained_cfg = timm.get_pretrained_cfg(arch)
        if pretrained_cfg is not None and getattr(pretrained_cfg, "fixed_input_size", False) and image_size:
            kwargs.setdefault("img_size", _square(arch, image_size))  # ViTs: the patch grid follows the data
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
        classifier = dict(getattr(model, "pretrained_cfg", None) or {}).get("classifier")
        head = classifier if isinstance(classifier, str) and _has_params(model, classifier) else \
            built_head(model, num_classes, arch)
        setattr(model, HEAD_ATTR, head)
        return model

    return build


def check_input(model: nn.Module, name: str, in_channels: int, image_size: tuple[int, int]) -> None:
    """One forward pass of a zero image before any data is trained on: a model that needs another input size
    (MaxViT at 224 px, a ViT's patch grid) is refused here, with the reason, rather than in the first step."""
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, in_channels, *image_size))
    except (RuntimeError, AssertionError, ValueError, IndexError) as e:
        raise KilnError(f"model {name} cannot take {in_channels}x{image_size[0]}x{image_size[1]} inputs "
                        f"({first_line(e)}); set data.image_size to a size it takes (most ImageNet models: "
                        "224)") from None
    finally:
        model.train(was_training)


def unknown_library_model(library: str, arch: str, names: list[str]) -> str:
    close = difflib.get_close_matches(arch, names, n=3, cutoff=0.6)
    hint = f" — did you mean {', '.join(f'{library}:{c}' for c in close)}?" if close else ""
    listing = "kiln models" + (" PATTERN" if library == "timm" else "")
    return f"{library} has no model '{arch}'{hint} (`{listing}` lists them)"


def _model_class_params(builder: Callable[..., nn.Module]) -> dict[str, inspect.Parameter]:
    """The parameters of the model class a torchvision builder makes (its own signature is `**kwargs`): the
    class of the builder's module that takes num_classes (ResNet, VisionTransformer, GoogLeNet, ...)."""
    module = inspect.getmodule(builder)
    # the builder's own named settings too (a segmentation builder's aux_loss), but not its weights: those come
    # from model.pretrained
    own = {name: p for name, p in inspect.signature(builder).parameters.items()
           if name not in ("weights", "progress", "weights_backbone")}
    for cls in vars(module).values():
        if isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__module__ == getattr(module, "__name__", None):
            params = dict(inspect.signature(cls).parameters)
            if "num_classes" in params:
                return {**params, **own}
    return own


def _signature(params: dict[str, inspect.Parameter]) -> inspect.Signature:
    """What `model.args` may hold for a torchvision model: its class's arguments; unknown ones are refused."""
    keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for name, p in params.items()
               if name not in ("self", "num_classes", "block", "layers", "inverted_residual_setting",
                               "block_setting", "stages_repeats", "stages_out_channels", "block_config")
               and p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    data = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY) for n in ("num_classes", "in_channels", "image_size")]
    seen = {p.name for p in data}
    return inspect.Signature(data + [p for p in keyword if p.name not in seen])


def _square(arch: str, image_size: int | tuple[int, int]) -> int:
    """One side of a square input: model.args.image_size=224 as given, the data's (H, W) when H == W."""
    if isinstance(image_size, int):
        return image_size
    if image_size[0] != image_size[1]:
        raise KilnError(f"{arch} takes square images; data.image_size={list(image_size)} is not (set one side, "
                        f"e.g. data.image_size={max(image_size)})")
    return int(image_size[0])


def _rebuild_stem(model: nn.Module, in_channels: int, arch: str) -> None:
    """The first Conv2d that reads the 3 image channels, rebuilt for `in_channels` (its other settings kept)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.in_channels == 3:
            stem = nn.Conv2d(in_channels, module.out_channels, module.kernel_size,  # type: ignore[arg-type]
                             module.stride, module.padding, module.dilation,  # type: ignore[arg-type]
                             module.groups, module.bias is not None, module.padding_mode)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, stem)
            return
    raise KilnError(f"torchvision:{arch} has no 3-channel first convolution to adapt to {in_channels} channels")


def _has_params(model: nn.Module, prefix: str) -> bool:
    return any(n.startswith(prefix + ".") for n, _ in model.named_parameters())


def _pair(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
