"""SLURM: `srun kiln train CONFIG` inside an allocation (ranks and the rendezvous from SLURM's variables, node
lists parsed without scontrol), a GPU layout nccl cannot use refused first, and the preemption warning
(SIGUSR1) saving last.pt with the exit status a requeued job resumes from."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import only_run, tiny_config, write_config
from kiln.cli import PREEMPTED, main
from kiln.core.errors import KilnError
from kiln.core.launcher import check_layout, detect, parse_nodelist

TESTS = Path(__file__).parent
SRUN_TASK = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": "5", "SLURM_LOCALID": "1",
             "SLURM_NODEID": "1", "SLURM_STEP_NUM_TASKS": "8", "SLURM_NTASKS": "8",
             "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_NODELIST": "gpu[07-08]",
             "SLURM_STEP_TASKS_PER_NODE": "4(x2)", "SLURM_GPUS_ON_NODE": "4"}


@pytest.mark.parametrize("text, hosts", [
    ("gpu[01-04,07]", ["gpu01", "gpu02", "gpu03", "gpu04", "gpu07"]),
    ("node1,node2", ["node1", "node2"]),
    ("gpu[01-02],cpu[5,7]", ["gpu01", "gpu02", "cpu5", "cpu7"]),
    ("rack[1-2]-n[08-09]", ["rack1-n08", "rack1-n09", "rack2-n08", "rack2-n09"]),
    ("x[098-101]", ["x098", "x099", "x100", "x101"]),
    ("localhost", ["localhost"]),
])
def test_compressed_node_lists_are_read_without_scontrol(text, hosts):
    assert parse_nodelist(text) == hosts


@given(st.lists(st.integers(0, 999), min_size=1, max_size=12, unique=True), st.integers(1, 4))
def test_a_node_list_compressed_as_slurm_does_reads_back_in_order(numbers, width):
    numbers = sorted(numbers)
    width = max(width, len(str(numbers[-1])))
    runs, start = [], numbers[0]  # consecutive numbers become a-b ranges, as SLURM writes them
    for prev, n in zip(numbers, [*numbers[1:], None]):
        if n != prev + 1:
            runs.append(f"{start:0{width}d}" + (f"-{prev:0{width}d}" if prev != start else ""))
            start = n
    assert parse_nodelist(f"n[{','.join(runs)}]") == [f"n{n:0{width}d}" for n in numbers]


def test_a_bad_range_is_named():
    with pytest.raises(KilnError, match=r"cannot read the range '9-3'"):
        parse_nodelist("gpu[9-3]")


def test_srun_tasks_become_ranks_and_torchrun_wins_when_both_are_set():
    launch = detect(SRUN_TASK)
    assert (launch.launcher, launch.rank, launch.local_rank, launch.world_size, launch.node) == ("slurm", 5, 1, 8, 1)
    assert (launch.master_addr, launch.master_port, launch.tasks_on_node) == ("gpu07", 15000 + 4242, 4)
    assert detect({**SRUN_TASK, "RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0"}).launcher == "torchrun"
    batch_script = {k: v for k, v in SRUN_TASK.items() if k != "SLURM_STEP_ID"}  # kiln run by sbatch itself
    assert detect(batch_script).launcher == "none"
    assert detect({**SRUN_TASK, "SLURM_STEP_TASKS_PER_NODE": "4,3", "SLURM_NODEID": "1"}).tasks_on_node == 3


def test_a_layout_nccl_cannot_use_is_refused_before_any_process_group():
    check_layout(detect(SRUN_TASK), "nccl")  # 4 tasks, 4 GPUs on the node
    with pytest.raises(KilnError, match=r"srun started 4 tasks on node 1 but SLURM gave it 2 GPU\(s\).*"
                                        r"--ntasks-per-node=2"):
        check_layout(detect({**SRUN_TASK, "SLURM_GPUS_ON_NODE": "2"}), "nccl")
    check_layout(detect({**SRUN_TASK, "SLURM_GPUS_ON_NODE": "2"}), "gloo")  # gloo lets tasks share


def test_doctor_says_which_launcher_it_detected(capsys, monkeypatch):
    for key, value in SRUN_TASK.items():
        monkeypatch.setenv(key, value)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert main(["doctor"]) == 0
    assert "launcher: slurm: rank 5 of 8 (local rank 1, node 1), rendezvous gpu07:19242" in capsys.readouterr().out


def test_the_preemption_warning_saves_and_a_requeued_job_resumes(tmp_path, idx_root, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    cfg = tiny_config(tmp_path, idx_root, model={"name": "preemptmodel:WarnedAt", "args": {"at": 5}},
                      trainer={"epochs": 2})
    path = write_config(tmp_path, cfg)
    monkeypatch.setenv("KILN_TEST_PREEMPT", "1")
    assert main(["train", str(path)]) == PREEMPTED == 75
    run = only_run(tmp_path / "runs")
    assert json.loads((run / "status.json").read_text())["state"] == "interrupted"
    assert (run / "checkpoints" / "last.pt").is_file()
    monkeypatch.setenv("KILN_TEST_PREEMPT", "0")
    assert main(["train", str(path), "--resume", "auto"]) == 0  # what the requeued job runs
    assert only_run(tmp_path / "runs") == run
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


def test_two_srun_tasks_train_one_run_on_cpu(tmp_path, idx_root):
    """What `srun --ntasks=2 kiln train CONFIG` starts: two processes with SLURM's variables and no torchrun."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write_config(tmp_path, tiny_config(tmp_path, idx_root, data={"batch_size": 16},
                                             trainer={"epochs": 1}, log={"progress": "none", "tensorboard": False}))
    base = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    procs = []
    for rank in range(2):
        env = {**base, "SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_PROCID": str(rank),
               "SLURM_LOCALID": str(rank), "SLURM_NODEID": "0", "SLURM_STEP_NUM_TASKS": "2",
               "SLURM_STEP_NODELIST": "localhost", "SLURM_STEP_TASKS_PER_NODE": "2", "MASTER_PORT": str(port)}
        procs.append(subprocess.Popen([sys.executable, "-m", "kiln", "train", str(cfg)], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    run = only_run(tmp_path / "runs")
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "finished" and status["world_size"] == 2
    assert outs[0][0].count("run folder:") == 1 and "run folder:" not in outs[1][0]  # rank 0 reports
