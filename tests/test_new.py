"""kiln new: a project that trains at once through kiln, passes its own smoke test, and refuses to overwrite."""

import subprocess
import sys

import pytest

from kiln.cli import main


@pytest.mark.parametrize("template", ["image", "text", "folder", "segmentation", "detection"])
def test_a_new_project_trains_and_its_smoke_test_passes(tmp_path, template, monkeypatch):
    project = tmp_path / template
    assert main(["new", str(project), "--template", template]) == 0
    monkeypatch.setenv("KILN_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(project)  # as the project's README says: kiln runs from the project folder
    for name in [m for m in sys.modules if m == "my_project" or m.startswith("my_project.")]:
        monkeypatch.delitem(sys.modules, name)  # another template's my_project, imported by an earlier case
    assert main(["train", "configs/train.yaml", "trainer.epochs=1", "-q"]) == 0
    assert list((project / "runs" / "my_project").glob("*/test_metrics.json"))
    smoke = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project,
                           capture_output=True, text=True, timeout=300)
    assert smoke.returncode == 0, smoke.stdout[-2000:]


def test_new_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["new", str(tmp_path)]) == 2
    assert "is not empty" in capsys.readouterr().err and (tmp_path / "keep.txt").read_text() == "mine"
    assert main(["new", str(tmp_path), "--force"]) == 0 and (tmp_path / "configs" / "train.yaml").is_file()
