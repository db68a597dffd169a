"""End to end through the real CLI on generated IDX data."""

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import only_run, run_cli, tiny_config, write_config
from kiln.core.state import load_checkpoint


def test_train_then_test(tmp_path, config_file):
    result = run_cli("train", config_file, "trainer.epochs=2")
    assert result.returncode == 0, result.stderr
    run = only_run(tmp_path / "runs")
    assert f"run folder: {run}" in result.stdout
    said = result.stdout + result.stderr
    assert said.count("| accuracy 0.") == 1 and "(best.pt)" in said  # the final test, said once

    for name in ("config.yaml", "metrics.jsonl", "metrics.csv", "train.log", "test_metrics.json", "status.json",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for key in ("step", "lr", "train/loss", "train/acc", "val/loss", "val/acc", "time/epoch_s", "time/samples_per_s"):
        assert key in rows[-1], key
    assert rows[-1]["val/acc"] > 0.3  # chance is 0.1 on the generated data
    assert (run / "metrics.csv").read_text().splitlines()[0].startswith("epoch,step,lr,train/loss")
    assert json.loads((run / "status.json").read_text())["state"] == "finished"
    assert "epoch 2/2" in (run / "train.log").read_text()

    events = EventAccumulator(str(run / "tb")).Reload()
    assert {"val/acc", "train/loss", "lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("val/acc")] == [1, 2]
    assert events.Scalars("val/acc")[-1].value == rows[-1]["val/acc"] or \
        abs(events.Scalars("val/acc")[-1].value - rows[-1]["val/acc"]) < 1e-6

    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["loop"]["epoch"] == 2 and last["loop"]["finished"] and last["config"]["name"] == "tiny"

    result = run_cli("test", run, "--checkpoint", "last")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["checkpoint"].endswith("last.pt") and metrics["num_samples"] == 160
    assert 0.3 < metrics["acc"] <= 1 and 0 < metrics["f1"] <= 1 and metrics["acc_top5"] >= metrics["acc"]
    cm = torch.tensor(metrics["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 160
    assert abs(cm.diag().sum().item() / 160 - metrics["acc"]) < 1e-6
    assert len(metrics["per_class_acc"]) == 10 and "T-shirt/top" in metrics["per_class_acc"]
    assert "acc" in result.stdout and "test_metrics.json" in result.stdout


def test_config_and_schema_commands(config_file):
    result = run_cli("config", config_file, "optim.lr=0.3")
    assert result.returncode == 0 and "lr: 0.3" in result.stdout and "batch_size: 32" in result.stdout
    result = run_cli("schema")
    assert result.returncode == 0 and json.loads(result.stdout)["title"] == "kiln config"


def test_cli_start_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, kiln.cli; kiln.cli.build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_subcommand_explains_itself():
    for command in ("train", "test", "config", "schema"):
        result = run_cli(command, "--help")
        assert result.returncode == 0 and "usage: kiln " + command in result.stdout


def test_fast_dev_run(tmp_path, idx_root, cli):
    path = write_config(tmp_path, tiny_config(tmp_path, idx_root, trainer={"epochs": 5, "fast_dev_run": True}))
    result = cli("train", path)
    assert result.returncode == 0, result.stderr
    rows = (only_run(tmp_path / "runs") / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1 and json.loads(rows[0])["step"] == 2


def test_predict_image_files(tmp_path, config_file, capsys):
    from PIL import Image

    from fakedata import make_images
    from kiln.cli import main

    assert main(["train", str(config_file), "trainer.epochs=2"]) == 0  # in-process: the predictions below are the CLI
    run = only_run(tmp_path / "runs")
    images, labels = make_images(4, seed=9)
    paths = []
    for i, (img, _label) in enumerate(zip(images, labels)):
        path = tmp_path / f"sample{i}.png"
        Image.fromarray(img.numpy()).resize((56, 56)).convert("RGB").save(path)  # other size and mode
        paths.append(path)
    result = run_cli("predict", run, *paths, "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert [r["input"] for r in rows] == [str(p) for p in paths]
    assert all(0 < sum(t["probability"] for t in r["top"]) <= 1 + 1e-6 and r["label"] in names for r in rows)
    assert sum(r["label"] == names[int(y)] for r, y in zip(rows, labels)) >= 2  # the model learned something
    assert main(["predict", str(run), str(tmp_path / "missing.png")]) == 2
    assert "image not found" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["config", "{cfg}", "-q", "trainer.epochs=3"],
    ["config", "-q", "{cfg}", "trainer.epochs=3", "--json"],
    ["config", "{cfg}", "trainer.epochs=3", "-q"],
])
def test_options_may_stand_anywhere_among_the_overrides(argv, config_file, capsys):
    from kiln.cli import main

    assert main([a.format(cfg=config_file) for a in argv]) == 0
    assert "epochs: 3" in capsys.readouterr().out.replace('"epochs": 3', "epochs: 3")


def test_train_with_an_option_between_config_and_overrides(tmp_path, config_file):
    from kiln.cli import main

    assert main(["train", str(config_file), "--run-dir", str(tmp_path / "r"), "-q", "trainer.epochs=1",
                 "trainer.fast_dev_run=true"]) == 0
    assert (tmp_path / "r" / "checkpoints" / "last.pt").is_file()


def test_an_unknown_option_shows_the_subcommands_usage(capsys):
    from kiln.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "x.yaml", "--bogus"])
    assert e.value.code == 2 and "usage: kiln train" in capsys.readouterr().err


def test_predict_says_which_weights_and_warns_while_the_run_is_unfinished(tmp_path, config_file, cli):
    from PIL import Image

    from fakedata import make_images
    from kiln.runs import RunDir, RunLock, RunStatus

    assert cli("train", config_file, "trainer.epochs=2").returncode == 0
    run = RunDir(only_run(tmp_path / "runs"))
    images, _ = make_images(3, seed=9)
    for i, img in enumerate(images):
        Image.fromarray(img.numpy()).save(tmp_path / f"s{i}.png")
    finished = cli("predict", run.path, tmp_path / "s0.png")
    assert finished.returncode == 0 and "best.pt of" in finished.stderr and "after epoch" in finished.stderr
    assert "of 2)" in finished.stderr and "WARNING" not in finished.stderr.upper()

    run.write_status(RunStatus.INTERRUPTED, epoch=1)
    interrupted = cli("predict", run.path, tmp_path / "s0.png", "--checkpoint", "last")
    assert interrupted.returncode == 0 and "the run was interrupted before its last epoch" in interrupted.stderr
    assert f"kiln train --resume {run}" in interrupted.stderr and "last.pt of" in interrupted.stderr
    run.write_status(RunStatus.RUNNING, epoch=1)
    assert "ended without finishing" in cli("predict", run.path, tmp_path / "s0.png").stderr
    lock = RunLock(run).acquire()  # a live trainer holds the run's lock
    try:
        assert "the run is still training (process" in cli("predict", run.path, tmp_path / "s0.png").stderr
    finally:
        lock.release()

    # a CSV of paths: the column that names image files is found, or named with --path-column
    (tmp_path / "test.csv").write_text("id,file_name\n" + "".join(f"{i},s{i}.png\n" for i in range(3)))
    found = cli("predict", run.path, tmp_path / "test.csv", "--json")
    assert found.returncode == 0 and len(found.stdout.splitlines()) == 3 and "'file_name'" in found.stderr
    (tmp_path / "two.csv").write_text("a,b\n" + "".join(f"s{i}.png,s{i}.png\n" for i in range(3)))
    ambiguous = cli("predict", run.path, tmp_path / "two.csv")
    assert ambiguous.returncode == 2 and "a and b all name image files" in ambiguous.stderr
    assert "--path-column" in ambiguous.stderr
    named = cli("predict", run.path, tmp_path / "two.csv", "--path-column", "b", "--json")
    assert named.returncode == 0 and len(named.stdout.splitlines()) == 3
