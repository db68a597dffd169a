"""trainer.ema: the weight average is what is validated, saved as best.pt's model and tested; resume is exact."""

from __future__ import annotations

import pytest
import torch

from conftest import only_run, tiny_config
from kiln.config import build_config
from kiln.core.errors import TrainingInterrupted
from kiln.core.state import load_checkpoint
from kiln.train import session
from kiln.train.callbacks import LambdaCallback
from kiln.train.evaluation import run_test


def _cfg(tmp_path, idx_root, folder):
    return build_config(tiny_config(tmp_path, idx_root, trainer={"epochs": 2, "ema": {"decay": 0.9}},
                                    log={"dir": str(tmp_path / folder), "progress": "none", "tensorboard": False}))


def test_the_average_is_validated_saved_and_tested_and_resumes_exactly(tmp_path, idx_root):
    full = session.train(_cfg(tmp_path, idx_root, "full"), quiet=True)
    last = load_checkpoint(full.run_dir / "checkpoints" / "last.pt")
    assert any(not torch.equal(last["model"][k], last["raw_model"][k]) for k in last["model"]
               if last["model"][k].is_floating_point())  # the average is not the raw weights
    best = load_checkpoint(full.run_dir / "checkpoints" / "best.pt")
    assert "raw_model" in best and best["model"].keys() == last["raw_model"].keys()
    assert run_test(full.run_dir)["acc"] == full.test_metrics["acc"]  # kiln test evaluates best.pt's average

    def stop(t):
        if t.state.step == 7:  # mid epoch 1 (12 steps per epoch)
            t.stop_requested = True

    cfg = _cfg(tmp_path, idx_root, "cut")
    with pytest.raises(TrainingInterrupted):
        session.train(cfg, quiet=True, callbacks=[LambdaCallback(on_step_end=stop)])
    resumed = session.train(cfg, resume=only_run(tmp_path / "cut"), quiet=True)
    again = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")
    for key in ("model", "raw_model"):
        assert all(torch.equal(last[key][k], again[key][k]) for k in last[key]), key
    assert last["ema"] == again["ema"]
