"""Where a Hugging Face model is on this machine, and what its config.json says — for the model (kiln.models.hf)
and its tokenizer (kiln.data.model_tokenizer) alike, without importing transformers or each other.

`hf:NAME_OR_PATH` is a local folder in the `save_pretrained` layout, or a Hub name found in the Hugging Face cache
($HF_HOME); nothing is downloaded unless `model.download` is true.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kiln.core.errors import KilnError, first_line

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


def max_positions(config: dict[str, Any]) -> int | None:
    """The longest input (in tokens) the model's position embeddings allow, from its config.json."""
    for key in ("max_position_embeddings", "n_positions", "max_seq_len"):
        if isinstance(config.get(key), int):
            # RoBERTa-style models offset positions by the padding id + 1: 514 embeddings hold 512 tokens.
            return config[key] - (2 if config.get("model_type") in ("roberta", "xlm-roberta", "camembert") else 0)
    return None
