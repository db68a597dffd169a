"""Hugging Face text encoders: `model.name: hf:NAME_OR_PATH` (`pip install kiln-train[hf]`: transformers).

The model is transformers' `AutoModelForSequenceClassification` with `num_labels` outputs — the same head for
multiclass, multilabel and regression, since kiln's task owns the loss — wrapped so that it reads kiln's padded
`TextBatch` (ids + attention mask). Its architecture comes from the folder's `config.json`; its weights only with
`model.pretrained: hf`, through transformers' own loading (which knows each family's key prefixes), reported
tensor by tensor like every other pretrained load. The tokenizer of the same folder replaces kiln's vocabulary
(kiln.data.model_tokenizer).

NAME_OR_PATH is a local folder in the `save_pretrained` layout, or a Hub name found in the Hugging Face cache
($HF_HOME); nothing is downloaded unless `model.download` is true.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kiln.errors import KilnError, first_line

log = logging.getLogger("kiln")
# What a folder needs to build the model and its tokenizer; the weights are fetched with them when downloading.
HUB_FILES = ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
             "vocab.json", "merges.txt", "*.model", "model.safetensors", "pytorch_model.bin"]


def need_transformers(name: str) -> None:
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        raise KilnError(f"model.name={name} needs Hugging Face transformers: pip install 'kiln-train[hf]' "
                        "(or pip install transformers)")


def quiet() -> None:
    """transformers' own load tables and progress bars off: kiln reports what was loaded itself."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def hf_folder(ref: str, download: bool = False) -> Path:
    """The local folder of `hf:REF`: REF itself when it is a folder, else the Hub repo REF in the Hugging Face
    cache (fetched first only when `download`)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise KilnError(f"model.name=hf:{ref}: the folder has no config.json (a Hugging Face save_pretrained "
                            "folder holds config.json, the tokenizer files and model.safetensors)")
        return path
    if path.suffix or ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise KilnError(f"model.name=hf:{ref}: no such folder")
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE

    try:
        folder = Path(snapshot_download(ref, allow_patterns=HUB_FILES, local_files_only=not download))
    except Exception as e:  # noqa: BLE001 — the hub's many errors: not cached, no such repo, no network
        how = f"run `hf download {ref}` or set model.download=true" if not download else \
            "check the name and the network"
        raise KilnError(f"the Hugging Face model {ref!r} is not on this machine (looked in {HF_HUB_CACHE}; "
                        f"{first_line(e)}); {how}, or give a local folder: model.name=hf:PATH") from None
    if not (folder / "config.json").is_file():
        raise KilnError(f"the Hugging Face model {ref!r} in {folder} has no config.json")
    return folder


def folder_config(folder: Path) -> dict[str, Any]:
    """The folder's config.json (for limits such as max_position_embeddings, without importing transformers)."""
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise KilnError(f"cannot read {folder / 'config.json'}: {first_line(e)}") from None


class HFClassifier(nn.Module):
    """A transformers sequence classifier on kiln's padded text batches: input_ids + attention_mask -> logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch) -> torch.Tensor:
        return self.model(input_ids=batch.ids, attention_mask=batch.mask.long()).logits


def factory(ref: str) -> Callable[..., nn.Module]:
    """The builder of `hf:REF`: the architecture from its config.json, model.args overriding config values."""
    need_transformers(f"hf:{ref}")

    def build(num_classes: int, vocab_size: int = 0, pad_id: int = 0, download: bool = False,
              **args: Any) -> nn.Module:
        quiet()
        from transformers import AutoConfig, AutoModelForSequenceClassification

        folder = hf_folder(ref, download)
        config = AutoConfig.from_pretrained(folder, num_labels=num_classes, local_files_only=True)
        known = config.to_dict()
        unknown = [k for k in args if k not in known]
        if unknown:
            hints = [f"{k} (did you mean {', '.join(difflib.get_close_matches(k, known, n=2))}?)"
                     if difflib.get_close_matches(k, known, n=2) else k for k in unknown]
            raise KilnError(f"model.args for hf:{ref}: {', '.join(hints)} not in its config.json (model.args "
                            f"override config values, e.g. hidden_dropout_prob)")
        for key, value in args.items():
            setattr(config, key, value)
        if vocab_size > getattr(config, "vocab_size", vocab_size):
            raise KilnError(f"the tokenizer has {vocab_size} tokens but hf:{ref} embeds only {config.vocab_size}: "
                            "use the model's own tokenizer (data.text.tokenizer=model)")
        if getattr(config, "pad_token_id", None) is None:
            config.pad_token_id = pad_id  # GPT-style models pool the last non-padding token by it
        model = HFClassifier(AutoModelForSequenceClassification.from_config(config))
        from kiln.models.hub import HEAD_ATTR, _head_name

        setattr(model, HEAD_ATTR, _head_name(model, num_classes, f"hf:{ref}"))
        return model

    return build


def load_weights(model: nn.Module, ref: str, download: bool):
    """`model.pretrained: hf`: the folder's weights through transformers (every family's key layout), into the
    model built for this data; the classifier head is new. Returns kiln's LoadReport of what happened."""
    from transformers import AutoModelForSequenceClassification

    from kiln.models.pretrained import LoadReport

    if not isinstance(model, HFClassifier):
        raise KilnError("model.pretrained=hf needs an hf:NAME model")
    quiet()
    folder = hf_folder(ref, download)
    if not any((folder / name).is_file() for name in ("model.safetensors", "pytorch_model.bin",
                                                      "model.safetensors.index.json")):
        raise KilnError(f"model.pretrained=hf: {folder} holds no weights (looked for model.safetensors and "
                        f"pytorch_model.bin); run `hf download {ref}` or set model.download=true, or leave "
                        f"model.pretrained unset to train hf:{ref} from a random start")
    try:
        source, info = AutoModelForSequenceClassification.from_pretrained(
            folder, config=model.model.config, output_loading_info=True, local_files_only=True,
            ignore_mismatched_sizes=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise KilnError(f"cannot load the weights of {folder}: {first_line(e)}") from None
    model.model.load_state_dict(source.state_dict())
    new = {f"model.{k}" for k in info["missing_keys"]} | {f"model.{k[0] if isinstance(k, tuple) else k}"
                                                        for k in info["mismatched_keys"]}
    own = [k for k in model.state_dict()]
    return LoadReport(f"hf {folder}", loaded=[k for k in own if k not in new], new=sorted(new),
                      ignored=sorted(info["unexpected_keys"]))


def max_positions(config: dict[str, Any]) -> int | None:
    """The longest input (in tokens) the model's position embeddings allow, from its config.json."""
    for key in ("max_position_embeddings", "n_positions", "max_seq_len"):
        if isinstance(config.get(key), int):
            # RoBERTa-style models offset positions by the padding id + 1: 514 embeddings hold 512 tokens.
            return config[key] - (2 if config.get("model_type") in ("roberta", "xlm-roberta", "camembert") else 0)
    return None
