"""kiln from Python (kiln.api, what `import kiln` exports): train, load, predict, test, export, config — used as a
notebook uses them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

import kiln
from conftest import tiny_config
from fakedata import make_images


def test_import_kiln_loads_no_torch_until_the_api_is_used():
    probe = "import sys, kiln; print('torch' in sys.modules); kiln.config; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]  # a config needs no torch either


def test_config_takes_names_dicts_and_overrides_as_strings_or_dicts():
    cfg = kiln.config("fashion_mnist", "trainer.epochs=3", {"optim": {"lr": 0.5}, "data.batch_size": 64})
    assert (cfg.trainer.epochs, cfg.optim.lr, cfg.data.batch_size) == (3, 0.5, 64)
    assert cfg.trainer.checkpoint.monitor == "val/acc"  # resolved, as `kiln config` shows it
    again = kiln.config(cfg, "trainer.epochs=4")
    assert again.trainer.epochs == 4 and again.optim.lr == 0.5
    with pytest.raises(kiln.KilnError, match=r"not of the form key\.path=value"):
        kiln.config("fashion_mnist", "trainer.epochs")
    with pytest.raises(kiln.KilnError, match="unknown key"):
        kiln.config({"trainer": {"epoch": 3}})
    with pytest.raises(kiln.KilnError, match="its own config"):
        kiln.train("fashion_mnist", resume="runs/somewhere")


def test_train_load_predict_test_and_export_from_python(tmp_path, idx_root):
    from kiln.train import session  # the engine package of the same name, imported first as kiln itself does

    assert callable(kiln.train) and callable(session.train)
    run = kiln.train(tiny_config(tmp_path, idx_root), "trainer.epochs=2")
    assert run.dir.is_dir() and run.config.trainer.epochs == 2
    assert len(run.history) == 2 and run.history[-1]["epoch"] == 2 and "val/acc" in run.metrics
    assert run.test is not None and 0 <= run.test["acc"] <= 1
    shown = run._repr_html_()  # what a notebook displays for the run
    assert str(run.dir) in shown and "val/acc" in shown and f"{run.test['acc']:.4g}" in shown
    figure = run.plot()  # the training curves, as a matplotlib Figure
    assert figure.axes and any(ax.lines for ax in figure.axes)
    pytest.importorskip("pandas")
    assert list(run.history.to_pandas()["epoch"]) == [1, 2]

    model = run.load()
    assert not model.module.training and model.config.trainer.epochs == 2
    images, _ = make_images(3, seed=4)
    paths = []
    for i, img in enumerate(images):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(img.numpy()).save(paths[-1])
    from_files = model.predict(paths)
    from_arrays = model.predict([img.numpy() for img in images])  # uint8 (H, W) arrays, as a notebook holds them
    from_pil = model.predict(Image.open(paths[0]))
    assert [r.label for r in from_files] == [r.label for r in from_arrays] and from_pil[0].label == from_files[0].label
    assert [r.probability for r in from_files] == pytest.approx([r.probability for r in from_arrays])
    frame = model.predict(paths, as_frame=True)
    assert list(frame["label"]) == [r.label for r in from_files]
    with pytest.raises(kiln.KilnError, match="cannot predict a float"):
        model.predict(0.5)
    assert model.test()["acc"] == pytest.approx(run.test["acc"])
    assert model.test(tta="hflip")["tta"] == "hflip" and (run.dir / "test_metrics-tta-hflip.json").is_file()
    flipped = model.predict(paths, tta="hflip")
    assert [r.probability for r in flipped] != pytest.approx([r.probability for r in from_files])
    exported = model.export("safetensors", tmp_path / "model.safetensors")
    assert exported == tmp_path / "model.safetensors" and exported.is_file()
    last = kiln.load(run.dir, "last").predict(paths[0])  # a path alone, not in a list
    assert len(last) == 1 and last[0].label in run.test["class_names"]
    pytest.importorskip("onnxruntime")
    onnx = kiln.load(model.export("onnx", tmp_path / "model.onnx"))  # an export answers as the run does
    assert isinstance(onnx, kiln.ExportedModel)
    served = onnx.predict([img.numpy() for img in images])
    assert [r.label for r in served] == [r.label for r in from_files]
    assert [r.probability for r in served] == pytest.approx([r.probability for r in from_files], abs=1e-4)


def test_two_trainings_in_one_process_log_like_two_commands(tmp_path, idx_root):
    import logging

    kiln_log = logging.getLogger("kiln")
    runs = [kiln.train(tiny_config(tmp_path, idx_root, name=f"run{i}"), "trainer.epochs=2",
                       "trainer.test_after_fit=false") for i in range(2)]
    handlers = len(kiln_log.handlers)
    kiln.train(tiny_config(tmp_path, idx_root, name="run2"), "trainer.epochs=1", "trainer.test_after_fit=false")
    assert len(kiln_log.handlers) == handlers  # no console or train.log handler left behind
    assert runs[0].dir != runs[1].dir
    for run in runs:
        assert run.dir.is_absolute()
        log = (run.dir / "train.log").read_text()
        assert "epoch 1/2" in log and "epoch 2/2" in log and f"run{runs.index(run)}" in str(run.dir)


def test_cross_validation_and_a_search_from_python(tmp_path, idx_root):
    """kiln.cv and kiln.tune, as python.md shows them: cv.json's summary back, the tune folder's path back."""
    import yaml

    cfg = tiny_config(tmp_path, idx_root, model={"name": "mlp", "args": {"hidden": [32]}},
                      trainer={"epochs": 1}, log={"dir": str(tmp_path / "runs"), "progress": "none", "tensorboard": False})
    summary = kiln.cv(cfg, "data.augment.hflip=false", folds=2)
    assert len(summary["folds"]) == 2 and 0 <= summary["held_out"]["acc"]["mean"] <= 1
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "tune.yaml").write_text(yaml.safe_dump({
        "base": "base.yaml", "metric": "val/acc", "mode": "max", "trials": 2, "sampler": "random", "pruner": "none",
        "space": {"optim.lr": [0.01, 0.1]}}))
    tune_dir = kiln.tune(tmp_path / "tune.yaml", "trainer.epochs=1")
    assert (tune_dir / "results.csv").is_file() and (tune_dir / "best.yaml").is_file()


def test_an_interrupt_in_a_notebook_saves_last_and_raises_keyboardinterrupt_with_the_resume_call(
        tmp_path, idx_root, monkeypatch):
    """The kernel's interrupt is a SIGINT to its process: the step finishes, last.pt is saved, and the notebook sees
    the KeyboardInterrupt it asked for, saying how to resume; resuming from Python finishes the run."""
    import json

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.setenv("KILN_TEST_PREEMPT", "1")
    cfg = tiny_config(tmp_path, idx_root, model={"name": "preemptmodel:WarnedAt", "args": {"at": 5, "sig": "SIGINT"}})
    with pytest.raises(KeyboardInterrupt, match=r"last.pt saved .* kiln.train\(None, resume="):
        kiln.train(cfg)
    run = next((tmp_path / "runs").glob("*/*"))
    assert (run / "checkpoints" / "last.pt").is_file()
    assert json.loads((run / "status.json").read_text())["state"] == "interrupted"
    monkeypatch.setenv("KILN_TEST_PREEMPT", "0")
    finished = kiln.train(None, resume=run)
    assert finished.dir == run.resolve() and finished.test is not None
