"""Models users write themselves train as written (pytorch-template's MnistModel and common output shapes), or
get a clear message."""

import pytest

from conftest import tiny_config
from kiln.config import build_config
from kiln.errors import KilnError
from kiln.train import session


def _train(tmp_path, idx_root, model: str, **trainer):
    cfg = build_config(tiny_config(tmp_path, idx_root, model={"name": f"templatemodel:{model}", "args": {}},
                                   trainer={"epochs": 1, "limit_train_batches": 3, **trainer}))
    return session.train(cfg, quiet=True)


@pytest.mark.parametrize("model", ["MnistModel", "TupleOut", "DictOut"])
def test_pytorch_templates_model_and_common_output_shapes_train_as_written(tmp_path, idx_root, model):
    result = _train(tmp_path, idx_root, model)  # view after convs: channels_last stays off for user models
    assert 0 <= result.test_metrics["acc"] <= 1 and result.metrics["train/loss"] > 0


def test_a_view_that_the_memory_layout_breaks_gets_a_message(tmp_path, idx_root):
    with pytest.raises(KilnError, match=r"\.reshape.*trainer.channels_last=false"):
        _train(tmp_path, idx_root, "MnistModel", channels_last=True)


def test_a_forward_returning_something_else_is_explained(tmp_path, idx_root):
    with pytest.raises(KilnError, match="forward returned str"):
        _train(tmp_path, idx_root, "StringOut")
