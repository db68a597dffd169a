"""Knowledge distillation (task.distill): a trained teacher answers every training batch the student sees — the
same augmented (and mixed) inputs, on the same device, under the same precision, in eval mode, without gradients —
and the loss becomes (1 - alpha) x the task's loss + alpha x the task's distance to the teacher's softened answers
(`Task.distill_loss`)."""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from kiln.config import DistillConfig
from kiln.core.errors import KilnError
from kiln.data import DataInfo
from kiln.tasks import Task
from kiln.train.plan import check_teacher

log = logging.getLogger("kiln")


class Distiller:
    def __init__(self, cfg: DistillConfig, task: Task, teacher: nn.Module, teacher_task: Task,
                 renormalise: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.cfg, self.task, self.teacher, self.teacher_task = cfg, task, teacher, teacher_task
        self.renormalise = renormalise  # (scale, shift) from the student's normalisation to the teacher's

    @classmethod
    def load(cls, cfg: DistillConfig, task: Task, info: DataInfo, device: torch.device) -> Distiller:
        """The teacher run's model on `device`, frozen, checked against the student's data."""
        from kiln.train.trained import load_trained

        check_teacher(cfg.teacher)
        trained = load_trained(cfg.teacher, cfg.checkpoint, device=device)
        mine, its = info, trained.info
        if its.class_names != mine.class_names or trained.cfg.task.name != task.name:
            raise KilnError(f"task.distill.teacher={cfg.teacher} answers {trained.cfg.task.name} over "
                            f"{', '.join(its.class_names[:5])}...; this run learns {task.name} over "
                            f"{', '.join(mine.class_names[:5])}...: a teacher must answer the same question")
        if (its.kind, its.in_channels, its.image_size, its.vocab_size) != \
                (mine.kind, mine.in_channels, mine.image_size, mine.vocab_size):
            raise KilnError(f"task.distill.teacher={cfg.teacher} was trained on other inputs ({its.kind}, "
                            f"{its.in_channels} channels, {its.image_size[0]}x{its.image_size[1]}) than this run's "
                            f"({mine.kind}, {mine.in_channels} channels, {mine.image_size[0]}x{mine.image_size[1]}): "
                            "set data.image_size and data.channels to the teacher's")
        teacher = trained.model.eval().requires_grad_(False)
        log.info("distilling from %s (alpha %g, temperature %g)", trained.provenance(), cfg.alpha, cfg.temperature)
        return cls(cfg, task, teacher, trained.task, _renormalisation(mine, its, device))

    def blended(self, loss: torch.Tensor, outputs: Any, inputs: Any) -> torch.Tensor:
        """The training loss with the teacher's share: (1 - alpha) x loss + alpha x the distance to its answers."""
        if self.renormalise is not None and isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            scale, shift = self.renormalise
            inputs = torch.addcmul(shift, inputs, scale)
        with torch.no_grad():
            answers = self.teacher_task.outputs(self.teacher, inputs).float()
        alpha = self.cfg.alpha
        return (1 - alpha) * loss + alpha * self.task.distill_loss(outputs.float(), answers, self.cfg.temperature)


def _renormalisation(student: DataInfo, teacher: DataInfo, device: torch.device
                     ) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Images normalised as the student's are turned into the teacher's normalisation: (x s_s + m_s - m_t) / s_t."""
    if (student.mean, student.std) == (teacher.mean, teacher.std) or not student.in_channels:
        return None

    def column(values: tuple[float, ...]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device).reshape(1, -1, 1, 1)

    ms, ss, mt, st = column(student.mean), column(student.std), column(teacher.mean), column(teacher.std)
    return ss / st, (ms - mt) / st
