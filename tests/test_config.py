import json
from pathlib import Path

import pytest
import yaml

from kiln.config import Config, json_schema, load_config, parse_overrides
from kiln.core.errors import KilnError

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
CONFIGS = sorted(CONFIGS_DIR.glob("*.yaml"))


def test_configs_are_shipped():
    names = {p.name for p in CONFIGS}
    assert {"fashion_mnist.yaml", "fashion_mnist_best.yaml", "mnist.yaml", "fashion_mnist_resnet.yaml", "ag_news.yaml",
            "ag_news_transformer.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, Config) and cfg.name == path.stem


def test_overrides_are_typed_and_nested():
    cfg = load_config(CONFIGS_DIR / "fashion_mnist.yaml", ["optim.lr=0.05", "trainer.epochs=3", "data.batch_size=128",
                                   "model.args.channels=[4,8]", "data.augment.hflip=false"])
    assert cfg.optim.lr == 0.05 and cfg.trainer.epochs == 3 and cfg.data.batch_size == 128
    assert cfg.model.args["channels"] == [4, 8] and cfg.data.augment.hflip is False


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(KilnError, match=r"unknown key 'trainer.epoch' — did you mean 'trainer.epochs'\?"):
        load_config(None, ["trainer.epoch=3"])


def test_unknown_section_suggests_or_lists_valid_keys():
    with pytest.raises(KilnError, match="unknown key 'optimizer' — did you mean 'optim'"):
        load_config(None, ["optimizer.lr=3"])
    with pytest.raises(KilnError, match="unknown key 'zzz' — valid keys: name, seed, code_dir, task, data, model"):
        load_config(None, ["zzz.lr=3"])


@pytest.mark.parametrize("override, message", [
    ("optim.lr=abc", "'optim.lr'.*valid number"),
    ("data.batch_size=0", "'data.batch_size'.*greater than 0"),
    ("optim.name=rmsprop", "'optim.name'.*neither one of kiln's .sgd, adam, adamw. nor a torch.optim class — did "
                           "you mean RMSprop"),
    ("schedule.name=exponential", "'schedule.name'.*neither one of kiln's .none, step, cosine, linear, "
                                  "onecycle, reduce_on_plateau. nor a torch.optim.lr_scheduler class"),
    ("data.val_split=1.5", "fraction must be below 1"),
    ("trainer.precision=8", "'trainer.precision'"),
])
def test_wrong_values_are_named(override, message):
    with pytest.raises(KilnError, match=message):
        load_config(None, [override])


def test_override_without_equals():
    with pytest.raises(KilnError, match=r"not of the form key.path=value"):
        parse_overrides(["trainer.epochs"])


def test_base_is_merged_key_by_key(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"name": "a", "optim": {"lr": 0.3, "name": "sgd"}}))
    (tmp_path / "child.json").write_text(json.dumps({"base": "base.yaml", "name": "b", "optim": {"lr": 0.01}}))
    cfg = load_config(tmp_path / "child.json")
    assert (cfg.name, cfg.optim.name, cfg.optim.lr) == ("b", "sgd", 0.01)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(KilnError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("data: [unclosed\n")
    with pytest.raises(KilnError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_precision_accepts_yaml_integers():
    assert load_config(None, ["trainer.precision=32"]).trainer.precision == "32"


def test_schema_documents_every_field():
    schema = json_schema()
    trainer = schema["$defs"]["TrainerConfig"]["properties"]
    assert trainer["epochs"]["description"].startswith("Number of passes")
    assert all("description" in field for field in trainer.values())
    assert schema["properties"]["base"]["type"] == "string"


def test_switching_a_component_drops_the_old_components_args(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"model": {"name": "cnn", "args": {"channels": [4]}}}))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "model": {"name": "mlp"}}))
    assert load_config(tmp_path / "child.yaml").model.args == {}
    assert load_config(tmp_path / "base.yaml", ["model.name=resnet18"]).model.args == {}
    assert load_config(tmp_path / "base.yaml", ["model.args.dropout=0.1"]).model.args == {"channels": [4],
                                                                                           "dropout": 0.1}


def test_a_base_chain_that_loops_names_the_files(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\nseed: 1\n")
    with pytest.raises(KilnError, match=r"loops: .*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "self.yaml").write_text("base: self.yaml\n")
    with pytest.raises(KilnError, match="loops"):
        load_config(tmp_path / "self.yaml")


def test_image_size_takes_hxw_and_says_the_accepted_forms_in_one_line(cli):
    from kiln.config import load_config

    assert load_config("image_folder", ["data.root=x", "data.image_size=64x48"]).data.image_size == (64, 48)
    assert load_config("image_folder", ["data.root=x", "data.image_size=64"]).data.image_size == 64
    for bad in ("64by64", "0", "[64,48,3]"):
        result = cli("config", "image_folder", f"data.image_size={bad}")
        lines = [line for line in result.stderr.splitlines() if "data.image_size" in line]
        assert result.returncode == 2 and len(lines) == 1, result.stderr
        assert "(64: square)" in lines[0] and "[64, 48]" in lines[0]


def test_overrides_on_a_loaded_config_leave_what_it_left_unset_to_kiln(tmp_path):
    """lr-find, the batch-size probe and kiln.config(a Config) add settings to a loaded config: what the user left
    unset stays unset (not its default written out as if given), so a pretrained model's preprocessing still sets
    the image size."""
    import kiln
    from kiln.config.files import load_config, with_overrides
    from kiln.train.plan import RunPlan

    cfg = load_config(None, [], base={"data": {"name": "image_folder", "root": str(tmp_path)},
                                      "model": {"name": "resnet18", "pretrained": "torchvision"}})
    for changed in (with_overrides(cfg, ["trainer.epochs=2"]), kiln.config(cfg, "trainer.epochs=2")):
        assert changed.trainer.epochs == 2 and "image_size" not in changed.data.model_fields_set
        assert RunPlan.of(changed, "cpu").config.data.image_size == 224  # the weights' size, as training uses
