"""A learning test on the real Fashion-MNIST files, when they are installed (make data)."""

from pathlib import Path

import pytest

from conftest import REAL_FASHION
from kiln.config import load_config
from kiln.train import session

pytestmark = pytest.mark.skipif(not (REAL_FASHION / "train-images-idx3-ubyte.gz").is_file(),
                                reason=f"real Fashion-MNIST not installed in {REAL_FASHION} (run `make data`)")


def test_one_epoch_on_10k_images_beats_80_percent(tmp_path):
    default = Path(__file__).resolve().parents[1] / "configs" / "fashion_mnist.yaml"
    cfg = load_config(default, [f"data.root={REAL_FASHION}", "data.train_subset=10000", "trainer.epochs=1",
                                "data.batch_size=64", "optim.name=adamw", "optim.lr=0.003", "schedule.name=none",
                                f"log.dir={tmp_path}", "log.tensorboard=false"])
    result = session.train(cfg, quiet=True)
    assert result.metrics["val/acc"] > 0.80, result.metrics
    assert result.test_metrics["acc"] > 0.80 and result.test_metrics["num_samples"] == 10_000
