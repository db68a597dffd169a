"""FSDP2 (`trainer.strategy: fsdp`) on CPU with gloo and real torchrun processes: it trains what one process
with the whole batch trains, a preempted run resumes bit-exact from its sharded checkpoint, its checkpoints resume
on another number of processes (both ways) and serve test, predict and export."""

import json
import shutil

import pytest
import torch
from test_distributed import torchrun

from conftest import only_run, write_config
from fakedata import write_ag_news
from kiln.cli import main
from kiln.core.state import load_checkpoint


@pytest.fixture(scope="module")
def news_root(tmp_path_factory):
    return write_ag_news(tmp_path_factory.mktemp("ag_news"), n_train=320, n_test=80)


def news_cfg(tmp_path, root, folder, batch_size, **trainer):
    """No dropout: two processes at batch B and one at 2B must train the same weights (and the same average of
    them: trainer.ema, kept per shard under FSDP)."""
    return {"name": "fsdp", "seed": 1,
            "data": {"name": "ag_news", "root": str(root), "batch_size": batch_size, "val_split": 64,
                     "text": {"collate": "pad", "max_len": 32}},
            "model": {"name": "preemptmodel:TextWarnedAt",
                      "args": {"at": 11, "d_model": 32, "heads": 2, "layers": 2, "ff": 64, "dropout": 0.0,
                               "max_len": 32}},
            "optim": {"name": "adamw", "lr": 0.003}, "schedule": {"name": "linear", "warmup_epochs": 0.5},
            "trainer": {"epochs": 3, "accumulate": 2, "grad_clip": 0.5, "log_every_n_steps": 1,
                        "ema": {"decay": 0.8}, **trainer},
            "log": {"dir": str(tmp_path / folder), "progress": "none", "tensorboard": False}}


def rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def same_weights(a, b, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol, rtol=0), (k, (a[k] - b[k]).abs().max())


@pytest.mark.slow
def test_fsdp_trains_like_one_process_resumes_exactly_and_serves_every_command(tmp_path, news_root, monkeypatch,
                                                                                capsys):
    monkeypatch.setenv("KILN_CACHE", str(tmp_path / "cache"))
    fsdp = {"strategy": "fsdp"}
    assert main(["train", str(write_config(tmp_path, news_cfg(tmp_path, news_root, "one", 32), "one.yaml"))]) == 0
    full = torchrun("train", write_config(tmp_path, news_cfg(tmp_path, news_root, "full", 16, **fsdp), "full.yaml"))
    assert full.returncode == 0, full.stderr[-3000:]
    assert "fsdp: 2 blocks and the root sharded over 2 processes" in full.stderr
    one, two = only_run(tmp_path / "one"), only_run(tmp_path / "full")
    for a, b in zip(rows(one), rows(two)):  # accumulation and the global-norm clip included
        assert b["train/loss"] == pytest.approx(a["train/loss"], rel=1e-5)
        assert b["val/loss"] == pytest.approx(a["val/loss"], rel=1e-5)
    shards = two / "checkpoints" / "last.dcp"
    assert {"__0_0.distcp", "__1_0.distcp", ".metadata", "state.pt", "manifest.json"} <= \
        {p.name for p in shards.iterdir()}  # each rank wrote its own shards
    assert not (two / "checkpoints" / "last.pt").exists() and (two / "checkpoints" / "best.dcp").is_dir()
    reference = load_checkpoint(shards)  # consolidated on one process
    # AdamW turns fp32 rounding differences of the two summation orders into ~1e-5 weight differences
    single = load_checkpoint(one / "checkpoints" / "last.pt")
    for weights in ("model", "raw_model"):  # the average, the weights themselves
        same_weights(single[weights], reference[weights], atol=1e-4)
    assert not all(torch.equal(reference["model"][k], reference["raw_model"][k]) for k in reference["model"])
    assert reference["world_size"] == 2 and all(isinstance(k, str) for k in reference["optimizer"]["state"])

    # preempted mid-epoch (SIGUSR1 on the 11th forward: epoch 2, batch 3), then resumed: bit-identical
    cut_cfg = write_config(tmp_path, news_cfg(tmp_path, news_root, "cut", 16, **fsdp), "cut.yaml")
    cut = torchrun("train", cut_cfg, env={"KILN_TEST_PREEMPT": "1"})
    assert cut.returncode != 0 and "preempted" in cut.stderr, cut.stderr[-3000:]
    run = only_run(tmp_path / "cut")
    saved = load_checkpoint(run / "checkpoints" / "last.dcp")["loop"]
    assert saved["epoch"] == 1 and saved["batch"] > 0
    elsewhere = tmp_path / "other" / run.name
    shutil.copytree(run, elsewhere)
    resumed = torchrun("train", "--resume", run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    after = load_checkpoint(run / "checkpoints" / "last.dcp")
    same_weights(reference["model"], after["model"])
    same_weights(reference["raw_model"], after["raw_model"])
    assert reference["optimizer"]["state"].keys() == after["optimizer"]["state"].keys()
    for name, state in reference["optimizer"]["state"].items():
        assert all(torch.equal(torch.as_tensor(v), torch.as_tensor(after["optimizer"]["state"][name][k]))
                   for k, v in state.items()), name
    assert [r["train/loss"] for r in rows(two)] == [r["train/loss"] for r in rows(run)]

    # the 2-process sharded run resumed by one process; a 1-process run continued by two under FSDP
    assert main(["train", "--resume", str(elsewhere)]) == 0
    assert load_checkpoint(elsewhere / "checkpoints" / "last.pt")["world_size"] == 1
    assert not (elsewhere / "checkpoints" / "last.dcp").exists()  # the stale shards are gone
    more = torchrun("train", "--resume", one, "trainer.epochs=4", "trainer.strategy=fsdp")
    assert more.returncode == 0, more.stderr[-3000:]
    assert len(rows(one)) == 4 and load_checkpoint(one / "checkpoints" / "last.dcp")["world_size"] == 2
    assert not (one / "checkpoints" / "last.pt").exists()

    # the sharded checkpoints serve test, predict and export on one process (consolidated on load)
    capsys.readouterr()
    assert main(["test", str(two)]) == 0
    assert main(["predict", str(two), "The minister signed the treaty"]) == 0
    assert main(["export", str(two), "--format", "onnx"]) == 0
    assert main(["export", str(two), "--format", "safetensors"]) == 0
    from safetensors.torch import load_file

    same_weights(load_checkpoint(two / "checkpoints" / "best.dcp")["model"], load_file(two / "model.safetensors"))
    assert (two / "model.onnx").is_file()


@pytest.mark.parametrize("change, message", [
    ({"fsdp": {"cpu_offload": True}}, "cpu_offload"),
    ({"precision": "16"}, "trainer.precision=bf16"),
    ({"fsdp": {"blocks": ["NoSuchLayer"]}, "activation_checkpointing": True}, "no module of these classes"),
])
def test_what_fsdp_cannot_do_is_refused_before_training(tmp_path, news_root, monkeypatch, capsys, change, message):
    monkeypatch.setenv("KILN_CACHE", str(tmp_path / "cache"))
    cfg = news_cfg(tmp_path, news_root, "runs", 16, strategy="fsdp", **change)
    assert main(["train", str(write_config(tmp_path, cfg))]) == 2
    assert message in capsys.readouterr().err
