"""Datasets and batch sources: `build_data(cfg.data, DataRequest(...))` is the one entry point (the engine and
every command reach it through the run plan: kiln.train.plan.RunPlan.data).

    info.py     DataInfo, Data, DataRequest          splits.py   validation/test splits and cv folds
    loaders.py  batch sources, samplers   build.py    build_data: a config's splits as batch sources
    spec.py     what a registered dataset provides    registry.py the registered datasets
    images.py, text.py, user.py: the sources (their builders)
    inputs/     the inference side of each kind of input: predict, export, report, baseline and inspect ask it
    assemble.py what every source shares: the split plan of its pools of samples, each split's batch order,
                the Source interface and assemble (a source and its split plan -> Data)
    vocab.py    kiln's vocabulary         model_tokenizer.py: a Hugging Face model's tokenizer instead

The names below are imported when first used, so what needs only the registry (the preflight's checks, before torch
loads) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.data.build import build_data
    from kiln.data.info import Data, DataInfo, DataRequest
    from kiln.data.loaders import Batches, choose_loader, eval_batch_size
    from kiln.data.model_tokenizer import fresh_encoder
    from kiln.data.registry import DATASETS
    from kiln.data.splits import cv_folds, split_indices, stratified_split, train_val_split

_WHERE = {"build_data": "build", "Data": "info", "DataInfo": "info", "DataRequest": "info", "Batches": "loaders",
          "choose_loader": "loaders", "eval_batch_size": "loaders", "fresh_encoder": "model_tokenizer",
          "DATASETS": "registry", "cv_folds": "splits", "split_indices": "splits", "stratified_split": "splits",
          "train_val_split": "splits"}

__all__ = ["DATASETS", "Batches", "Data", "DataInfo", "DataRequest", "build_data", "choose_loader", "cv_folds",
           "eval_batch_size", "fresh_encoder", "split_indices", "stratified_split", "train_val_split"]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'kiln.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"kiln.data.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
