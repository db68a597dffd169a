"""What a competitor's first afternoon still broke (issue 37), each with a test that failed before its fix; the
items with an owner elsewhere are tested there (configs --copy: test_packaging; status.json: test_cv; tune's
epochs: test_tune; a collapsed model: test_callbacks; predict's provenance: test_train_cli)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ROOT
from fakedata import write_image_folder
from kiln.cli import main

pytestmark = pytest.mark.usefixtures("own_cache")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("shapes"), n=48, extras=False)


def test_missing_pretrained_weights_stop_before_any_data_is_read_and_leave_no_folder(tmp_path, shapes, own_cache,
                                                                                     monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no weights there
    runs = tmp_path / "runs"
    code = main(["train", str(ROOT / "configs" / "transfer_resnet18_folder.yaml"), f"data.root={shapes}",
                 f"log.dir={runs}"])
    err = capsys.readouterr().err
    assert code == 2 and "resnet18 IMAGENET1K_V1 weights are not on this machine" in err
    assert "model.download=true" in err
    assert not own_cache.exists()  # no image cache was built
    assert not runs.exists()  # and no run folder, not even runs/<name>/
