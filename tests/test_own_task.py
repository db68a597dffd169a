"""A task of your own (`task.name: package.module:Class`): the worked example of `kiln new --template task` trains,
tests and predicts through the CLI; a task from a config in a folder of its own trains from Python and is what
best.pt follows; each mistake in one is exit 2 (or a KilnError) naming the class and what to change."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config, write_config
from kiln.cli import main


def _fresh_my_project(monkeypatch):
    for name in [m for m in sys.modules if m == "my_project" or m.startswith("my_project.")]:
        monkeypatch.delitem(sys.modules, name)  # another template's my_project, imported by an earlier test


def test_the_worked_example_learns_its_ordered_classes_through_the_cli(tmp_path, monkeypatch, capsys):
    project = tmp_path / "ordinal"
    assert main(["new", str(project), "--template", "task"]) == 0
    assert (project / "my_project" / "tasks.py").is_file()
    monkeypatch.chdir(project)
    _fresh_my_project(monkeypatch)
    assert main(["train", "configs/train.yaml", "-q", "--run-dir", "runs/ordinal"]) == 0
    run = project / "runs" / "ordinal"
    results = json.loads((run / "test_metrics.json").read_text())
    assert results["task"] == "my_project.tasks:OrdinalRegression"
    assert results["mae_class"] < 0.8 and results["acc"] > 0.4  # guessing: MAE 1.6, accuracy 0.2 over 5 classes
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["trainer"]["checkpoint"] == {**saved["trainer"]["checkpoint"], "monitor": "val/mae_class",
                                              "mode": "min"}  # the task's direction, not "max" for a name kiln reads
    assert "val/mae_class" in (run / "metrics.csv").read_text().splitlines()[0]
    capsys.readouterr()
    assert main(["test", str(run)]) == 0
    assert "mae_class" in capsys.readouterr().out
    assert main(["report", str(run)]) == 0  # a task kiln has no figures for: its scores
    assert "mae_class" in (run / "report.html").read_text()


def test_a_task_in_a_folder_of_its_own_trains_from_python_and_best_pt_follows_its_metric(tmp_path, idx_root):
    import kiln

    code = tmp_path / "code"
    code.mkdir()
    (code / "hinge_task.py").write_text((Path(__file__).parent / "owntasks.py").read_text())
    cfg = tiny_config(tmp_path, idx_root, code_dir=str(code), task={"name": "hinge_task:Hinge", "args": {"margin": 0.5}},
                      trainer={"checkpoint": {"monitor": "val/hits"}})
    run = kiln.train(cfg)
    metrics = (run.dir / "metrics.csv").read_text().splitlines()
    assert "val/hits" in metrics[0] and "train/acc" not in metrics[0]  # train_metric None: no running metric
    saved = yaml.safe_load((run.dir / "config.yaml").read_text())
    assert saved["task"] == {"name": "hinge_task:Hinge", "args": {"margin": 0.5}}
    assert saved["trainer"]["checkpoint"]["mode"] == "max"
    assert json.loads((run.dir / "test_metrics.json").read_text())["hits"] > 0.3  # 10 classes: chance 0.1


@pytest.mark.parametrize("task, message", [
    ({"name": "owntasks:Hinj"}, "did you mean owntasks:Hinge?"),
    ({"name": "owntasks:NotATask"}, "Task subclass"),
    ({"name": "owntasks:Hinge", "args": {"margn": 2}}, "does not take 'margn' (did you mean 'margin'?)"),
    ({"name": "owntasks:NeedsLevels"}, "needs levels in task.args"),
    ({"name": "owntasks:NotScalar"}, "task owntasks:NotScalar: task_objective returned Tensor(32,); it must return a "
                                     "scalar tensor"),
    ({"name": "owntasks:Unproduced"}, "val_metrics() names recall_at_2 but metrics() computed hits"),
    ({"name": "owntasks:NoDirection"}, "say whether spread improve up or down"),
    ({"name": "owntasks:Twice"}, "val_metrics() names hits more than once"),
    ({"name": "ordinal"}, "a task of your own as package.module:Class"),
])
def test_a_mistake_in_a_task_of_your_own_is_exit_2_before_training(tmp_path, idx_root, capsys, task, message):
    config = write_config(tmp_path, tiny_config(tmp_path, idx_root, task=task))
    assert main(["train", str(config)]) == 2
    assert message in capsys.readouterr().err
    assert not list((tmp_path / "runs").rglob("status.json"))  # refused before training: no run left behind


def _votes(tmp_path, folder="runs"):
    from conftest import tiny_config
    from kiln.config import build_config

    raw = tiny_config(tmp_path, tmp_path, task={"name": "owntasks:Votes"},
                      data={"name": "userdata:VoteBlobs", "args": {"n": 192, "noise": 0.0}, "batch_size": 16, "val_split": 0.2,
                            "augment": {"crop_padding": 0, "hflip": False}},
                      model={"name": "mlp", "args": {"hidden": [32]}},
                      trainer={"epochs": 5, "log_every_n_steps": 2},
                      optim={"name": "adamw", "lr": 0.01}, schedule={"name": "cosine"},
                      log={"dir": str(tmp_path / folder), "progress": "none"})
    raw["data"].pop("root", None)
    return build_config(raw)


def test_targets_that_are_lists_of_dicts_train_and_resume_bit_exact_mid_epoch(tmp_path):
    from conftest import assert_resumes_bit_exact
    from kiln.train import session

    full = session.train(_votes(tmp_path, "learns"), quiet=True)
    assert full.test_metrics["acc"] > 0.6 and full.test_metrics["num_samples"] == 64  # 3 classes: chance 0.33
    assert_resumes_bit_exact(lambda folder: _votes(tmp_path, folder), stop_at=5)  # mid epoch 1


def test_targets_that_are_lists_of_dicts_under_two_processes_score_as_one_process(tmp_path):
    from conftest import run_cli

    cfg = _votes(tmp_path).model_dump(mode="json")
    cfg["trainer"]["epochs"] = 1
    path = write_config(tmp_path, cfg, "votes.yaml")
    out = run_cli("train", path, "--run-dir", tmp_path / "ddp", "--nproc", "2", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    two = json.loads((tmp_path / "ddp" / "test_metrics.json").read_text())  # each rank scored its shard
    assert main(["test", str(tmp_path / "ddp")]) == 0  # the same checkpoint, one process, the whole split
    one = json.loads((tmp_path / "ddp" / "test_metrics.json").read_text())
    assert two["num_samples"] == one["num_samples"] == 64
    assert two["acc"] == pytest.approx(one["acc"]) and two["loss"] == pytest.approx(one["loss"], rel=1e-5)


def test_targets_the_default_collate_cannot_batch_are_a_clear_error(tmp_path):
    from kiln.config import task_config
    from kiln.core.errors import KilnError
    from kiln.train import session

    cfg = _votes(tmp_path).with_values({"task": task_config(name="owntasks:Hinge")})
    with pytest.raises(KilnError, match=r"the train targets cannot be batched .*sample \d+: \(\{label: int, "
                                        r"weight: float\}.*need the task's collate_targets \(task owntasks:Hinge\)"):
        session.train(cfg, quiet=True)


def test_a_task_says_how_its_model_is_called_targets_in_training_only(tmp_path, idx_root):
    import owntasks

    from kiln.config import build_config
    from kiln.train import session

    owntasks.SeesTargets.calls.update({"with": 0, "without": 0})
    cfg = tiny_config(tmp_path, idx_root, task={"name": "owntasks:TargetsInTraining"},
                      model={"name": "owntasks:SeesTargets", "args": {}}, trainer={"epochs": 1})
    session.train(build_config(cfg), quiet=True)
    train_batches = 384 // 32  # the training split of the generated data, in batches of 32
    assert owntasks.SeesTargets.calls["with"] == train_batches
    assert owntasks.SeesTargets.calls["without"] > 0  # validation, the first-batch check and the test: no targets


def test_switching_a_shipped_config_to_a_task_of_your_own_leaves_out_the_old_tasks_settings(capsys):
    """fashion_mnist's task section has multiclass settings (label_smoothing): task.name=pkg:Class drops them, as a
    switch to another of kiln's tasks does, instead of refusing them as unknown keys."""
    assert main(["config", "fashion_mnist", "task.name=owntasks:Hinge", "task.args.margin=0.5"]) == 0
    out = capsys.readouterr()
    assert yaml.safe_load(out.out)["task"] == {"name": "owntasks:Hinge", "args": {"margin": 0.5}}
    assert "leaving out the multiclass settings of the config it overrides (task.label_smoothing)" in out.err


def test_cv_shows_the_headline_of_a_task_without_a_test_summary(tmp_path, idx_root):
    from kiln.commands.cv import fold_metrics
    from kiln.config import build_config

    cfg = build_config(tiny_config(tmp_path, idx_root, task={"name": "owntasks:Hinge"}))
    assert fold_metrics(cfg) == ("hits", "loss")  # Hinge names no summary_metrics; its headline is hits
