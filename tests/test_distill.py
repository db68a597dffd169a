"""Knowledge distillation: a student trained on its teacher's answers moves toward them; a teacher that does not
fit is refused before training."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_config, write_config
from kiln.config import Config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, idx_root):
    from kiln.train import session

    tmp = tmp_path_factory.mktemp("teacher")
    cfg = tiny_config(tmp, idx_root, model={"name": "cnn", "args": {"channels": [16, 32]}}, trainer={"epochs": 3})
    return session.train(Config.model_validate(cfg), run_dir=tmp / "teacher", quiet=True).run_dir


def _kl_to_teacher(student, teacher) -> float:
    from kiln.train.evaluation import collect_predictions
    from kiln.train.trained import load_trained

    probs = []
    for run in (teacher, student):
        trained = load_trained(run)
        p, _ = collect_predictions(trained.model, trained.test_data().require("test"), trained.task, trained.device,
                                   trained.precision)
        probs.append(p.clamp_min(1e-8))
    t, s = probs
    return float((t * (t.log() - s.log())).sum(1).mean())


def test_a_distilled_student_moves_toward_its_teachers_answers(teacher, tmp_path, idx_root):
    from kiln.train import session

    students = {}
    for name, distill in (("alone", None), ("taught", {"teacher": str(teacher), "alpha": 1.0, "temperature": 2})):
        cfg = tiny_config(tmp_path / name, idx_root, model={"name": "cnn", "args": {"channels": [4, 8]}},
                          trainer={"epochs": 2}, task={"name": "multiclass", "distill": distill},
                          data={"augment": {"mixup": 0.2}})
        students[name] = session.train(Config.model_validate(cfg), quiet=True)
    assert "train/objective" in students["taught"].metrics  # the blended loss is logged apart from the task's
    # measured: 0.026 taught vs 0.146 alone
    assert _kl_to_teacher(students["taught"].run_dir, teacher) < 0.5 * _kl_to_teacher(students["alone"].run_dir,
                                                                                       teacher)


def test_a_teacher_that_is_not_a_run_is_refused_before_training(tmp_path, idx_root, cli):
    cfg = tiny_config(tmp_path, idx_root, task={"name": "multiclass", "distill": {"teacher": str(tmp_path / "no")}})
    out = cli("train", write_config(tmp_path, cfg))
    assert out.returncode == 2 and "is not a kiln run folder" in out.stderr and not (tmp_path / "runs").exists()


def test_a_teacher_of_other_classes_is_refused(teacher, tmp_path, idx_root, cli):
    cfg = tiny_config(tmp_path, idx_root, data={"classes": [0, 1, 2]},
                      task={"name": "multiclass", "distill": {"teacher": str(teacher)}})
    out = cli("train", write_config(tmp_path, cfg))
    assert out.returncode == 2 and "a teacher must answer the same question" in out.stderr


def test_distillation_losses_are_zero_at_the_teachers_answers():
    from kiln.config import MulticlassTaskConfig, MultilabelTaskConfig
    from kiln.tasks.multiclass import MulticlassTask
    from kiln.tasks.multilabel import MultilabelTask

    logits = torch.randn(8, 5)
    assert MulticlassTask(MulticlassTaskConfig(), 5).distill_loss(logits, logits, 4.0).abs() < 1e-5
    multilabel = MultilabelTask(MultilabelTaskConfig(), 5)
    at_teacher = multilabel.distill_loss(logits, logits, 2.0)
    assert at_teacher < multilabel.distill_loss(logits + torch.randn(8, 5), logits, 2.0)
