"""What a newcomer's first day with their own data broke (issue 27): a one-class folder, cv folds that reached the
test split, other data overwriting a run's results, a command-line epoch count overruled, slow and late config
errors that left run folders behind, and the small things."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, only_run, tiny_config, write_config
from fakedata import SHAPE_CLASSES, draw_shape_image, write_image_folder
from kiln.cli import main
from kiln.config import DataConfig, load_config

pytestmark = pytest.mark.usefixtures("own_cache")
FOLDER_CONFIG = ROOT / "configs" / "image_folder.yaml"
SMALL = ["data.image_size=16", "model.args.channels=[8,16]", "model.args.convs_per_stage=1", "data.batch_size=16",
         "log.progress=none", "log.tensorboard=false"]


def kiln(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("shapes"), n=96, extras=False)


# --------------------------------------------------------------------------- 1. fewer than two classes

def test_a_folder_of_one_class_is_refused_before_training_and_leaves_no_run(tmp_path, shapes, capsys):
    one = tmp_path / "oneclass"
    shutil.copytree(shapes / "red_disc", one / "red_disc")
    runs = tmp_path / "runs"
    code, out = kiln(capsys, "train", FOLDER_CONFIG, f"data.root={one}", f"log.dir={runs}", *SMALL)
    assert code == 2 and "1 class (red_disc)" in out and "at least two classes" in out
    assert not runs.exists() or not list(runs.rglob("config.yaml"))  # nothing for --resume auto to pick
    code, out = kiln(capsys, "train", FOLDER_CONFIG, f"data.root={one}", f"log.dir={runs}", "--resume", "auto", *SMALL)
    assert code == 2 and "Traceback" not in out


def test_a_second_class_whose_images_are_all_skipped_is_one_class(tmp_path, shapes, capsys):
    root = tmp_path / "photos"
    shutil.copytree(shapes / "red_disc", root / "red_disc")
    (root / "broken").mkdir()
    for i in range(3):
        (root / "broken" / f"{i}.png").write_bytes(b"\x89PNG not really")
    code, out = kiln(capsys, "train", FOLDER_CONFIG, f"data.root={root}", f"log.dir={tmp_path / 'runs'}",
                     "data.on_bad_row=skip", *SMALL)
    assert code == 2 and "1 class among the training samples (red_disc)" in out
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("config.yaml"))


def test_a_multilabel_set_with_one_label_is_refused(tmp_path, capsys):
    rng = __import__("numpy").random.default_rng(0)
    (tmp_path / "img").mkdir()
    for split, n in (("train", 24), ("test", 8)):
        rows = ["path,labels"]
        for i in range(n):
            draw_shape_image(i % 4, rng, (20, 20)).save(tmp_path / "img" / f"{split}{i}.png")
            rows.append(f"img/{split}{i}.png,{'cat' if i % 2 else ''}")
        (tmp_path / f"{split}.csv").write_text("\n".join(rows) + "\n")
    code, out = kiln(capsys, "train", ROOT / "configs" / "multilabel_csv.yaml", f"data.root={tmp_path}",
                     f"log.dir={tmp_path / 'runs'}", "data.image_size=16", "log.progress=none")
    assert code == 2 and "1 label (cat)" in out and "task.name=multiclass" in out


# --------------------------------------------------------------------------- 2. cv never touches the test split

def test_cv_folds_are_cut_after_the_test_split_is_set_aside(shapes):
    from kiln.data.image_files import scan_folder
    from kiln.data.images import split_files

    found = scan_folder(shapes, None)
    paths = found.files["all"].paths

    def plan(**cv):
        cfg = DataConfig(name="image_folder", root=shapes, val_split=0.15, test_split=0.15, **cv)
        return {split: {paths[i] for i in idx.tolist()} for split, (_, idx) in
                split_files(found, cfg, 0).items()}

    test = plan()["test"]
    assert len(test) == round(0.15 * len(paths))
    held_out = set()
    for k in (1, 2):
        fold = plan(cv={"folds": 2, "fold": k})
        assert not test & (fold["train"] | fold["val"] | fold["test"])  # the test split is in no fold
        assert not fold["test"] & (fold["train"] | fold["val"])  # a fold's held-out part never reaches training
        assert fold["train"] | fold["val"] | fold["test"] == set(paths) - test
        held_out |= fold["test"]
    assert held_out == set(paths) - test  # every other image held out once


# --------------------------------------------------------------------------- 3, 4: other data; epochs that run

@pytest.fixture(scope="module")
def folder_run(tmp_path_factory, shapes):
    """The shipped image-folder recipe (trainer.min_steps: 1500) with trainer.epochs=1 on the command line."""
    tmp = tmp_path_factory.mktemp("folder_run")
    os.environ["KILN_CACHE"] = str(tmp / "cache")
    try:
        assert main(["train", str(FOLDER_CONFIG), f"data.root={shapes}", f"log.dir={tmp / 'runs'}", "trainer.epochs=1",
                     *SMALL]) == 0
    finally:
        del os.environ["KILN_CACHE"]
    return only_run(tmp / "runs")


def test_an_epoch_count_on_the_command_line_runs(folder_run, capsys, caplog):
    rows = (folder_run / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1  # not the recipe's min_steps: 1500 (hundreds of epochs of 5 steps)
    cfg = load_config(FOLDER_CONFIG, ["trainer.epochs=2"])
    assert cfg.trainer.epochs == 2 and cfg.trainer.min_steps is None
    assert "trainer.min_steps=1500 yields" in caplog.text
    code, out = kiln(capsys, "config", FOLDER_CONFIG, "trainer.epochs=2")
    assert code == 0 and "epochs: 2" in out and "min_steps: null" in out
    code, out = kiln(capsys, "config", FOLDER_CONFIG)  # the floor stays when the epochs are the file's
    assert code == 0 and "min_steps: 1500" in out and "max(30, ceil(1500 / steps per epoch))" in out


def test_testing_another_folder_keeps_the_runs_own_results(folder_run, shapes, tmp_path, capsys, caplog):
    own = (folder_run / "test_metrics.json").read_text()
    other = tmp_path / "other"
    for name in SHAPE_CLASSES[:3]:
        shutil.copytree(shapes / name, other / name)
    code, out = kiln(capsys, "test", folder_run, f"data.root={other}")
    assert code == 0 and "test_metrics-other.json" in out
    assert (folder_run / "test_metrics.json").read_text() == own  # the run's own results stay the run's
    scored = json.loads((folder_run / "test_metrics-other.json").read_text())
    assert scored["data"]["root"] == str(other) and scored["num_samples"] == 72
    assert set(scored["per_class_acc"]) == set(SHAPE_CLASSES[:3])  # the absent class is not "hardest: 0.000"
    assert SHAPE_CLASSES[3] not in out.split("hardest")[-1]
    assert "3 of the 4 classes" in caplog.text
    code, _ = kiln(capsys, "test", folder_run, f"data.root={other}", "--out", tmp_path / "mine.json")
    assert code == 0 and json.loads((tmp_path / "mine.json").read_text())["num_samples"] == 72


def test_a_finished_run_keeps_no_lock_file(folder_run):
    assert json.loads((folder_run / "status.json").read_text())["state"] == "finished"
    assert not (folder_run / ".lock").exists()


# --------------------------------------------------------------------------- 5, 6: early, quick config errors

CHECK_NO_TORCH = """
import sys
from kiln.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "torchvision", "torchmetrics") if m in sys.modules)
print("exit", code, "heavy", heavy)
"""


@pytest.mark.parametrize("config, override, message", [
    ("fashion_mnist", "trainer.epoch=2", "did you mean 'trainer.epochs'?"),
    ("fashion_mnist", "model.name=resnet19", "unknown model 'resnet19' — did you mean 'resnet18'?"),
    ("fashion_mnist", "model.args.chanels=[8]", "'chanels' (did you mean 'channels'?)"),
    ("fashion_mnist", "trainer.device=gpu", "for a GPU use cuda"),
    ("image_folder", "data.root=/no/such/folder", "is not a folder"),
])
def test_config_mistakes_are_caught_before_torch_loads_and_leave_no_run(tmp_path, config, override, message):
    """kiln train reports them without importing torch (what made it take seconds), and kiln config too."""
    for command in ("train", "config"):
        if command == "config" and override.startswith("data.root"):
            continue  # kiln config prints a config for any machine; the data is looked for when training
        result = subprocess.run([sys.executable, "-c", CHECK_NO_TORCH, command, str(ROOT / "configs" / f"{config}.yaml"),
                                 override, f"log.dir={tmp_path / 'runs'}"], capture_output=True, text=True,
                                cwd=tmp_path, timeout=60)
        assert "exit 2 heavy []" in result.stdout, result.stdout + result.stderr
        assert message in result.stderr
    assert not (tmp_path / "runs").exists()


def test_a_model_of_your_own_gets_its_arguments_checked_before_the_data(tmp_path, idx_root, capsys):
    cfg = tiny_config(tmp_path, idx_root, model={"name": "templatemodel:MnistModel", "args": {"num_clases": 10}})
    code, out = kiln(capsys, "train", write_config(tmp_path, cfg))
    assert code == 2 and "does not take 'num_clases' (did you mean 'num_classes'?)" in out
    assert not (tmp_path / "runs").exists()
    assert kiln(capsys, "config", write_config(tmp_path, cfg))[0] == 2


def test_a_setup_error_after_the_folder_was_made_removes_it(tmp_path, idx_root, capsys):
    cfg = tiny_config(tmp_path, idx_root, optim={"name": "Adagrad", "args": {"lr_decay": "fast"}})
    code, _out = kiln(capsys, "train", write_config(tmp_path, cfg))
    assert code != 0 and not list((tmp_path / "runs").rglob("config.yaml"))


def test_training_imports_no_metrics_library_until_it_evaluates():
    result = subprocess.run([sys.executable, "-c", "import sys, kiln.train.session; print(sorted(m for m in "
                             "('torchmetrics', 'torchvision.models') if m in sys.modules))"],
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_a_mistyped_command_gets_a_suggestion(capsys):
    with pytest.raises(SystemExit) as e:
        main(["trian", "configs/fashion_mnist.yaml"])
    assert e.value.code == 2 and "did you mean 'train'?" in capsys.readouterr().err


# --------------------------------------------------------------------------- 7. smaller things

def test_kiln_models_known_without_torch_match_the_registry():
    from kiln.core.model_names import kiln_models
    from kiln.models import MODELS

    assert set(kiln_models()) == set(MODELS)
    import inspect

    for name, entry in kiln_models().items():
        assert list(entry.params) == list(inspect.signature(MODELS[name]).parameters), name


def test_tune_help_names_shipped_tune_configs(capsys):
    with pytest.raises(SystemExit):
        main(["tune", "--help"])
    named = {w for w in capsys.readouterr().out.split() if w.startswith("configs/")}
    assert named and all((ROOT / w).is_file() for w in named)
    assert {"image_folder.yaml", "text_csv.yaml"} <= {p.name for p in (ROOT / "configs" / "tune").glob("*.yaml")}


def test_a_list_element_can_be_overridden_by_its_index():
    cfg = load_config(FOLDER_CONFIG, ["model.args.channels.1=48", "data.augment.scale.0=0.2"])
    assert cfg.model.args["channels"] == [32, 48, 128] and cfg.data.augment.scale == (0.2, 1.0)
    with pytest.raises(Exception, match="has 3 elements"):
        load_config(FOLDER_CONFIG, ["model.args.channels.5=1"])


def test_files_kiln_writes_get_the_umask_mode(tmp_path):
    from kiln.core.state import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "predictions.csv", lambda f: f.write(b"file,label\n"))
    finally:
        os.umask(old)
    assert (tmp_path / "predictions.csv").stat().st_mode & 0o777 == 0o644


def test_the_interrupt_message_counts_epochs_as_status_json_does(tmp_path, idx_root):
    from kiln.config import build_config
    from kiln.core.errors import TrainingInterrupted
    from kiln.train import session
    from kiln.train.callbacks import LambdaCallback

    def stop(t):
        if t.state.step == 25:  # epoch 3, batch 1 (12 steps per epoch)
            t.stop_requested = True

    cfg = build_config(tiny_config(tmp_path, idx_root, trainer={"epochs": 3}))
    with pytest.raises(TrainingInterrupted) as e:
        session.train(cfg, quiet=True, callbacks=[LambdaCallback(on_step_end=stop)])
    status = json.loads((only_run(tmp_path / "runs") / "status.json").read_text())
    assert status["epoch"] == 2 and status["batch"] == 1
    assert "after 2 full epoch(s) and 1 batch(es) of epoch 3" in str(e.value)


def test_memory_growth_under_kilns_own_model_does_not_blame_user_code():
    from kiln.train.callbacks.memory_watch import GrowthWatch

    for own_code, blamed in ((True, True), (False, False)):
        watch = GrowthWatch(window=3, min_step=2, min_total=20, own_code=own_code)
        message = [watch.update({"mem/host_rss_mib": v}) for v in (100, 110, 120, 130)][-1]
        assert "mem/host_rss_mib in metrics.jsonl" in message and ("total += loss" in message) == blamed


def test_schema_has_a_readable_form(capsys):
    code, out = kiln(capsys, "schema", "--markdown", "trainer.min_steps")
    assert code == 0 and "| `trainer.min_steps` | int or null | `None` | At least this many" in out
    code, out = kiln(capsys, "schema", "--markdown")
    assert code == 0 and "## data.augment" in out and "`optim.lr`" in out
    code, out = kiln(capsys, "schema", "--markdown", "trainer.epoch")
    assert code == 2 and "did you mean 'trainer.epochs'?" in out

