"""Weights & Biases (offline) and MLflow round trips; a failing tracker never loses the run."""

import importlib.util
import json

import pytest

from conftest import only_run, run_cli, tiny_config, write_config


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="wandb is not installed (pip install -e .[wandb])")
def test_wandb_offline_run_directory(tmp_path, idx_root, monkeypatch):
    cfg = tiny_config(tmp_path, idx_root, log={"wandb": {"project": "kiln-test", "mode": "offline"}})
    result = run_cli("train", write_config(tmp_path, cfg), env={"WANDB_SILENT": "true", "WANDB_DISABLE_CODE": "true"})
    assert result.returncode == 0, result.stderr[-3000:]
    run = only_run(tmp_path / "runs")
    offline = list((run / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    (log_file,) = offline[0].glob("run-*.wandb")  # the run's record log, uploaded later by `wandb sync`
    records = log_file.read_bytes()
    for key in (b"val/acc", b"train/loss", b"lr", b"test/acc", b"optim", b"label_smoothing"):
        assert key in records, key  # per-epoch metrics, final test metrics and the config as hyperparameters


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed (pip install -e .[mlflow])")
def test_mlflow_run_read_back_through_its_client(tmp_path, idx_root, cli):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"  # the default store: SQLite in log.dir
    cfg = tiny_config(tmp_path, idx_root, log={"mlflow": {"experiment": "kiln-test"}})
    result = cli("train", write_config(tmp_path, cfg))
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("kiln-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.params["optim.lr"] == "0.05" and run.data.params["model.name"] == "cnn"
    history = client.get_metric_history(run.info.run_id, "val/acc")
    assert [m.step for m in history] == [1, 2]
    test_acc = json.loads((only_run(tmp_path / "runs") / "test_metrics.json").read_text())["acc"]
    assert run.data.metrics["test/acc"] == pytest.approx(test_acc)
    assert run.info.status == "FINISHED"


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed")
def test_unreachable_tracker_is_a_warning_not_a_lost_run(tmp_path, idx_root, cli, monkeypatch):
    cfg = tiny_config(tmp_path, idx_root, log={"mlflow": {"tracking_uri": "http://127.0.0.1:9"}})
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    result = cli("train", write_config(tmp_path, cfg))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MLflow tracker could not start" in result.stderr
    assert (only_run(tmp_path / "runs") / "checkpoints" / "best.pt").is_file()
