"""`kiln report`: one self-contained report.html (images embedded, no scripts, no network) plus each figure
as PNG and SVG in RUN_DIR/figures/."""

from __future__ import annotations

import base64
import html
import logging
import time
from pathlib import Path
from typing import Any

from kiln.config import flatten
from kiln.core.errors import KilnError
from kiln.core.formats import TestResults, by_name
from kiln.data.inputs import inputs_of
from kiln.runs import RunDir
from kiln.track.files import read_metrics
from kiln.viz import figures
from kiln.viz.style import save

log = logging.getLogger("kiln")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em}h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
img{max-width:100%;height:auto;display:block;margin:.5em 0}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left}
th{background:#f5f5f5}.num{text-align:right;font-variant-numeric:tabular-nums}.note{color:#666;font-size:.9em}
.warning{background:#fff4e5;border-left:4px solid #e67700;padding:.5em .8em}
"""


class Report:
    """HTML assembled section by section; figures are saved to disk and embedded as data URIs."""

    def __init__(self, title: str):
        self.title, self.parts = title, list[str]()

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def note(self, text: str) -> None:
        self.parts.append(f'<p class="note">{html.escape(text)}</p>')

    def warning(self, text: str) -> None:
        self.parts.append(f'<p class="warning"><strong>Warning:</strong> {html.escape(text)}</p>')

    def figure(self, fig, folder: Path, name: str, alt: str) -> None:
        png, _svg = save(fig, folder / name, formats=("png", "svg"))
        data = base64.b64encode(png.read_bytes()).decode()
        self.parts.append(f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">')

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def html(self) -> str:
        return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
                f"<style>{CSS}</style></head><body><h1>{html.escape(self.title)}</h1>"
                f"<p class=\"note\">written by kiln report on {time.strftime('%Y-%m-%d %H:%M')}</p>"
                + "\n".join(self.parts) + "</body></html>\n")


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f'<td class="num">{v:.4f}</td>'
    if isinstance(v, int):
        return f'<td class="num">{v:,}</td>'
    return f"<td>{html.escape(str(v))}</td>"


def build(run_dirs: list[Path], out: Path | None = None, num_wrong: int = 12) -> Path:
    runs = [RunDir.open(r) for r in run_dirs]
    if out is None:
        out = runs[0].report if len(runs) == 1 else Path("report.html")
    report = Report(f"kiln report — {runs[0]}" if len(runs) == 1 else f"kiln report — {len(runs)} runs")
    if len(runs) > 1:
        _comparison(report, runs, out.parent / "figures")
    for run in runs:
        _single(report, run, num_wrong, with_heading=len(runs) > 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report.html(), encoding="utf-8")
    return out


def _single(report: Report, run: RunDir, num_wrong: int, with_heading: bool) -> None:
    folder = run.figures
    cfg = run.saved_config()
    rows = read_metrics(run)
    if with_heading:
        report.heading(str(run))
    if rows:
        ck = cfg.get("trainer", {}).get("checkpoint", {})
        monitor, mode = ck.get("monitor") or "val/acc", ck.get("mode") or "max"
        if not any(monitor in r for r in rows):
            monitor, mode = "train/loss", "min"
        report.heading("Training curves", 3 if with_heading else 2)
        metric = _task_class(cfg).train_metric or "loss"  # a task without a running training metric: the loss
        report.figure(figures.curves(rows, monitor, mode, metric), folder, "curves",
                      f"loss, {metric} and learning rate")
        collapse = _task_class(cfg).collapse_warning(rows)
        if collapse:
            report.warning(collapse)
    else:
        report.note("no metrics.jsonl yet: the run has not finished an epoch")
    test = run.test_metrics()
    if test is None:
        report.note(f"no test_metrics.json: run `kiln test {run}` for the test-split figures")
        return
    report.heading("Test split", 3 if with_heading else 2)
    scores = by_name(test)
    report.table(["metric", "value"], [[k, scores[k]] for k in _task_class(cfg).summary_metrics
                                       if scores.get(k) is not None]
                 + [["samples", test["num_samples"]], ["checkpoint", Path(test["checkpoint"]).name]])
    baseline = run.baseline()
    if baseline is not None and baseline.get("split") == "test":  # the network against kiln baseline's model
        shared = [m for m in _task_class(cfg).summary_metrics if m in baseline and m in test]
        report.table(["model", *[f"test {m}" for m in shared]],
                     [["this network", *[scores[m] for m in shared]],
                      [f"baseline: {baseline['baseline']}", *[baseline[m] for m in shared]]])
    view, needs = TEST_SECTIONS.get(_task_class(cfg).report_view, (_scores_test, ""))
    if needs and needs not in test:  # a task of your own that changed its test results: its scores
        view = _scores_test
    view(report, run, test, folder, num_wrong, with_heading)
    if num_wrong and not with_heading:
        _what_the_model_sees(report, run, folder)


def _multiclass_test(report: Report, run: RunDir, test: TestResults, folder: Path, num_wrong: int,
                     with_heading: bool) -> None:
    names = test["class_names"]
    report.figure(figures.confusion(test["confusion_matrix"], names), folder, "confusion_matrix", "confusion matrix")
    report.figure(figures.per_class(test["confusion_matrix"], names), folder, "per_class", "per-class scores")
    support = [sum(row) for row in test["confusion_matrix"]]  # test samples of each class
    per_class_acc = test.get("per_class_acc") or {}
    report.table(["class", "test samples", "accuracy"],
                 [[name, n, per_class_acc.get(name)] for name, n in zip(names, support)])
    if num_wrong and not with_heading:
        _wrong(report, run, num_wrong, folder)


def _multilabel_test(report: Report, run: RunDir, test: TestResults, folder: Path, num_wrong: int,
                     with_heading: bool) -> None:
    """Per label: support, precision, recall, F1, average precision and the threshold used."""
    per_label, thresholds = test["per_label"], test["thresholds"]
    report.figure(figures.per_label(per_label), folder, "per_label", "per-label scores")
    report.table(["label", "test samples with it", "precision", "recall", "F1", "AP", "threshold"],
                 [[name, int(m["support"]), m["precision"], m["recall"], m["f1"], m["ap"], float(t)]
                  for (name, m), t in zip(per_label.items(), thresholds)])


def _regression_test(report: Report, run: RunDir, test: TestResults, folder: Path, num_wrong: int,
                     with_heading: bool) -> None:
    """Predicted against true, and the residuals, on the test split (in the targets' units)."""
    try:
        _, _, predicted, targets = test_predictions(run)
    except KilnError as e:  # e.g. the test data is not on this machine
        report.note(f"predicted-vs-true and residual plots not shown: {e}")
        return
    names = test["target_names"]
    pred, true = predicted.numpy(), targets.float().reshape(len(targets), -1).numpy()
    report.figure(figures.predicted_vs_true(pred, true, names), folder, "predicted_vs_true", "predicted vs true")
    report.figure(figures.residuals(pred, true, names), folder, "residuals", "residuals")
    if test.get("r2_per_target"):
        report.table(["target", "R²"], [[k, v] for k, v in test["r2_per_target"].items()])


def _scores_test(report: Report, run: RunDir, test: TestResults, folder: Path, num_wrong: int,
                 with_heading: bool) -> None:
    """Any other task (its report_view: scores): its test scores, and a table for each score it gives per class
    (IoU, AP, ...)."""
    shown = {*_task_class({"task": {"name": test.get("task")}}).summary_metrics, "epoch", "num_samples"}
    scores = {k: v for k, v in test.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
              and k not in shown}  # the table above has the task's summary
    if scores:
        report.table(["test result", "value"], [[k, v] for k, v in scores.items()])
    for key, value in test.items():
        if isinstance(value, dict) and value and all(isinstance(v, (int, float)) for v in value.values()):
            report.table(["class", key], [[name, v] for name, v in value.items()])
    if num_wrong and not with_heading:
        _worst(report, run, num_wrong, folder)


def _worst(report: Report, run: RunDir, n: int, folder: Path) -> None:
    """A task that marks images (masks, boxes): the test images it does worst on, truth beside prediction."""
    from kiln.commands.worst import worst_images

    try:
        worst = worst_images(run, n)
    except KilnError as e:  # e.g. the test data is not on this machine
        report.note(f"worst test images not shown: {e}")
        return
    if worst is None or not len(worst.images):
        return
    report.heading("Worst test images")
    report.figure(figures.image_grid(worst.images, worst.titles, "The test images scored lowest: the truth, then "
                                     "the prediction", cols=4), folder, "worst_images", "worst test images")


# What the test section shows, by the task's `report_view` (the figures belong to the report, the task picks
# them), and the test result each needs.
TEST_SECTIONS = {"confusion": (_multiclass_test, "confusion_matrix"), "per_label": (_multilabel_test, "per_label"),
                 "predicted_vs_true": (_regression_test, "target_names"), "scores": (_scores_test, "")}


def test_predictions(run: RunDir):
    """(trained run, its test batches, the best checkpoint's predictions, the targets) on the test split."""
    from kiln.train.evaluation import collect_predictions
    from kiln.train.trained import load_trained

    trained = load_trained(run)
    test = trained.test_data().require("test")
    saved = run.test_predictions(trained.state.sha256)  # what kiln test / kiln train's test kept
    if saved is not None:
        return trained, test, *saved
    log.info("report: predicting the test split with %s for the mistakes shown (the metrics come from "
             "test_metrics.json)", trained.checkpoint.name)
    predicted, targets = collect_predictions(trained.model, test, trained.task, trained.device, trained.precision)
    return trained, test, predicted, targets


def _task_class(cfg: dict[str, Any]):
    from kiln.tasks import task_class

    return task_class((cfg.get("task") or {}).get("name", "multiclass"))


def _what_the_model_sees(report: Report, run: RunDir, folder: Path) -> None:
    """One training batch exactly as the model received it (after decoding, resizing, augmentation)."""
    from kiln.commands.inspect_target import batch_view

    try:
        lines, fig = batch_view(run.config(), "train", run.vocab(), limit=24)
    except KilnError as e:  # e.g. the training data is not on this machine
        report.note(f"a training batch is not shown: {e}")
        return
    report.heading("What the model sees")
    if fig is not None:
        report.figure(fig, folder, "batch_train", "one training batch as the model receives it")
    for line in lines:
        report.note(line)


def _wrong(report: Report, run: RunDir, num_wrong: int, folder: Path) -> None:
    try:
        mistakes = most_confident_mistakes(run, num_wrong)
    except KilnError as e:  # e.g. the test data is not on this machine
        report.note(f"most confident mistakes not shown: {e}")
        return
    report.heading("Most confident mistakes")
    shown = mistakes["inputs"]
    if not mistakes["true"]:
        report.note("no mistakes on the test split")
    elif shown.images is not None:
        report.figure(figures.wrong_examples(shown.images, mistakes["true"], mistakes["predicted"],
                                             mistakes["confidence"]), folder, "wrong_examples", "mistakes")
    else:
        report.table(["text", "true", "predicted", "confidence"],
                     [[t[:200], a, b, c] for t, a, b, c in zip(shown.texts or [], mistakes["true"],
                                                               mistakes["predicted"], mistakes["confidence"])])


def most_confident_mistakes(run: RunDir, n: int) -> dict[str, Any]:
    """The best checkpoint's n wrong test predictions with the highest confidence."""
    trained, test, probs, true = test_predictions(run)
    conf, pred = probs.max(-1)
    wrong = (pred != true).nonzero().flatten()
    top = wrong[conf[wrong].argsort(descending=True)[:n]]  # indices into the test split, most confident first
    names = trained.info.class_names
    return {"true": [names[i] for i in true[top].tolist()], "predicted": [names[i] for i in pred[top].tolist()],
            "confidence": conf[top].tolist(), "inputs": inputs_of(trained.info).show(trained.cfg, test, top)}


def _comparison(report: Report, runs: list[RunDir], folder: Path) -> None:
    labels = _labels(runs)
    metrics = {label: read_metrics(run) for label, run in zip(labels, runs)}
    checkpoint = runs[0].saved_config().get("trainer", {}).get("checkpoint", {})
    monitor, mode = checkpoint.get("monitor") or "val/acc", checkpoint.get("mode") or "max"
    present = [m for m in dict.fromkeys((monitor, "val/loss", "train/loss"))
               if any(m in r for rows in metrics.values() for r in rows)]
    report.heading("Runs compared")
    if present:
        report.figure(figures.compare_curves(metrics, present, monitor, mode), folder, "compare", "runs compared")
    report.heading("Config differences", 3)
    flat = [flatten(run.saved_config()) for run in runs]
    keys = sorted({k for f in flat for k in f if len({str(g.get(k)) for g in flat}) > 1})
    if keys:
        report.table(["key", *labels], [[k, *[str(f.get(k, "—")) for f in flat]] for k in keys])
    else:
        report.note("the runs' configs are identical")
    finals = []
    pick = max if mode == "max" else min
    test_key = monitor.split("/", 1)[-1]
    for label, run in zip(labels, runs):
        rows = metrics[label]
        values = [r[monitor] for r in rows if r.get(monitor) is not None]
        facts = run.facts(test_key)
        model = run.saved_config().get("model", {}).get("name", "—")
        finals.append([label, model, len(rows), pick(values) if values else "—",
                       *[_or_dash(facts[k]) for k in (f"test/{test_key}", "parameters", "s_per_epoch", "samples_per_s")]])
    report.table(["run", "model", "epochs", f"best {monitor}", f"test {test_key}", "parameters", "s / epoch",
                  "samples / s"], finals)


def _or_dash(value: Any) -> Any:
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else round(value, 4) if isinstance(value, float) else value


def _labels(runs: list[RunDir]) -> list[str]:
    return [f"{r.path.parent.name}/{r.path.name}" for r in runs]
