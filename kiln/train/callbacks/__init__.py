"""Callbacks: small objects that `fit` calls at fixed points, in list order. Each keeps its own state
(`state_dict` / `load_state_dict`, saved in the checkpoint under its `state_key`) when it has any.

Built in, one per module here: early stopping, checkpointing, status.json, the epoch summary line, metric logging
to the trackers, the freeze schedule, the memory and collapse watches; tune's reporters use the same interface.
`LambdaCallback` turns plain functions into one.
"""

from kiln.train.callbacks.base import Callback, LambdaCallback
from kiln.train.callbacks.checkpoint import ModelCheckpoint
from kiln.train.callbacks.early_stopping import EarlyStopping, Monitor
from kiln.train.callbacks.logging import EpochSummary, LogMetrics

__all__ = ["Callback", "EarlyStopping", "EpochSummary", "LambdaCallback", "LogMetrics", "ModelCheckpoint", "Monitor"]
