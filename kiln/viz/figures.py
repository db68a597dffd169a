"""The report's figures. Each takes plain data (metric rows, a confusion matrix) and returns a figure whose
title states its point; all share kiln.viz.style."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.ticker import MaxNLocator

from kiln.viz.style import OKABE_ITO, SEQUENTIAL, figure

TRAIN, VAL = OKABE_ITO[0], OKABE_ITO[1]


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


METRIC_UNITS = {"acc": "accuracy", "mae": "mean absolute error"}


def curves(rows: list[dict[str, Any]], monitor: str = "val/acc", mode: str = "max", metric: str = "acc"):
    """Loss and the task's training metric (accuracy, or MAE for regression), train vs validation, with the best
    epoch marked; the learning rate below."""
    fig, (ax_loss, ax_acc, ax_lr) = figure(3, 1, figsize=(7.5, 8), sharex=True,
                                           gridspec_kw={"height_ratios": [3, 3, 1.4]})
    best = None
    if any(monitor in r for r in rows):
        epochs, values = _series(rows, monitor)
        i = int(np.argmax(values) if mode == "max" else np.argmin(values))
        best = (epochs[i], values[i])
    for ax, name, unit in ((ax_loss, "loss", "loss"), (ax_acc, metric, METRIC_UNITS.get(metric, metric))):
        for split, color in (("train", TRAIN), ("val", VAL)):
            x, y = _series(rows, f"{split}/{name}")
            if x:
                ax.plot(x, y, marker="o", markersize=3, color=color, label=f"{split}")
        ax.set_ylabel(unit)
        if best is not None:
            ax.axvline(best[0], color="#777777", linestyle="--", linewidth=1)
    ax_loss.legend(loc="best")  # one legend: the colours mean the same in both panels
    if best is not None:
        ax_target = ax_acc if monitor.endswith("/" + metric) else ax_loss
        ax_target.annotate(f"best {monitor} {best[1]:.4f}\nat epoch {best[0]}", xy=best, xytext=(8, -28),
                           textcoords="offset points", fontsize=9,
                           arrowprops={"arrowstyle": "->", "color": "#555555"})
    x, y = _series(rows, "lr")
    ax_lr.plot(x, y, color=OKABE_ITO[2])
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    ax_lr.xaxis.set_major_locator(MaxNLocator(integer=True))
    final = rows[-1] if rows else {}
    gap = (final.get("train/acc", 0) - final.get("val/acc", 0)) if metric == "acc" and "val/acc" in final else None
    title = "Training curves"
    if best is not None:
        title = f"Best {monitor} {best[1]:.4f} at epoch {best[0]} of {rows[-1]['epoch']}"
    if gap is not None:
        title += f"; final train–val accuracy gap {gap * 100:+.1f} points"
    ax_loss.set_title(title)
    return fig


def confusion(matrix: list[list[int]], names: list[str]):
    """Counts and row-normalised rates side by side (sequential colormap: more = brighter)."""
    cm = np.asarray(matrix, dtype=float)
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(names)
    size = max(5.0, 0.5 * k + 2.5)
    # constrained layout makes room for the right panel's row names between it and the left panel's colour bar
    fig, axes = figure(1, 2, figsize=(2 * size + 2, size), layout="constrained")
    for ax, data, fmt, label in ((axes[0], cm, "{:.0f}", "count"), (axes[1], rates, "{:.2f}", "fraction of true class")):
        ax.grid(False)
        im = ax.imshow(data, cmap=SEQUENTIAL, vmin=0)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=label)
        ax.set_xticks(range(k), names, rotation=45, ha="right")
        ax.set_yticks(range(k), names)
        ax.set_xlabel("predicted class")
        if k <= 12:  # numbers stay legible
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, fmt.format(data[i, j]), ha="center", va="center", fontsize=7,
                            color="black" if data[i, j] > data.max() * 0.6 else "white")
    off = rates.copy()
    np.fill_diagonal(off, 0)
    i, j = np.unravel_index(off.argmax(), off.shape)
    axes[0].set_ylabel("true class")  # the right panel shares the rows; its label would hit the colour bar
    axes[0].set_title("Counts")
    axes[1].set_title("Row-normalised")
    title = (f"Most frequent confusion: {names[i]} predicted as {names[j]} ({off[i, j]:.0%} of {names[i]})"
             if off[i, j] > 0 else "No confusions: every test sample was classified correctly")
    fig.suptitle(title, fontweight="bold")
    return fig


def per_class(matrix: list[list[int]], names: list[str]):
    """Precision, recall and F1 per class, classes sorted by F1 (worst at the top)."""
    cm = np.asarray(matrix, dtype=float)
    tp = np.diag(cm)
    precision = tp / np.maximum(cm.sum(0), 1)
    recall = tp / np.maximum(cm.sum(1), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    order = np.argsort(f1)
    k = len(names)
    fig, ax = figure(figsize=(7.5, max(3.0, 0.45 * k + 1.2)))
    y = np.arange(k)
    for offset, values, label, color in ((-0.27, precision, "precision", OKABE_ITO[0]),
                                         (0.0, recall, "recall", OKABE_ITO[1]), (0.27, f1, "F1", OKABE_ITO[2])):
        ax.barh(y + offset, values[order], height=0.27, label=label, color=color)
    ax.set_yticks(y, [names[i] for i in order])
    ax.invert_yaxis()  # the weakest class on top
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (0–1)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the bars, never over them
    worst = order[0]
    ax.set_title(f"Weakest class: {names[worst]} (F1 {f1[worst]:.2f}); best: {names[order[-1]]} "
                 f"(F1 {f1[order[-1]]:.2f})")
    return fig


def per_label(per_label: dict[str, dict[str, float]]):
    """Multilabel: precision, recall and F1 per label, labels sorted by F1 (worst at the top)."""
    names = list(per_label)
    values = {m: np.array([per_label[n][m] for n in names], dtype=float) for m in ("precision", "recall", "f1")}
    order = np.argsort(values["f1"])
    k = len(names)
    fig, ax = figure(figsize=(7.5, max(3.0, 0.45 * k + 1.2)))
    y = np.arange(k)
    for offset, metric, color in ((-0.27, "precision", OKABE_ITO[0]), (0.0, "recall", OKABE_ITO[1]),
                                  (0.27, "f1", OKABE_ITO[2])):
        ax.barh(y + offset, values[metric][order], height=0.27, label=metric if metric != "f1" else "F1",
                color=color)
    ax.set_yticks(y, [f"{names[i]} ({int(per_label[names[i]]['support'])})" for i in order])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score (0–1); label (test samples with it)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    worst, best = order[0], order[-1]
    ax.set_title(f"Weakest label: {names[worst]} (F1 {values['f1'][worst]:.2f}); best: {names[best]} "
                 f"(F1 {values['f1'][best]:.2f})")
    return fig


def predicted_vs_true(pred: np.ndarray, true: np.ndarray, names: list[str]):
    """Regression: each test sample's prediction against its true value, one panel per target, the diagonal as
    the perfect fit."""
    k = len(names)
    fig, axes = figure(1, k, figsize=(4.6 * k, 4.4), squeeze=False)
    for j, ax in enumerate(axes[0]):
        t, p = true[:, j], pred[:, j]
        low, high = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([low, high], [low, high], color="#777777", linestyle="--", linewidth=1, label="perfect")
        ax.scatter(t, p, s=10, alpha=0.6, color=OKABE_ITO[0], edgecolors="none")
        ss_res, ss_tot = float(((t - p) ** 2).sum()), float(((t - t.mean()) ** 2).sum())
        ax.set_title(f"{names[j]}: R² {1 - ss_res / max(ss_tot, 1e-12):.3f}, MAE {np.abs(t - p).mean():.3g}")
        ax.set_xlabel(f"true {names[j]}")
        ax.set_ylabel(f"predicted {names[j]}")
    fig.suptitle(f"Predicted against true on {len(true):,} test samples", fontweight="bold")
    return fig


def residuals(pred: np.ndarray, true: np.ndarray, names: list[str]):
    """Regression: residual (predicted − true) against the prediction, one panel per target: a trend or a funnel
    shows what the model misses."""
    k = len(names)
    fig, axes = figure(1, k, figsize=(4.6 * k, 3.8), squeeze=False)
    for j, ax in enumerate(axes[0]):
        r = pred[:, j] - true[:, j]
        ax.axhline(0, color="#777777", linestyle="--", linewidth=1)
        ax.scatter(pred[:, j], r, s=10, alpha=0.6, color=OKABE_ITO[3], edgecolors="none")
        ax.set_title(f"{names[j]}: mean residual {r.mean():+.3g}, std {r.std():.3g}")
        ax.set_xlabel(f"predicted {names[j]}")
        ax.set_ylabel("predicted − true")
    fig.suptitle("Residuals on the test split", fontweight="bold")
    return fig


def wrong_examples(images: np.ndarray, true: list[str], predicted: list[str], confidence: list[float]):
    """The test images the model got wrong most confidently: a facet grid, one image per panel."""
    titles = [f"true: {_fit(t, 15)}\npred: {_fit(p, 9)} ({c:.0%})" for t, p, c in zip(true, predicted, confidence)]
    return image_grid(images, titles, f"The {len(images)} most confident mistakes on the test split")


def _fit(name: str, chars: int) -> str:
    """A class name cut to `chars` characters (with an ellipsis), so captions of neighbouring panels never meet."""
    return name if len(name) <= chars else name[:chars - 1] + "…"


def image_grid(images: np.ndarray, titles: list[str], title: str, cols: int = 6):
    """uint8 images (N, C, H, W) in a facet grid, one titled panel each."""
    n = len(images)
    cols = min(cols, n)
    rows = -(-n // cols)
    fig, axes = figure(rows, cols, figsize=(2.0 * cols, 2.25 * rows + 0.5), squeeze=False)
    for ax, i in zip(axes.flat, range(rows * cols)):
        ax.grid(False)
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        img = images[i]
        ax.imshow(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0), cmap="gray" if img.shape[0] == 1 else None)
        ax.set_title(titles[i], fontsize=8, fontweight="normal")
    fig.suptitle(title, fontweight="bold")
    return fig


def compare_curves(runs: dict[str, list[dict[str, Any]]], metrics: list[str], monitor: str = "val/acc",
                   mode: str = "max"):
    """Several runs overlaid, one facet per metric, one colour per run, shared epoch axis."""
    fig, axes = figure(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False, sharex=True)
    for ax, metric in zip(axes[0], metrics):
        for (label, rows), color in zip(runs.items(), OKABE_ITO * 4):
            x, y = _series(rows, metric)
            ax.plot(x, y, color=color, marker="o", markersize=3, label=label)
        ax.set_title(metric)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric.split("/")[-1])
    axes[0][0].legend(loc="best", fontsize=8)
    pick = max if mode == "max" else min
    best = {label: pick(values) for label, rows in runs.items()
            if (values := [r[monitor] for r in rows if r.get(monitor) is not None])}
    title = f"{len(runs)} runs compared"
    if best:
        leader = pick(best, key=lambda label: best[label])
        title += f" — best {monitor}: {leader} ({best[leader]:.4f})"
    fig.suptitle(title, fontweight="bold")
    return fig
