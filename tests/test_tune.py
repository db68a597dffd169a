"""kiln tune: samplers, pruning, resume, parallel workers, best.yaml, Ray."""

import csv
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import run_cli, tiny_config, write_config
from kiln.commands.tune.runner import run_tune
from kiln.commands.tune.space import load_tune_config
from kiln.core.errors import KilnError

SHIPPED = sorted((Path(__file__).resolve().parents[1] / "configs" / "tune").glob("*.yaml"))


@pytest.fixture
def base(tmp_path, idx_root):
    cfg = tiny_config(tmp_path, idx_root, model={"name": "mlp", "args": {"hidden": [32]}},
                      data={"augment": {"crop_padding": 0, "hflip": False}}, schedule={"name": "none"},
                      optim={"name": "sgd", "lr": 0.05}, trainer={"epochs": 2, "test_after_fit": False},
                      log={"dir": str(tmp_path / "runs"), "progress": "none", "tensorboard": False})
    return write_config(tmp_path, cfg, "base.yaml")


def tune_file(tmp_path, **fields):
    spec = {"base": "base.yaml", "metric": "val/acc", "mode": "max", "trials": 4, "sampler": "tpe",
            "pruner": "none", "space": {"optim.lr": {"type": "float", "low": 0.005, "high": 0.2, "log": True},
                                        "model.args.dropout": [0.0, 0.2]}}
    spec.update(fields)
    return write_config(tmp_path, spec, "tune.yaml")


def results(tune_dir):
    with open(tune_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_tune_configs_validate(path):
    tune = load_tune_config(path)
    assert tune.base.is_file() and tune.space


def test_the_command_lines_epochs_run_in_every_trial_over_the_files_step_floor(tmp_path, base, caplog):
    from kiln.commands.tune.space import base_raw, trial_config

    raw = yaml.safe_load(base.read_text())
    raw["trainer"].update(epochs=30, min_steps=1500)
    write_config(tmp_path, raw, "base.yaml")
    tune = load_tune_config(tune_file(tmp_path))
    with caplog.at_level("WARNING", logger="kiln"):
        trial = trial_config(base_raw(tune, ["trainer.epochs=4"]), {"optim.lr": 0.01})
    assert trial.trainer.epochs == 4 and trial.trainer.min_steps is None  # as kiln train runs it
    assert "trainer.epochs=4 from the command line runs" in caplog.text
    assert trial_config(base_raw(tune, []), {}).trainer.min_steps == 1500  # without it, the file's floor holds


@pytest.mark.parametrize("sampler", ["grid", "random", "tpe", "cmaes"])
def test_every_sampler_runs_a_small_search(tmp_path, base, sampler):
    space = {"optim.lr": [0.01, 0.1], "model.args.dropout": [0.0, 0.2]} if sampler == "grid" else None
    path = tune_file(tmp_path, sampler=sampler, **({"space": space} if space else {}))
    tune_dir = run_tune(path, [])
    rows = results(tune_dir)
    assert len(rows) == 4 and {r["state"] for r in rows} == {"complete"}
    assert [r["rank"] for r in rows] == ["1", "2", "3", "4"]
    values = [float(r["val/acc"]) for r in rows]
    assert values == sorted(values, reverse=True)
    assert all((tune_dir / f"trial-{i:03d}" / "checkpoints" / "last.pt").is_file() for i in range(4))
    best = yaml.safe_load((tune_dir / "best.yaml").read_text())
    assert best["optim"]["lr"] == pytest.approx(float(rows[0]["param:optim.lr"]))
    if sampler == "grid":
        combos = {(r["param:optim.lr"], r["param:model.args.dropout"]) for r in rows}
        assert len(combos) == 4  # every combination once
    assert (tune_dir / "plots" / "optimization_history.png").is_file()


def test_pruning_stops_hopeless_trials(tmp_path, base):
    path = tune_file(tmp_path, trials=8, sampler="random", pruner="median",
                     space={"optim.lr": [1.0e-7, 0.05]})
    tune_dir = run_tune(path, ["trainer.epochs=4"])
    rows = results(tune_dir)
    pruned = [r for r in rows if r["state"] == "pruned"]
    assert pruned and all(r["param:optim.lr"] == "1e-07" for r in pruned)
    assert all(int(r["epochs"]) < 4 for r in pruned)
    assert json.loads((Path(pruned[0]["run_dir"]) / "status.json").read_text())["state"] == "pruned"


def test_unknown_metric_and_bad_space_are_rejected(tmp_path, base):
    with pytest.raises(KilnError, match=r"metric='val/accuracy' is never produced.*available: train/loss"):
        run_tune(tune_file(tmp_path, metric="val/accuracy"), [])
    with pytest.raises(KilnError, match=r"grid search needs lists of values; optim.lr"):
        run_tune(tune_file(tmp_path, sampler="grid"), [])
    with pytest.raises(KilnError, match=r"unknown key 'trainer.epoch'"):
        run_tune(tune_file(tmp_path), ["trainer.epoch=3"])
    with pytest.raises(KilnError, match=r"model.args.hidden: choices must be numbers, strings"):
        run_tune(tune_file(tmp_path, space={"model.args.hidden": [[16], [32]]}), [])


@pytest.mark.slow
def test_resume_after_a_kill_finishes_without_repeating(tmp_path, base, capsys):
    from kiln.cli import main

    path = tune_file(tmp_path, trials=6, sampler="random")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.Popen([sys.executable, "-m", "kiln", "tune", str(path), "trainer.epochs=6"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    finished = []
    while time.time() < deadline and len(finished) < 2:
        finished = [p for p in (tmp_path / "runs").glob("tiny/tune-*/trial-*/status.json")
                    if json.loads(p.read_text() or "{}").get("state") == "finished"]
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    tune_dir = next((tmp_path / "runs" / "tiny").glob("tune-*"))
    done_before = {p.parent.name for p in finished}

    assert main(["tune", str(path), "trainer.epochs=6", "--resume", str(tune_dir)]) == 0  # in process
    rows = results(tune_dir)
    complete = [r for r in rows if r["state"] == "complete"]
    assert len(complete) == 6 and len({r["trial"] for r in complete}) == 6
    assert done_before <= {Path(r["run_dir"]).name for r in complete}  # finished trials were kept, not re-run
    assert "best config:" in capsys.readouterr().out


def test_two_workers_share_one_study(tmp_path, base):
    tune_dir = run_tune(tune_file(tmp_path, trials=4, sampler="random"), [], workers=2)
    rows = results(tune_dir)
    assert len([r for r in rows if r["state"] == "complete"]) == 4
    import optuna

    study = optuna.load_study(study_name=None, storage=f"sqlite:///{tune_dir / 'study.db'}")
    assert len({t.user_attrs["pid"] for t in study.trials}) == 2


@pytest.mark.slow
def test_separate_workers_on_one_journal_study_survive_a_killed_worker(tmp_path, base, cli):
    """Two `kiln tune --storage journal:` processes (as on two machines): one is killed mid-trial; the other
    marks that trial failed once its lease runs out, runs its values again, and the study completes its grid."""
    import optuna
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    grid = [0.01, 0.02, 0.05, 0.1]
    path = tune_file(tmp_path, trials=4, sampler="grid", space={"optim.lr": grid})
    journal = tmp_path / "shared" / "study.log"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "KILN_TUNE_LEASE_SECONDS": "3"}
    cmd = [sys.executable, "-m", "kiln", "tune", str(path), "trainer.epochs=4", "--storage", f"journal:{journal}"]
    doomed = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    survivor = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def trials():
        storage = optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
        return optuna.load_study(study_name="tiny", storage=storage).get_trials(deepcopy=False)

    deadline = time.time() + 120
    while time.time() < deadline:  # until the doomed worker is inside a trial
        if journal.is_file() and any(t.state == TrialState.RUNNING and t.user_attrs.get("pid") == doomed.pid
                                     for t in _quietly(trials)):
            break
        time.sleep(0.1)
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate(timeout=60)
    _out, err = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, err[-3000:]
    assert "marked failed, its values to be run again" in err

    done = [t for t in trials() if t.state == TrialState.COMPLETE]
    failed = [t for t in trials() if t.state == TrialState.FAIL]
    assert sorted(t.params["optim.lr"] for t in done) == grid  # every grid point once, none twice
    assert len(failed) == 1 and failed[0].user_attrs["pid"] == doomed.pid
    assert (tmp_path / "shared" / "tune.yaml").is_file() and (tmp_path / "shared" / "results.csv").is_file()
    status = cli("tune", "--status", journal)
    assert status.returncode == 0 and "study tiny: 4 complete, 1 fail" in status.stdout, status.stdout


def _quietly(fn):
    """The trials, or none while the journal is being created."""
    try:
        return fn()
    except Exception:  # noqa: BLE001 — no study in the file yet
        return []


def test_best_yaml_trains(tmp_path, base, cli):
    tune_dir = run_tune(tune_file(tmp_path, trials=2, sampler="random"), [])
    result = cli("train", tune_dir / "best.yaml", "trainer.epochs=1")
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed (pip install -e .[ray])")
def test_local_ray_search(tmp_path, base):
    result = run_cli("tune", tune_file(tmp_path, trials=3, sampler="tpe", pruner="asha"), "--backend", "ray",
                     timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    tune_dir = next((tmp_path / "runs" / "tiny").glob("tune-*"))
    rows = results(tune_dir)
    assert len(rows) == 3 and all(r["val/acc"] and r["state"] == "complete" for r in rows)
    assert len({r["run_dir"] for r in rows}) == 3  # every trial trained in a folder of its own
    assert all((Path(r["run_dir"]) / "checkpoints" / "last.pt").is_file() for r in rows)
    assert (tune_dir / "best.yaml").is_file()


def test_the_ranking_keeps_whole_cells_at_a_normal_terminal_width():
    import io

    from rich.console import Console

    from kiln.cli.tune_cmd import ranking_table

    rows = [{"rank": str(i + 1), "trial": str(i), "state": state, "val/acc": f"0.85{i}21", "epochs": "12",
             "param:optim.lr": "0.00123456", "param:optim.weight_decay": "0.0123", "param:model.args.dropout": "0.25",
             "param:data.augment.scale.0": "0.345", "parameters": "1234567", "s_per_epoch": "3.21",
             "samples_per_s": "1234.5", "test/acc": "0.84", "run_dir": "/somewhere/long/trial-000"}
            for i, state in enumerate(["complete", "complete", "pruned"])]
    table, dropped = ranking_table(rows, "runs/x/tune-1", 80)
    out = io.StringIO()
    Console(file=out, width=80).print(table)
    lines = out.getvalue().splitlines()
    assert max(map(len, lines)) <= 80 and "…" not in out.getvalue()
    assert "0.8502" in out.getvalue() and "pruned" in out.getvalue() and "0.001235" in out.getvalue()
    assert " lr " in out.getvalue() and " dropout " in out.getvalue()  # searched keys by a short name, first
    assert "run_dir" not in dropped and {"parameters", "s_per_epoch", "data.augment.scale.0"} <= set(dropped)
    wider, dropped = ranking_table(rows, "runs/x/tune-1", 120)
    out = io.StringIO()
    Console(file=out, width=120).print(wider)
    assert " scale.0 " in out.getvalue() and "data.augment.scale.0" not in dropped


@pytest.mark.slow
def test_ctrl_c_stops_a_search_cleanly_with_the_resume_command(tmp_path, base):
    path = tune_file(tmp_path, trials=3, sampler="random")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.Popen([sys.executable, "-m", "kiln", "tune", str(path), "trainer.epochs=50"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "runs").glob("tiny/tune-*/trial-000/metrics.jsonl")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "search interrupted; continue it with: kiln tune" in err
    assert "no plots/: Optuna's plots compare complete trials, and this search has 0" in err
