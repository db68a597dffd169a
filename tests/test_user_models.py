"""Models users write themselves train as written (pytorch-template's MnistModel and common output shapes), or
get a clear message."""

import pytest
import yaml

from conftest import tiny_config
from kiln.config import build_config
from kiln.core.errors import KilnError
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


def test_a_factory_function_in_user_code_is_accepted(tmp_path, idx_root):
    assert _train(tmp_path, idx_root, "small_net").metrics["train/loss"] > 0


@pytest.mark.parametrize("target", ["subprocess:getoutput", "os:system", "builtins:eval", "pathlib:Path"])
def test_a_config_cannot_make_kiln_call_library_code(tmp_path, idx_root, target, capsys):
    from kiln.cli import main

    marker = tmp_path / "pwned"
    cfg = tiny_config(tmp_path, idx_root, model={"name": target, "args": {"cmd": f"touch {marker}"}})
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path)]) == 2
    assert "only accepts a torch.nn.modules.module.Module subclass" in capsys.readouterr().err
    assert not marker.exists()


def test_a_run_folder_naming_library_code_is_refused_by_every_reader(tmp_path, idx_root, capsys):
    from kiln.cli import main

    result = _train(tmp_path, idx_root, "small_net")
    config = result.run_dir / "config.yaml"
    config.write_text(config.read_text().replace("templatemodel:small_net", "subprocess:getoutput"))
    for argv in (["test", str(result.run_dir)], ["predict", str(result.run_dir), "x.png"],
                 ["inspect", str(result.run_dir)]):
        assert main(argv) == 2, argv
        assert "did not call it" in capsys.readouterr().err


def test_a_model_that_moves_tensors_itself_gets_a_message(tmp_path, idx_root):
    with pytest.raises(KilnError, match=r"puts tensors on another device.*x.device"):
        _train(tmp_path, idx_root, "MovesItself")
