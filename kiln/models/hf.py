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
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from kiln.core.errors import KilnError, first_line
from kiln.core.hf_hub import hf_folder, need_transformers, quiet

log = logging.getLogger("kiln")


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
        from kiln.models.freeze import HEAD_ATTR, built_head

        setattr(model, HEAD_ATTR, built_head(model, num_classes, f"hf:{ref}"))
        return model

    return build


def load_weights(model: nn.Module, ref: str, download: bool) -> tuple[str, list[str], list[str], list[str]]:
    """`model.pretrained: hf`: the folder's weights through transformers (every family's key layout), into the
    model built for this data; the classifier head is new. Returns (source, loaded, new, ignored) tensor names
    for kiln's load report."""
    from transformers import AutoModelForSequenceClassification

    if not isinstance(model, HFClassifier):
        raise KilnError("model.pretrained=hf needs an hf:NAME model")
    quiet()
    folder = hf_folder(ref, download)
    if not any((folder / name).is_file() for name in ("model.safetensors", "pytorch_model.bin",
                                                      "model.safetensors.index.json")):
        raise KilnError(f"model.pretrained=hf: {folder} holds no weights (looked for model.safetensors and "
                        f"pytorch_model.bin); run `hf download {ref}` or set model.download=true, or leave "
                        f"model.pretrained unset to train hf:{ref} from a random start")
    config: Any = model.model.config  # a transformers PretrainedConfig (nn.Module's attributes are typed as modules)
    try:
        source, info = AutoModelForSequenceClassification.from_pretrained(
            folder, config=config, output_loading_info=True, local_files_only=True,
            ignore_mismatched_sizes=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise KilnError(f"cannot load the weights of {folder}: {first_line(e)}") from None
    model.model.load_state_dict(source.state_dict())
    new = {f"model.{k}" for k in info["missing_keys"]} | {f"model.{k[0] if isinstance(k, tuple) else k}"
                                                        for k in info["mismatched_keys"]}
    own = [k for k in model.state_dict()]
    return f"hf {folder}", [k for k in own if k not in new], sorted(new), sorted(info["unexpected_keys"])


