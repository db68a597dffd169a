"""Sharded checkpoints (kiln.core.sharded) on one process: what every rank writes, read back whole; damage and
an unfinished write are refused, a crash mid-swap leaves the previous checkpoint readable."""

import warnings

import pytest
import torch

from kiln.core.errors import CorruptCheckpoint
from kiln.core.state import copy_checkpoint, load_checkpoint, save_checkpoint
from kiln.runs import RunDir


def payload():
    torch.manual_seed(0)
    model = {"fc.weight": torch.randn(4, 3), "fc.bias": torch.randn(4)}
    optimizer = {"state": {"fc.weight": {"step": torch.tensor(3.0), "exp_avg": torch.randn(4, 3)}},
                 "param_groups": [{"lr": 0.1, "params": ["fc.weight", "fc.bias"]}]}
    return {"config": {"seed": 1}, "model": model, "optimizer": optimizer, "loop": {"epoch": 2, "batch": 0}}


def save(path, state):
    with warnings.catch_warnings():  # torch warns that no process group is set up: one process is meant here
        warnings.simplefilter("ignore")
        save_checkpoint(path, state)


def test_a_sharded_checkpoint_reads_back_whole(tmp_path):
    path = tmp_path / "last.dcp"
    save(path, payload())
    back = load_checkpoint(path)
    assert back["loop"] == {"epoch": 2, "batch": 0} and back["config"] == {"seed": 1}
    for k, v in payload()["model"].items():
        assert torch.equal(back["model"][k], v)
    assert torch.equal(back["optimizer"]["state"]["fc.weight"]["exp_avg"],
                       payload()["optimizer"]["state"]["fc.weight"]["exp_avg"])
    assert back["optimizer"]["param_groups"][0]["params"] == ["fc.weight", "fc.bias"]
    assert len(back["sha256"]) == 64 and not list(tmp_path.glob(".*"))  # no partial or old folder left


def test_saving_again_replaces_the_folder_and_copies_share_its_files(tmp_path):
    last, best = tmp_path / "last.dcp", tmp_path / "best.dcp"
    save(last, payload())
    copy_checkpoint(last, best)
    state = payload() | {"loop": {"epoch": 3, "batch": 0}}
    save(last, state)
    assert load_checkpoint(last)["loop"]["epoch"] == 3 and load_checkpoint(best)["loop"]["epoch"] == 2
    assert (best / "state.pt").stat().st_nlink == 1  # the old last's files live on only in best


def test_damage_and_unfinished_writes_are_refused(tmp_path):
    path = tmp_path / "last.dcp"
    save(path, payload())
    shard = next(path.glob("*.distcp"))
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpoint, match=f"{shard.name} in .* do not match the checksums"):
        load_checkpoint(path)
    (path / "manifest.json").unlink()
    with pytest.raises(CorruptCheckpoint, match="not a complete sharded checkpoint"):
        load_checkpoint(path)


def test_a_crash_between_the_two_renames_keeps_the_previous_checkpoint(tmp_path):
    run = RunDir(tmp_path)
    path = run.checkpoint_path("last", sharded=True)
    path.parent.mkdir()
    save(path, payload())
    aside = path.with_name(".last.dcp.old")
    path.rename(aside)  # moved aside, the new folder never renamed in
    assert run.last == aside and load_checkpoint(run.last)["loop"]["epoch"] == 2  # read where it lies
    assert run.has_last()
    save(path, payload() | {"loop": {"epoch": 3, "batch": 0}})  # the next save replaces it
    assert run.last == path and not aside.exists() and load_checkpoint(run.last)["loop"]["epoch"] == 3
