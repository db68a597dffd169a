"""kiln export: ONNX (checked through onnxruntime), torch.export and TorchScript, each parity-checked on the run's
test data; kiln predict on the ONNX file agrees with the run folder."""

import json

import pytest

from conftest import tiny_config
from fakedata import make_images
from kiln.cli import main
from kiln.config import build_config
from kiln.train import session

pytest.importorskip("onnxruntime", reason="pip install -e .[export]")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, idx_root):
    tmp = tmp_path_factory.mktemp("export")
    cfg = build_config(tiny_config(tmp, idx_root, trainer={"epochs": 1, "limit_train_batches": 4}))
    return session.train(cfg, quiet=True).run_dir


@pytest.mark.parametrize("fmt, suffix", [("onnx", ".onnx"), ("exported", ".pt2"), ("torchscript", ".ts.pt")])
def test_every_format_is_written_parity_checked_and_described(trained, fmt, suffix, capsys):
    assert main(["export", str(trained), "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert f"model{suffix}" in out and "largest output difference" in out
    meta = json.loads((trained / f"model{suffix}.json").read_text())
    assert meta["class_names"][0] == "T-shirt/top" and meta["input"]["shape"] == ["batch", 1, 28, 28]
    assert meta["parity_max_abs_diff"] <= 1e-4


def test_a_small_model_exports_to_one_onnx_file_and_the_message_names_every_file(trained, tmp_path, capsys):
    out = tmp_path / "small.onnx"
    (tmp_path / "small.onnx.data").write_bytes(b"stale weights of an earlier export")
    assert main(["export", str(trained), "--format", "onnx", "--out", str(out)]) == 0
    assert not (tmp_path / "small.onnx.data").exists()  # the weights are inside small.onnx
    assert "(+ small.onnx.json)" in capsys.readouterr().out


def test_predict_on_the_onnx_file_agrees_with_the_run_folder(trained, tmp_path, capsys):
    from PIL import Image

    assert main(["export", str(trained), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    paths = []
    for i, img in enumerate(make_images(5, seed=4)[0]):
        Image.fromarray(img.numpy()).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    _same_predictions(trained, tmp_path / "m.onnx", paths, capsys)


def _same_predictions(run, onnx_file, inputs: list[str], capsys) -> None:
    """kiln predict on the run folder and on its exported ONNX file give the same labels and probabilities."""
    capsys.readouterr()
    assert main(["predict", str(run), *inputs, "--json"]) == 0
    from_run = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["predict", str(onnx_file), *inputs, "--json"]) == 0
    from_onnx = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(from_run) == len(inputs) and [r["label"] for r in from_run] == [r["label"] for r in from_onnx]
    assert all(abs(a["probability"] - b["probability"]) < 1e-4 for a, b in zip(from_run, from_onnx))


def test_bad_exports_are_explained(trained, tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "onnx"]) == 2  # not a run folder
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    assert main(["predict", str(tmp_path / "junk.onnx"), "x.png"]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.fixture(scope="module")
def text_runs(tmp_path_factory):
    from fakedata import write_ag_news

    tmp = tmp_path_factory.mktemp("export_text")
    root = write_ag_news(tmp / "news", n_train=200, n_test=60)
    runs = {}
    for name, model, collate in (("bag", "embedding_bag", "offsets"), ("transformer", "transformer", "pad"),
                                 ("gru", "gru", "pad")):
        cfg = build_config({"name": name, "data": {"name": "ag_news", "root": str(root), "text": {"collate": collate}},
                            "model": {"name": model}, "trainer": {"epochs": 1},
                            "log": {"dir": str(tmp / "runs"), "progress": "none", "tensorboard": False}})
        runs[name] = session.train(cfg, quiet=True).run_dir
    return runs


@pytest.mark.parametrize("name", ["bag", "transformer"])
def test_text_models_export_with_their_vocabulary_and_predict_alike(text_runs, tmp_path, capsys, name):
    run = text_runs[name]
    assert main(["export", str(run), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    meta = json.loads((tmp_path / "m.onnx.json").read_text())
    assert meta["parity_max_abs_diff"] <= 1e-4 and meta["input"]["vocab"][:2] == ["<pad>", "<unk>"]
    assert meta["input"]["layout"] == ("offsets" if name == "bag" else "pad")
    texts = ["the coach and the match, a goal this season", "shares rally as investors cheer the merger", "über"]
    _same_predictions(run, tmp_path / "m.onnx", texts, capsys)


def test_a_packed_gru_is_refused_for_onnx_with_the_reason_and_exports_as_torchscript(text_runs, capsys):
    assert main(["export", str(text_runs["gru"]), "--format", "onnx"]) == 2
    err = capsys.readouterr().err
    assert "pack_padded_sequence" in err and "try --format torchscript" in err
    assert not (text_runs["gru"] / "model.onnx").exists()
    assert main(["export", str(text_runs["gru"]), "--format", "torchscript"]) == 0


def test_a_narrow_resnet_exports_to_onnx_within_tolerance(tmp_path, idx_root, capsys):
    cfg = build_config(tiny_config(tmp_path, idx_root, model={"name": "templatemodel:NarrowResNet"},
                                   trainer={"epochs": 1, "limit_train_batches": 3}))
    run = session.train(cfg, quiet=True).run_dir
    assert main(["export", str(run), "--format", "onnx"]) == 0
    assert json.loads((run / "model.onnx.json").read_text())["parity_max_abs_diff"] <= 1e-4


def test_safetensors_holds_the_weights_and_what_rebuilds_the_model_and_fine_tunes_again(trained, tmp_path, capsys):
    from safetensors import safe_open

    from kiln.core.state import load_checkpoint

    out = tmp_path / "weights.safetensors"
    assert main(["export", str(trained), "--format", "safetensors", "--out", str(out)]) == 0
    assert f"model.pretrained={out}" in capsys.readouterr().out
    best = load_checkpoint(trained / "checkpoints" / "best.pt")["model"]
    with safe_open(str(out), "pt") as f:
        meta = json.loads(f.metadata()["kiln"])
        assert set(f.keys()) == set(best) and all((f.get_tensor(k) == best[k]).all() for k in best)
    assert meta["model"] == {"name": "cnn", "args": {"channels": [8, 16], "dropout": 0.1}}
    assert meta["class_names"][0] == "T-shirt/top" and meta["data_info"]["in_channels"] == 1
    # read back as the start of another run: every tensor loads
    from kiln.models import build_model
    from kiln.models.pretrained import load_pretrained
    from kiln.train.trained import load_trained

    model = build_model(load_trained(trained).cfg.model, load_trained(trained).info)
    cfg = build_config({"model": {"name": "cnn", "args": {"channels": [8, 16]}, "pretrained": str(out)}}).model
    report = load_pretrained(model, cfg)
    assert len(report.loaded) == len(best) and not report.new and not report.adapted
