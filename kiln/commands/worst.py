"""The report's worst test images, for tasks that mark images (masks, boxes): each test image scored by the task
(`Task.image_scores`: a segmentation's IoU, a detection's F1), the lowest shown with the truth and the prediction
drawn on the image as the model saw it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kiln.data.inputs import inputs_of
from kiln.runs import RunDir


@dataclass
class Worst:
    images: np.ndarray  # (2n, C, H, W) uint8: each image with its truth, then with its prediction
    titles: list[str]
    scores: list[float]  # every test image's score, in split order


def worst_images(run: RunDir, n: int) -> Worst | None:
    """Up to `n` test images the best checkpoint does worst on — those scored below the best score of the split
    (the images it gets right are not its worst), or, when every image scores the same, the first `n`; None when
    the run's task scores no images."""
    from kiln.train.trained import load_trained

    trained = load_trained(run)
    test = trained.test_data().require("test")
    scores: list[float] = []
    for _, _, batch_scores, _ in _scored(trained, test):
        if batch_scores is None:
            return None
        scores += batch_scores
    worst = worst_of(scores, n)
    picked: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    names, task, at = trained.info.class_names, trained.task, 0
    for x, y, _, marks in _scored(trained, test):
        here = [i for i in range(len(marks)) if at + i in worst]
        if here:
            everything = inputs_of(trained.info).shown_batch(x, trained.info)
            assert everything is not None, "a task that marks images has image inputs"
            shown = everything[here]
            truth = task.overlay(shown, [y[i] for i in here], len(names))
            guess = task.overlay(shown, [marks[i] for i in here], len(names))
            picked.update({at + i: (truth[k], guess[k]) for k, i in enumerate(here)})
        at += len(marks)
    images = np.stack([image for i in worst for image in picked[i]])
    titles = [t for i in worst for t in (f"#{i} truth", f"predicted: {task.image_score} {scores[i]:.2f}")]
    return Worst(images, titles, scores)


def worst_of(scores: list[float], n: int) -> list[int]:
    """The indices of up to `n` lowest scores, lowest first, among those below the best (the images a model gets
    right are not its worst); every score the same: the first `n`."""
    order = sorted(range(len(scores)), key=scores.__getitem__)
    return [i for i in order if scores[i] < max(scores)][:n] or order[:n]


def _scored(trained: Any, test: Any):
    """(inputs, targets, scores, predicted marks) of each test batch, in order."""
    import torch

    from kiln.train.device import autocast
    from kiln.train.strategy import whole

    task, model = trained.task, trained.model
    with whole(model), torch.no_grad():
        for x, y in test.epoch(0):
            with autocast(trained.device, trained.precision):
                predictions = task.predictions(task.outputs(model, x))
            answer = task.image_scores(predictions, y)
            yield (x, y, None, []) if answer is None else (x, y, *answer)
