"""The example notebooks run end to end as a user runs them: a Jupyter kernel of this Python, the generated
Fashion-MNIST files in place of the real ones (KILN_DATA), in a fresh folder."""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_the_quickstart_notebook_runs_end_to_end(tmp_path, idx_root, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="make test installs nbclient (the dev extra)")
    from nbclient import NotebookClient

    # a kernel spec of this interpreter: the notebook must import this kiln, whatever `python` is on PATH
    spec = tmp_path / "jupyter" / "kernels" / "kiln-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "kiln test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    shutil.copytree(idx_root, tmp_path / "fashion_mnist", dirs_exist_ok=True)
    monkeypatch.setenv("KILN_DATA", str(tmp_path))
    notebook = nbformat.read(ROOT / "examples" / "quickstart.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        "commit the notebook with its outputs stripped"
    NotebookClient(notebook, kernel_name="kiln-test", timeout=300, resources={"metadata": {"path": str(tmp_path)}}
                   ).execute()  # raises CellExecutionError naming the failing cell
    text = "\n".join(out.get("text", "") + json.dumps(out.get("data", {}))
                     for cell in notebook.cells for out in cell.get("outputs", []))
    assert "test accuracy" in text and "model.onnx" in text and "image/png" in text  # the curves, inline
    assert "text/html" in text  # the run's _repr_html_
    assert (tmp_path / "runs").is_dir()
