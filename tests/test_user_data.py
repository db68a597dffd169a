"""Your own Dataset class (data.name: package.module:Class): splits, sample shapes, collate, workers, resume,
and the mistakes that must be caught before training."""

import json

import pytest
import torch

from conftest import tiny_config
from kiln.cli import main
from kiln.config import build_config
from kiln.core.errors import KilnError, TrainingInterrupted
from kiln.core.state import load_checkpoint
from kiln.data import DataRequest, build_data
from kiln.train import session
from kiln.train.callbacks import LambdaCallback


def _cfg(tmp_path, dataset: str, model: str = "TinyNet", folder: str = "runs", **data):
    raw = tiny_config(tmp_path, tmp_path, data={"name": f"userdata:{dataset}", "batch_size": 16, "val_split": 0.2,
                                                "augment": {"crop_padding": 0, "hflip": False}, **data},
                      model={"name": f"userdata:{model}", "args": {}},
                      trainer={"epochs": 2, "log_every_n_steps": 2}, log={"dir": str(tmp_path / folder),
                                                                          "progress": "none"})
    raw["data"].pop("root", None)
    return build_config(raw)


def test_a_dataset_with_splits_trains_tests_and_resumes_bit_exact(tmp_path):
    full = session.train(_cfg(tmp_path, "Blobs", folder="full"), quiet=True)
    assert full.test_metrics["num_samples"] == 32 and full.test_metrics["class_names"] == ["a", "b", "c"]

    def stop(t):
        if t.state.step == 5:  # mid epoch 1
            t.stop_requested = True

    cfg = _cfg(tmp_path, "Blobs", folder="cut")
    with pytest.raises(TrainingInterrupted):
        session.train(cfg, quiet=True, callbacks=[LambdaCallback(on_step_end=stop)])
    run = next((tmp_path / "cut").glob("*/*"))
    resumed = session.train(cfg, resume=run, quiet=True)
    a = load_checkpoint(full.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # the noise in __getitem__ replays exactly
    assert main(["test", str(resumed.run_dir)]) == 0


def test_randomness_in_getitem_gives_the_same_batches_with_any_number_of_workers(tmp_path):
    def first_batches(workers):
        cfg = _cfg(tmp_path, "Blobs", num_workers=workers)
        data = build_data(cfg.data, DataRequest(seed=cfg.seed, device=torch.device("cpu"), splits=("train",)))
        return [x for x, _ in data.train.epoch(1)][:3]

    assert all(torch.equal(a, b) for a, b in zip(first_batches(0), first_batches(2)))


def test_no_split_argument_takes_a_seeded_validation_split_and_never_tests_on_training_data(tmp_path):
    result = session.train(_cfg(tmp_path, "NoSplit", num_classes=3), quiet=True)
    assert result.test_metrics is None and "val/acc" in result.metrics
    with_test = session.train(_cfg(tmp_path, "NoSplit", num_classes=3, test_args={"n": 30, "seed": 9}), quiet=True)
    assert with_test.test_metrics["num_samples"] == 30


def test_dict_inputs_go_to_the_model_as_keywords(tmp_path):
    result = session.train(_cfg(tmp_path, "TwoInputs", model="TwoInputNet"), quiet=True)
    assert result.metrics["train/loss"] > 0


def test_the_users_collate_pads_variable_length_samples(tmp_path):
    cfg = _cfg(tmp_path, "Sequences", model="SeqNet", collate="userdata:pad_collate")
    assert session.train(cfg, quiet=True).metrics["train/loss"] > 0


@pytest.mark.parametrize("dataset, model, extra, message", [
    ("NoSplit", "TinyNet", {}, "cannot tell the number of classes"),
    ("BadLabels", "TinyNet", {}, "sample 5 has label 7, outside 0..2"),
    ("Unlabelled", "TinyNet", {}, "samples have no labels"),
    ("Stream", "TinyNet", {}, "IterableDataset without a split argument"),
    ("Stream", "TinyNet", {"val_split": 0}, "Stream has no __len__"),
    ("Sequences", "SeqNet", {}, "cannot be batched.*data.collate"),
    ("Blobs", "TwoInputNet", {}, r"the model cannot take the first training batch \(samples \["),
    ("Blobs", "TinyNet", {"collate": "os:getcwd"}, "did not call it"),
])
def test_mistakes_are_caught_before_training_with_the_samples_named(tmp_path, dataset, model, extra, message):
    with pytest.raises(KilnError, match=message):
        session.train(_cfg(tmp_path, dataset, model=model, **extra), quiet=True)
    if dataset != "BadLabels":  # labels are checked as batches are read: a bad one may sit in a later batch
        assert not list((tmp_path / "runs").glob("*/*/checkpoints/*.pt"))


def test_two_process_ddp_on_a_users_dataset(tmp_path):
    import yaml

    from conftest import run_cli

    cfg = _cfg(tmp_path, "Blobs").model_dump(mode="json")
    cfg["trainer"]["epochs"] = 1
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = run_cli("train", path, "--run-dir", tmp_path / "ddp", "--nproc", "2", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads((tmp_path / "ddp" / "test_metrics.json").read_text())["num_samples"] == 32
    assert json.loads((tmp_path / "ddp" / "status.json").read_text())["world_size"] == 2


def test_inspect_shows_a_model_on_a_users_dict_inputs(tmp_path, capsys):
    import yaml

    cfg = _cfg(tmp_path, "TwoInputs", model="TwoInputNet", test_args={"n": 12, "seed": 4})
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["inspect", str(path), "--sample", "2"]) == 0  # dict inputs, sliced to 2 samples, as keywords
    out = capsys.readouterr().out
    assert "fc" in out and "(2, 3)" in out


def test_an_iterable_dataset_trains_tests_and_resumes_to_the_same_weights(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="kiln"):
        full = session.train(_cfg(tmp_path, "BlobStream", folder="full"), quiet=True)
    assert "IterableDataset, read as it streams: kiln does not shuffle it" in caplog.text
    assert full.test_metrics["num_samples"] == 32

    def stop(t):
        if t.state.step == 7:  # mid epoch 2: the stream is re-read and the trained batches skipped
            t.stop_requested = True

    cfg = _cfg(tmp_path, "BlobStream", folder="cut")
    with pytest.raises(TrainingInterrupted):
        session.train(cfg, quiet=True, callbacks=[LambdaCallback(on_step_end=stop)])
    resumed = session.train(cfg, resume=next((tmp_path / "cut").glob("*/*")), quiet=True)
    a = load_checkpoint(full.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_predict_on_a_users_dataset_reads_its_predict_split_or_a_file(tmp_path, capsys):
    import json

    run = session.train(_cfg(tmp_path, "WithPredict"), quiet=True).run_dir
    assert main(["predict", str(run), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(rows) == 32 and rows[0]["input"] == "sample 0" and rows[0]["label"] in ("a", "b", "c")
    torch.save(torch.randn(5, 2, 8, 8), tmp_path / "new.pt")
    assert main(["predict", str(run), "--file", str(tmp_path / "new.pt"), "--json"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
    blobs = session.train(_cfg(tmp_path, "Blobs", folder="blobs"), quiet=True).run_dir
    assert main(["predict", str(blobs)]) == 2
    assert "has no predict split" in capsys.readouterr().err


def test_kilns_image_models_take_their_input_shape_from_the_first_sample(tmp_path):
    """`data.name=pkg:Dataset model.name=cnn` once stopped with `cnn() missing ... 'in_channels' and 'image_size'`."""
    cfg = _cfg(tmp_path, "Blobs", model="TinyNet").model_copy(update={"model": build_config(
        {"model": {"name": "cnn", "args": {"channels": [4, 8], "hidden": 16}}}).model})
    result = session.train(cfg, quiet=True)
    info = load_checkpoint(result.run_dir / "checkpoints" / "best.pt")["data_info"]
    assert info["in_channels"] == 2 and list(info["image_size"]) == [8, 8]  # recorded with the run
    assert main(["test", str(result.run_dir)]) == 0  # rebuilt from the record
    # one side is enough where a size must be given by hand
    from kiln.models.vision import cnn
    assert cnn(in_channels=1, image_size=28, num_classes=3)[-1].out_features == 3
