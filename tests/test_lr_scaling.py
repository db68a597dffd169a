"""Learning rates that follow the batch (optim.lr_base, timm's rule): the default recipe survives a changed batch
size, and an absolute optim.lr stays possible."""

from __future__ import annotations

import pytest

from conftest import ROOT
from fakedata import write_idx_dataset
from kiln.config import build_config, load_config, to_yaml
from kiln.core.errors import KilnError
from kiln.train import session

DEFAULT = ROOT / "configs" / "fashion_mnist.yaml"


def test_lr_base_scales_linearly_for_sgd_and_by_the_square_root_for_adaptive_optimizers():
    cfg = load_config(DEFAULT)
    assert cfg.optim.lr_base == 0.1 and cfg.optim.resolved_lr(1024) == pytest.approx(0.4)  # today's GPU recipe
    assert cfg.optim.resolved_lr(64) == pytest.approx(0.025)
    adam = build_config({"optim": {"name": "adamw", "lr_base": 1e-3}})
    assert adam.optim.resolved_lr(1024) == pytest.approx(2e-3) and adam.optim.scaling() == "sqrt"
    fixed = build_config({"optim": {"name": "sgd", "lr_base": 0.1, "lr_scale": "none"}})
    assert fixed.optim.resolved_lr(4096) == pytest.approx(0.1)
    assert cfg.optim.in_own_form(0.2, 1024) == ("optim.lr_base", pytest.approx(0.05))


def test_both_forms_in_one_file_are_refused_and_a_later_layer_switches_form():
    with pytest.raises(KilnError, match=r"set optim.lr .* or optim.lr_base .*not both"):
        build_config({"optim": {"lr": 0.1, "lr_base": 0.1}})
    assert load_config(DEFAULT, ["optim.lr=0.05"]).optim.resolved_lr(64) == 0.05  # the command line's form wins
    assert load_config(ROOT / "configs" / "fashion_mnist_best.yaml").optim.lr_base is None  # a derived file's lr


@pytest.mark.slow
def test_the_default_recipe_at_batch_64_learns_like_batch_256_and_records_its_lr(tmp_path):
    """The fixed lr 0.4 of the GPU default made batch 64 stall or diverge; lr_base scales it to 0.025."""
    root = write_idx_dataset(tmp_path / "idx", 2000, 400)
    acc, runs = {}, {}
    for name, model, batch in (("cnn", None, 64), ("cnn", None, 256), ("template", "templatemodel:MnistModel", 64)):
        over = [f"data.root={root}", "trainer.epochs=2", f"data.batch_size={batch}", "data.val_split=200",
                f"log.dir={tmp_path / 'runs'}", "log.progress=none", "log.tensorboard=false"]
        cfg = load_config(DEFAULT, over + ([f"model.name={model}"] if model else []))
        result = session.train(cfg, quiet=True)
        acc[name, batch], runs[name, batch] = result.test_metrics["acc"], result.run_dir
    assert acc["cnn", 64] >= acc["cnn", 256] - 0.05, acc
    assert acc["template", 64] >= 0.3, acc  # pytorch-template's MnistModel: at least 3x chance

    # the run records the lr it resolved, and its saved config (lr_base only) loads again
    text = (runs["cnn", 64] / "config.yaml").read_text()
    assert "lr_base: 0.1" in text and "#   optim.lr: 0.025 (lr_base 0.1 per 256, linear-scaled" in text
    assert "\n  lr: " not in text
    assert load_config(runs["cnn", 64] / "config.yaml").optim.resolved_lr(64) == pytest.approx(0.025)
    assert to_yaml(load_config(DEFAULT)).count("lr_base") == 2  # lr_base and lr_base_size
