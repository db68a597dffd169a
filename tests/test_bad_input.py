"""Every user mistake: exit code 2, a message naming the problem, no traceback, nothing saved damaged."""

import hashlib
import json

import pytest

from conftest import only_run, run_cli, tiny_config, write_config
from fakedata import write_idx_dataset
from kiln.cli import main
from kiln.core.state import load_checkpoint


def kiln(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("overrides, message", [
    (["trainer.epoch=3"], "unknown key 'trainer.epoch' — did you mean 'trainer.epochs'?"),
    (["trainer.epochs=many"], "'trainer.epochs': Input should be a valid integer"),
    (["trainer.epochs"], "'trainer.epochs' is not of the form key.path=value"),
    (["data.name=cifar"], "unknown dataset 'cifar' — registered datasets:"),
    (["model.name=vgg"], "unknown model 'vgg' — kiln's models:"),
    (["optim.name=rmsprop"], "'optim.name': 'rmsprop' is neither one of kiln's (sgd, adam, adamw) nor a torch.optim class "
                             "— did you mean RMSprop"),
    (["schedule.name=poly"], "'schedule.name': 'poly' is neither one of kiln's (none, step, cosine, linear, "
                             "onecycle, reduce_on_plateau) nor a torch.optim.lr_scheduler class"),
    (["model.args.width=3"], "model 'cnn' does not take 'width'"),
    (["trainer.checkpoint.monitor=val/accuracy"],
     "trainer.checkpoint.monitor='val/accuracy' is a metric this run will never produce; available: train/loss"),
    (["data.val_split=0", "trainer.early_stopping.enabled=true"],
     "never produce (there is no validation split: data.val_split=0)"),
    (["trainer.device=cuda:3"], "trainer.device=cuda:3 but"),
])
def test_bad_config(tmp_path, config_file, capsys, overrides, message):
    code, output = kiln(capsys, "train", config_file, *overrides)
    assert code == 2 and message in output and "Traceback" not in output
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").glob("*/*/checkpoints"))


def test_missing_config_file(tmp_path, capsys):
    code, output = kiln(capsys, "train", tmp_path / "nope.yaml")
    assert code == 2 and "config file not found" in output


def test_no_config_given(capsys):
    code, output = kiln(capsys, "train", "optim.lr=0.1")
    assert code == 2 and "no config file given" in output


def test_missing_data(tmp_path, config_file, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, output = kiln(capsys, "train", config_file, f"data.root={tmp_path / 'empty'}")
    assert code == 2 and "dataset 'fashion_mnist' not found" in output and "data.download=true" in output


def test_corrupt_data_file(tmp_path, idx_root, capsys):
    folder = write_idx_dataset(tmp_path / "broken", 64, 16)
    images = folder / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:300])
    path = write_config(tmp_path, tiny_config(tmp_path, folder))
    code, output = kiln(capsys, "train", path)
    assert code == 2 and "train-images-idx3-ubyte.gz" in output and "Traceback" not in output


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, idx_root):
    tmp = tmp_path_factory.mktemp("trained")
    path = write_config(tmp, tiny_config(tmp, idx_root, trainer={"epochs": 1}))
    assert main(["train", str(path), "--quiet"]) == 0
    return only_run(tmp / "runs")


def _digest(run):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (run / "checkpoints").glob("*.pt")}


def test_checkpoint_from_another_model(trained_run, tmp_path, idx_root, capsys):
    before = _digest(trained_run)
    code, output = kiln(capsys, "test", trained_run, "model.args.channels=[4,8]")
    assert code == 2 and "does not match the model" in output and "with different shapes" in output
    assert "0.weight: checkpoint (8, 1, 3, 3) vs model (4, 1, 3, 3)" in output
    mlp = write_config(tmp_path, tiny_config(tmp_path, idx_root, model={"name": "mlp", "args": {"hidden": [16]}},
                                             trainer={"epochs": 1, "test_after_fit": False}))
    assert main(["train", str(mlp), "--quiet"]) == 0
    foreign = only_run(tmp_path / "runs") / "checkpoints" / "last.pt"
    code, output = kiln(capsys, "test", trained_run, "--checkpoint", foreign)
    assert code == 2 and "missing from the checkpoint" in output and "not in the model" in output
    assert _digest(trained_run) == before


def test_corrupt_or_foreign_checkpoint(trained_run, tmp_path, capsys):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00" * 100)
    code, output = kiln(capsys, "test", trained_run, "--checkpoint", garbage)
    assert code == 2 and "cannot load checkpoint" in output and "garbage.pt" in output
    code, output = kiln(capsys, "test", trained_run, "--checkpoint", tmp_path / "missing.pt")
    assert code == 2 and "checkpoint not found" in output


def test_not_a_run_folder(tmp_path, capsys):
    code, output = kiln(capsys, "test", tmp_path)
    assert code == 2 and "is not a kiln run folder" in output
    code, output = kiln(capsys, "train", "--resume", tmp_path)
    assert code == 2 and "is not a kiln run folder" in output


def test_resume_auto_without_unfinished_run(trained_run, capsys):
    code, output = kiln(capsys, "train", trained_run / "config.yaml", "--resume", "auto")
    assert code == 2 and "found no unfinished run of 'tiny'" in output


def test_argument_errors_exit_2():
    assert run_cli("train", "--resume").returncode == 2
    assert run_cli("nonsense").returncode == 2


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, idx_root, cli):
    raw = tiny_config(tmp_path, idx_root, model={"name": "nanmodel:NanAfter", "args": {"after": 15}},
                      trainer={"epochs": 3, "log_every_n_steps": 2})
    result = cli("train", write_config(tmp_path, raw))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "loss became NaN/Inf in epoch 2" in result.stderr and "nan_policy=skip_batch" in result.stderr
    run = only_run(tmp_path / "runs")
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["loop"]["epoch"] == 1  # the good epoch, not NaN weights
    assert all(t.isfinite().all() for t in last["model"].values())
    assert json.loads((run / "status.json").read_text())["state"] == "stopped"


def test_nan_policy_skip_batch_keeps_training(tmp_path, idx_root, cli):
    raw = tiny_config(tmp_path, idx_root, model={"name": "nanmodel:NanAfter", "args": {"after": 15}},
                      trainer={"epochs": 2, "nan_policy": "skip_batch", "test_after_fit": False})
    result = cli("train", write_config(tmp_path, raw))
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (only_run(tmp_path / "runs") / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["train/skipped_batches"] == 2 * 12 - 15
    assert all(v == v for r in rows for v in r.values() if isinstance(v, float))  # no NaN logged
