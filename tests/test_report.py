"""kiln report (figures, self-contained HTML, a real browser) and kiln doctor."""

import base64
import json
import re
from pathlib import Path

import pytest

from conftest import chrome_paths, headless_browser, tiny_config, write_config
from kiln.cli import main


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, idx_root):
    tmp = tmp_path_factory.mktemp("report")
    for lr in (0.05, 0.2):
        path = write_config(tmp, tiny_config(tmp, idx_root, optim={"lr": lr}, trainer={"epochs": 3}), f"lr{lr}.yaml")
        assert main(["train", str(path), "-q"]) == 0  # in process; test_train_cli runs the real entry point
    return sorted(p for p in (tmp / "runs" / "tiny").iterdir())


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        return img.size


def test_single_run_report_has_every_figure_embedded(two_runs, capsys):
    run = two_runs[0]
    assert (run / "test_predictions.pt").is_file()  # kept by the test at the end of training
    assert main(["report", str(run)]) == 0
    assert "report: predicting" not in capsys.readouterr().err  # the mistakes come from the kept predictions
    for name in ("curves", "confusion_matrix", "per_class", "wrong_examples", "batch_train"):
        w, h = _png_size(run / "figures" / f"{name}.png")
        assert w > 400 and h > 250, name
        assert (run / "figures" / f"{name}.svg").read_text().lstrip().startswith("<?xml")
    page = (run / "report.html").read_text()
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert base64.b64decode(sources[0].split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" not in page and "http://" not in page and "https://" not in page  # offline, self-contained
    assert "Training curves" in page and "Most confident mistakes" in page and "<td>acc</td>" in page
    assert "What the model sees" in page and "class counts:" in page
    assert "<th>test samples</th>" in page  # per-class support


def test_two_run_comparison(two_runs, tmp_path):
    out = tmp_path / "compare.html"
    assert main(["report", *map(str, two_runs), "--out", str(out)]) == 0
    page = out.read_text()
    assert "Config differences" in page and "optim.lr" in page and "0.05" in page and "0.2" in page
    assert _png_size(tmp_path / "figures" / "compare.png")[0] > 600


@pytest.mark.skipif(not all(chrome_paths()), reason="headless Chromium and chromedriver are not installed "
                                                       "(make test installs Debian's chromium and chromium-driver)")
def test_report_renders_in_a_real_browser(two_runs, tmp_path, cli):
    run = two_runs[1]
    assert cli("report", run).returncode == 0
    browser = headless_browser(tmp_path / "profile")
    try:
        browser.get((run / "report.html").resolve().as_uri())
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.naturalHeight]);")
        expected = (run / "report.html").read_text().count("<img ")
        assert len(images) == expected >= 3 and all(done and w > 0 and h > 0 for done, w, h in images)
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        assert browser.title.startswith("kiln report")
        browser.save_screenshot(str(run / "figures" / "report_screenshot.png"))
    finally:
        browser.quit()
    assert _png_size(run / "figures" / "report_screenshot.png")[0] >= 1000


def test_doctor_on_a_machine_without_gpu(tmp_path, cli):
    result = cli("doctor")
    assert result.returncode == 0, result.stderr
    assert "torch " in result.stdout and "dataset fashion_mnist:" in result.stdout and "extras:" in result.stdout
    assert "cpus " in result.stdout
    report = json.loads(cli("doctor", "--json").stdout)
    assert report["host"]["cpus"] >= 1 and {d["name"] for d in report["datasets"]} >= {"fashion_mnist", "ag_news"}
    if not report["torch"]["cuda_available"]:
        assert "GPU: none" in result.stdout
    host = report["host"]
    assert host["usable_cores"] >= 1 and host["open_files_limit"] and "/dev/shm" in result.stdout


def test_doctor_warns_of_a_small_shm_and_a_low_open_file_limit(monkeypatch):
    import os
    import resource

    from kiln.commands import doctor

    class Tiny:
        f_blocks, f_frsize = 64, 2**20  # 64 MiB, as Docker's default

    monkeypatch.setattr(os, "statvfs", lambda path: Tiny())
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 1024))
    warnings = doctor.limits()["warnings"]
    assert any("--shm-size" in w for w in warnings) and any("ulimit -n" in w for w in warnings)


def _overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of upright texts (titles, tick labels, axis labels) whose boxes meet each other or another panel."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [(ax, t, t.get_window_extent(renderer)) for ax in fig.axes
             for t in [ax.title, ax.yaxis.label, *ax.get_yticklabels(),
                       *[x for x in ax.get_xticklabels() if not x.get_rotation()]] if t.get_text() and t.get_visible()]
    bad = [(t.get_text(), u.get_text()) for i, (_, t, box) in enumerate(texts) for _, u, other in texts[i + 1:]
           if box.overlaps(other)]
    return bad + [(t.get_text(), "another panel") for ax, t, box in texts for other in fig.axes
                  if other is not ax and box.overlaps(other.get_window_extent(renderer))]


def test_captions_and_row_names_stay_clear_of_each_other_with_long_class_names():
    import matplotlib.pyplot as plt
    import numpy as np

    from kiln.viz import figures

    names = ["Black-grass", "Charlock", "Cleavers", "Common Chickweed", "Common wheat", "Fat Hen", "Loose Silky-bent",
             "Maize", "Scentless Mayweed"]
    matrix = (np.random.default_rng(0).random((9, 9)) * 20).astype(int).tolist()
    fig = figures.confusion(matrix, names)
    assert _overlapping_texts(fig) == []
    plt.close(fig)
    images = np.zeros((12, 3, 32, 32), np.uint8)
    fig = figures.wrong_examples(images, [names[i % 9] for i in range(12)], [names[(i + 4) % 9] for i in range(12)],
                                 [0.9] * 12)
    assert _overlapping_texts(fig) == []
    assert any("…" in ax.get_title() for ax in fig.axes)  # the longest names are cut, not run into the next panel
    plt.close(fig)
