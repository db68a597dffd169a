"""The example notebooks run end to end as a user runs them: a Jupyter kernel of this Python, the generated
Fashion-MNIST files in place of the real ones (KILN_DATA), in a fresh folder."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def run_notebook(name: str, folder, monkeypatch) -> str:
    """Execute examples/NAME in `folder` with a kernel of this interpreter (the notebook must import this kiln,
    whatever `python` is on PATH); every output's text and data, joined."""
    nbformat = pytest.importorskip("nbformat", reason="make test installs nbclient (the dev extra)")
    from nbclient import NotebookClient

    spec = folder / "jupyter" / "kernels" / "kiln-test"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "kiln test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(folder / "jupyter"))
    monkeypatch.setenv("KILN_CACHE", str(folder / "cache"))
    notebook = nbformat.read(ROOT / "examples" / name, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        "commit the notebook with its outputs stripped"
    NotebookClient(notebook, kernel_name="kiln-test", timeout=300, resources={"metadata": {"path": str(folder)}}
                   ).execute()  # raises CellExecutionError naming the failing cell
    return "\n".join(out.get("text", "") + json.dumps(out.get("data", {}))
                     for cell in notebook.cells for out in cell.get("outputs", []))


def test_the_quickstart_notebook_runs_end_to_end(tmp_path, idx_root, monkeypatch):
    shutil.copytree(idx_root, tmp_path / "fashion_mnist", dirs_exist_ok=True)
    monkeypatch.setenv("KILN_DATA", str(tmp_path))
    text = run_notebook("quickstart.ipynb", tmp_path, monkeypatch)
    assert "test accuracy" in text and "model.onnx" in text and "image/png" in text  # the curves, inline
    assert "text/html" in text  # the run's _repr_html_
    assert (tmp_path / "runs").is_dir()


def test_the_own_images_notebook_runs_end_to_end_on_its_stand_in_folder(tmp_path, monkeypatch):
    text = run_notebook("your_own_images.ipynb", tmp_path, monkeypatch)
    assert "blue_cross" in text and "red_square" in text  # the folder's classes, counted
    assert "test accuracy" in text and "image/png" in text and "text/html" in text
    assert len(list((tmp_path / "my_images").rglob("*.png"))) == 60  # the stand-in pictures it drew
    assert (tmp_path / "runs" / "image_folder").is_dir()
