"""Datasets and batch sources: `build_data(cfg.data, DataRequest(...))` is the one entry point (the engine and
every command reach it through the run plan: kiln.train.plan.RunPlan.data).

    info.py     DataInfo, Data, DataRequest          splits.py   validation/test splits and cv folds
    loaders.py  batch sources, samplers   build.py    build_data: a config's splits as batch sources
    registry.py registered datasets       images.py, text.py, user.py: the sources (their builders)
    assemble.py what every source shares: the split plan of its pools of samples, each split's batch order,
                the Source interface and assemble (a source and its split plan -> Data)
    vocab.py    kiln's vocabulary         model_tokenizer.py: a Hugging Face model's tokenizer instead
"""

from __future__ import annotations

from kiln.data.build import build_data
from kiln.data.info import Data, DataInfo, DataRequest
from kiln.data.loaders import Batches, choose_loader, eval_batch_size
from kiln.data.model_tokenizer import fresh_encoder
from kiln.data.registry import DATASETS
from kiln.data.splits import cv_folds, split_indices, stratified_split, train_val_split

__all__ = ["DATASETS", "Batches", "Data", "DataInfo", "DataRequest", "build_data", "choose_loader", "cv_folds", "eval_batch_size",
           "fresh_encoder", "split_indices", "stratified_split", "train_val_split"]
