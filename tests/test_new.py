"""kiln new: a project that trains at once through kiln, passes its own smoke test, and refuses to overwrite."""

import os
import subprocess
import sys

import pytest

from kiln.cli import main


@pytest.mark.parametrize("template", ["image", "text", "folder"])
def test_a_new_project_trains_and_its_smoke_test_passes(tmp_path, template):
    project = tmp_path / template
    assert main(["new", str(project), "--template", template]) == 0
    env = {**os.environ, "KILN_CACHE": str(tmp_path / "cache")}
    train = subprocess.run([sys.executable, "-m", "kiln", "train", "configs/train.yaml", "trainer.epochs=1", "-q"],
                           cwd=project, capture_output=True, text=True, timeout=300, env=env)
    assert train.returncode == 0, train.stderr
    assert list((project / "runs" / "my_project").glob("*/test_metrics.json"))
    smoke = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project,
                           capture_output=True, text=True, timeout=300)
    assert smoke.returncode == 0, smoke.stdout[-2000:]


def test_new_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["new", str(tmp_path)]) == 2
    assert "is not empty" in capsys.readouterr().err and (tmp_path / "keep.txt").read_text() == "mine"
    assert main(["new", str(tmp_path), "--force"]) == 0 and (tmp_path / "configs" / "train.yaml").is_file()
