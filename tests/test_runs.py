"""The run folder's one owner (RunDir), the one route to a trained model (load_trained), and run folders written
by an older kiln (checkpoint format 1) still working with test, predict, report and --resume."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from kiln.cli import main
from kiln.core.errors import KilnError
from kiln.core.state import FORMAT_VERSION, load_checkpoint
from kiln.runs import RunDir
from kiln.train.trained import load_trained

FORMAT1 = Path(__file__).parent / "data" / "run_format1"  # written by kiln before the task section existed
FORMAT2 = Path(__file__).parent / "data" / "run_format2"  # written by kiln at defa556, before the structure rework


def test_run_dirs_made_in_the_same_second_get_their_own_folder(tmp_path):
    runs = [RunDir.create(tmp_path, "exp") for _ in range(3)]
    assert len({r.path for r in runs}) == 3 and all(r.path.is_dir() for r in runs)
    assert runs[1].path.name.startswith(runs[0].path.name)


def test_checkpoint_choice_falls_back_from_best_to_last_and_explains_what_is_missing(tmp_path):
    run = RunDir(tmp_path)
    with pytest.raises(KilnError, match="not a kiln run folder"):
        RunDir.open(tmp_path)
    with pytest.raises(KilnError, match=r"no checkpoints/best.pt"):
        run.checkpoint("best")
    run.checkpoints.mkdir()
    run.last.write_bytes(b"x")
    assert run.checkpoint("best") == run.last  # a run that never validated has no best.pt
    with pytest.raises(KilnError, match="checkpoint not found"):
        run.checkpoint(str(tmp_path / "nope.pt"))


@pytest.fixture
def old_run(tmp_path) -> Path:
    run = tmp_path / "old_run"
    shutil.copytree(FORMAT1, run)
    return run


def test_load_trained_converts_a_format1_run(old_run):
    trained = load_trained(old_run, device="cpu")
    assert trained.state.format == FORMAT_VERSION
    assert trained.cfg.task.label_smoothing == 0.1 and trained.cfg.trainer.label_smoothing == 0.0
    assert not trained.model.training and trained.info.num_classes == 10
    weights = torch.load(old_run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(v, trained.model.state_dict()[k]) for k, v in weights.items())


def test_a_format1_run_still_tests_predicts_reports_and_resumes(old_run, idx_root, tmp_path, capsys, caplog):
    root = f"data.root={idx_root}"
    assert main(["test", str(old_run), root]) == 0
    assert json.loads((old_run / "test_metrics.json").read_text())["num_samples"] == 160
    image = tmp_path / "x.png"
    from PIL import Image

    Image.new("L", (28, 28), 128).save(image)
    assert main(["predict", str(old_run), str(image), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["label"]
    assert main(["report", str(old_run)]) == 0 and (old_run / "report.html").is_file()
    caplog.clear()
    assert main(["train", "--resume", str(old_run), "trainer.epochs=2", root, "log.progress=none"]) == 0
    assert "deprecated" not in caplog.text  # kiln's own saved files are upgraded silently
    state = load_checkpoint(old_run / "checkpoints" / "last.pt")
    assert state["format"] == FORMAT_VERSION and state["loop"]["epoch"] == 2


def test_a_format2_run_still_tests_predicts_exports_and_resumes(tmp_path, idx_root, capsys):
    """A run folder saved by kiln before the structure rework (checkpoint format 2; its data lived elsewhere)."""
    run = tmp_path / "run"
    shutil.copytree(FORMAT2, run)
    root = f"data.root={idx_root}"
    before = load_checkpoint(run / "checkpoints" / "last.pt")
    assert before["format"] == 2 and before["loop"]["epoch"] == 1
    assert main(["test", str(run), root]) == 0
    assert json.loads((run / "test_metrics.json").read_text())["num_samples"] == 160
    from PIL import Image

    Image.new("L", (28, 28), 200).save(tmp_path / "x.png")
    capsys.readouterr()
    assert main(["predict", str(run), str(tmp_path / "x.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["label"] in before["data_info"]["class_names"]
    assert main(["export", str(run), "--format", "torchscript", root]) == 0  # parity-checked on the moved data
    assert main(["train", "--resume", str(run), "trainer.epochs=2", root, "log.progress=none"]) == 0
    after = load_checkpoint(run / "checkpoints" / "last.pt")
    assert after["loop"]["epoch"] == 2 and after["loop"]["step"] > before["loop"]["step"]


def test_a_checkpoint_from_a_newer_kiln_is_refused_clearly(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"format": FORMAT_VERSION + 1, "model": {}}, path)
    with pytest.raises(KilnError, match="newer kiln"):
        load_checkpoint(path)


def test_label_smoothing_in_the_trainer_section_still_works_with_a_warning(caplog):
    from kiln.config import build_config

    cfg = build_config({"trainer": {"label_smoothing": 0.2}})
    assert cfg.task.label_smoothing == 0.2 and "deprecated" in caplog.text
    with pytest.raises(KilnError, match="disagree"):
        build_config({"trainer": {"label_smoothing": 0.2}, "task": {"label_smoothing": 0.1}})


def test_a_second_writer_of_a_live_run_folder_stops_before_writing(tmp_path, idx_root, capsys):
    from kiln.runs import RunLock

    run = tmp_path / "run"
    shutil.copytree(FORMAT1, run)
    before = (run / "metrics.jsonl").read_bytes(), (run / "config.yaml").read_bytes()
    holder = RunLock(RunDir(run)).acquire()  # the original run, still training
    try:
        code = main(["train", "--resume", str(run), "trainer.epochs=2", f"data.root={idx_root}"])
        err = capsys.readouterr().err
        assert code == 2 and "is being written by process" in err and str(os.getpid()) in err
        assert ((run / "metrics.jsonl").read_bytes(), (run / "config.yaml").read_bytes()) == before
        assert main(["test", str(run), f"data.root={idx_root}"]) == 0  # readers are not blocked
    finally:
        holder.release()
    assert main(["train", "--resume", str(run), "trainer.epochs=2", f"data.root={idx_root}",
                 "log.progress=none"]) == 0  # released (a SIGKILLed holder releases it too: the OS drops it)


def _flip_a_byte_in_tensor_data(path: Path) -> None:
    """Flip one byte in the middle of the largest tensor record of a torch.save zip file."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        f.seek(at)
        byte = f.read(1)[0]
        f.seek(at)
        f.write(bytes([byte ^ 0xFF]))


def test_a_flipped_byte_in_a_checkpoint_is_caught_and_resume_falls_back(tmp_path, idx_root, capsys, caplog):
    from conftest import tiny_config
    from kiln.config import build_config
    from kiln.core.errors import CorruptCheckpoint
    from kiln.train import session

    cfg = build_config(tiny_config(tmp_path, idx_root, trainer={"epochs": 3, "checkpoint": {"keep_top_k": 3}}))
    run = RunDir(session.train(cfg, quiet=True).run_dir)
    _flip_a_byte_in_tensor_data(run.last)
    torch.load(run.last, weights_only=True)  # torch alone does not notice
    with pytest.raises(CorruptCheckpoint, match="checkpoint corrupted"):
        load_checkpoint(run.last)
    assert main(["test", str(run), "--checkpoint", "last"]) == 2
    assert "checkpoint corrupted" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "trainer.epochs=4", "log.progress=none"]) == 0
    # the CLI's console handler (stderr) has it; caplog too when an earlier test left the kiln logger propagating
    assert "the newest intact checkpoint" in caplog.text + capsys.readouterr().err
    assert load_checkpoint(run.last)["loop"]["epoch"] == 4  # rewritten, intact again


def test_kept_test_predictions_serve_only_the_checkpoint_that_made_them(tmp_path):
    import torch

    from kiln.runs import RunDir

    run = RunDir(tmp_path)
    assert run.test_predictions("abc") is None  # none kept
    run.write_test_predictions("abc", torch.rand(4, 3), torch.arange(4))
    predictions, targets = run.test_predictions("abc")
    assert predictions.shape == (4, 3) and targets.tolist() == [0, 1, 2, 3]
    assert run.test_predictions("another checkpoint") is None and run.test_predictions(None) is None
    run.test_predictions_file.write_bytes(b"not a torch file")
    assert run.test_predictions("abc") is None  # unreadable: kiln report predicts again
