"""One training run or evaluation, end to end: config -> data -> model -> optim -> fit -> test.

`train()` and `test()` are what the CLI calls; they are plain functions so that
tuning and tests can call them too.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from kiln.config import Config, flatten, load_config, to_yaml
from kiln.data import Data, DataInfo, build_data
from kiln.data.registry import get_dataset
from kiln.errors import KilnError, TrainingInterrupted, TrainingStopped
from kiln.models import build_model, describe
from kiln.models.freeze import FreezeSchedule, head_prefix
from kiln.models.pretrained import load_pretrained
from kiln.runs import check_run_dir, new_run_dir, resolve_checkpoint, write_status
from kiln.track import Trackers
from kiln.track.console import EpochProgress, add_log_file
from kiln.track.files import MetricsFiles
from kiln.train import dist
from kiln.train.callbacks import EarlyStopping, ModelCheckpoint
from kiln.train.device import resolve_backend, resolve_device, resolve_precision
from kiln.train.loop import Trainer, evaluate, fit
from kiln.train.metrics import metric_names
from kiln.train.optim import Schedule, build_optimizer
from kiln.train.state import load_checkpoint, load_weights, seed_everything

log = logging.getLogger("kiln")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, float]
    test_metrics: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def check_monitors(cfg: Config, num_classes: int | None) -> None:
    """Reject, before training, a monitored metric that this run will never produce."""
    has_val = cfg.data.val_split != 0 or cfg.trainer.overfit_batches > 0
    if num_classes is None:  # not known before the data is read (text_csv); checked again after loading
        return
    available = metric_names(num_classes, has_val)
    watched = {"trainer.checkpoint.monitor": cfg.trainer.checkpoint.monitor}
    if cfg.trainer.early_stopping.enabled:
        watched["trainer.early_stopping.monitor"] = cfg.trainer.early_stopping.monitor
    for key, metric in watched.items():
        if metric not in available:
            why = " (there is no validation split: data.val_split=0)" if metric.startswith("val/") and not has_val else ""
            raise KilnError(f"{key}={metric!r} is a metric this run will never produce{why}; "
                            f"available: {', '.join(available)}")


def use_channels_last(setting: Any, device: torch.device) -> bool:
    return bool(setting) if setting != "auto" else device.type in ("cpu", "cuda")


def prepare_model(cfg: Config, info: DataInfo, device: torch.device, channels_last: bool,
                   pretrained: bool = False) -> torch.nn.Module:
    model = build_model(cfg.model, info)
    if pretrained and cfg.model.pretrained:
        load_pretrained(model, cfg.model.pretrained, cfg.model.name, cfg.model.weights)
    model = model.to(device)
    if channels_last and any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
    return model


def train(cfg: Config, *, resume: Path | None = None, run_dir: Path | None = None, quiet: bool = False,
          step_hooks: list[Callable[[Trainer], None]] | None = None,
          epoch_end_hooks: list[Callable[[int, dict], None]] | None = None) -> RunResult:
    """Train `cfg` in a new run folder (or in `run_dir`), or continue the run in `resume`.

    Under torchrun every rank calls this; rank 0 alone writes the run folder.
    """
    check_monitors(cfg, len(cfg.data.classes) if cfg.data.classes else get_dataset(cfg.data.name).num_classes)
    proc = dist.current()
    device = resolve_device(cfg.trainer.device, proc.local_rank, proc.world_size, cfg.trainer.backend)
    dist.setup(device, resolve_backend(cfg.trainer.backend, device))
    try:
        dist.check_same_config(cfg.model_dump(mode="json"))
        if run_dir is not None and (Path(run_dir) / "checkpoints" / "last.pt").is_file():
            resume = Path(run_dir)  # e.g. a worker restarted by torchrun's --max-restarts
        return _train(cfg, proc, device, resume, run_dir, quiet, step_hooks or [], epoch_end_hooks or [])
    finally:
        dist.teardown()


def _train(cfg: Config, proc: dist.ProcessInfo, device: torch.device, resume: Path | None, run_dir: Path | None,
           quiet: bool, step_hooks: list[Callable[[Trainer], None]],
           epoch_end_hooks: list[Callable[[int, dict], None]]) -> RunResult:
    precision = resolve_precision(cfg.trainer.precision, device)
    channels_last = use_channels_last(cfg.trainer.channels_last, device)
    checkpoint_state = load_checkpoint(Path(resume) / "checkpoints" / "last.pt") if resume else None
    if checkpoint_state and checkpoint_state["loop"]["finished"] and cfg.trainer.epochs <= checkpoint_state["loop"]["epoch"]:
        raise KilnError(f"{resume} already finished all {checkpoint_state['loop']['epoch']} epochs; to train longer, "
                        f"resume with trainer.epochs=N (N > {checkpoint_state['loop']['epoch']})")

    seed_everything(cfg.seed, cfg.trainer.deterministic)
    data = build_data(cfg.data, seed=cfg.seed, device=device, channels_last=channels_last,
                      overfit_batches=cfg.trainer.overfit_batches, rank=proc.rank, world_size=proc.world_size,
                      vocab=saved_vocab(resume) if resume else None)
    check_monitors(cfg, data.info.num_classes)
    model = prepare_model(cfg, data.info, device, channels_last, pretrained=resume is None)
    if proc.distributed and cfg.trainer.sync_batchnorm:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    fine_tuning = cfg.model.freeze != "none" or cfg.optim.backbone_lr_mult != 1.0
    head = head_prefix(model, cfg.model.head) if fine_tuning else None
    optimizer = build_optimizer(cfg.optim, model, device, head)
    epochs = 1 if cfg.trainer.fast_dev_run else cfg.trainer.epochs
    steps_per_epoch = -(-min(len(data.train), 2 if cfg.trainer.fast_dev_run else cfg.trainer.limit_train_batches
                             or len(data.train)) // cfg.trainer.accumulate)
    schedule = Schedule(cfg.schedule, optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch,
                        monitor=cfg.trainer.checkpoint.monitor, monitor_mode=cfg.trainer.checkpoint.mode)

    run_dir = _run_folder(cfg, proc, resume, run_dir, data)
    resume_epoch = checkpoint_state["loop"]["epoch"] if checkpoint_state else None
    trackers, file_log = _trackers(cfg, run_dir, resume_epoch) if proc.is_main else (Trackers([]), None)
    global_batch = cfg.data.batch_size * proc.world_size * cfg.trainer.accumulate
    log.info("run folder: %s", run_dir)
    log.info("data: %s — %s | %s loader | device %s, precision %s%s", data.info.name,
             ", ".join(f"{k} {v:,}" for k, v in data.sizes.items()), data.loader, device, precision,
             f" | {proc.world_size} processes, global batch {global_batch}" if proc.distributed else "")
    log.info("model: %s", describe(model))

    trainer = Trainer(
        cfg=cfg.trainer, model=model, optimizer=optimizer, schedule=schedule, data=data, device=device,
        precision=precision, epochs=epochs, early_stopping=EarlyStopping(cfg.trainer.early_stopping),
        checkpoint=ModelCheckpoint(cfg.trainer.checkpoint, run_dir / "checkpoints") if proc.is_main else None,
        trackers=trackers, progress=EpochProgress(proc.is_main and EpochProgress.wanted(cfg.log.progress, quiet)),
        meta={"config": cfg.model_dump(mode="json"), "data_info": asdict(data.info),
              "world_size": proc.world_size, "global_batch_size": global_batch},
        step_hooks=step_hooks, epoch_end_hooks=epoch_end_hooks)
    if cfg.model.freeze != "none":
        trainer.epoch_hooks.append(FreezeSchedule(model, cfg.model.freeze, cfg.model.unfreeze_at_epoch, head).on_epoch_start)
    if checkpoint_state:
        _warn_changed(checkpoint_state, cfg, proc.world_size)
        trainer.load_state_dict(checkpoint_state)
        trainer.state.finished = False
        log.info("resumed from %s at epoch %d, batch %d (step %d)", run_dir / "checkpoints" / "last.pt",
                 trainer.state.epoch + 1, trainer.state.batch, trainer.state.step)
    trainer.model = _wrap(model, cfg, proc, device)
    trackers.log_config(cfg.model_dump(mode="json"))

    status = {"world_size": proc.world_size, "global_batch_size": global_batch}
    if proc.is_main:
        write_status(run_dir, "running", epoch=trainer.state.epoch, **status)
    try:
        metrics = fit(trainer)
        dist.barrier()  # rank 0 has written best.pt before anyone reads it
        result = RunResult(run_dir, metrics)
        if cfg.trainer.test_after_fit:  # every rank evaluates its shard of the test split
            result.test_metrics = _test_best(cfg, run_dir, model, device, precision, channels_last, trackers, proc)
        if proc.is_main:
            write_status(run_dir, "finished", epoch=trainer.state.epoch, **status)
        return result
    except TrainingInterrupted:
        if proc.is_main:
            write_status(run_dir, "interrupted", epoch=trainer.state.epoch, batch=trainer.state.batch, **status)
        raise TrainingInterrupted(f"training interrupted; last.pt saved at epoch {trainer.state.epoch + 1}, "
                                  f"batch {trainer.state.batch}. Resume with: kiln train --resume {run_dir}") from None
    except TrainingStopped:
        if proc.is_main:
            write_status(run_dir, "stopped", epoch=trainer.state.epoch, **status)
        raise
    except BaseException:
        if proc.is_main:
            write_status(run_dir, "failed", epoch=trainer.state.epoch, **status)
        raise
    finally:
        trackers.close()
        if file_log is not None:
            log.removeHandler(file_log)
            file_log.close()


def _run_folder(cfg: Config, proc: dist.ProcessInfo, resume: Path | None, run_dir: Path | None, data: Data) -> Path:
    """The run folder, made by rank 0 and shared with the other ranks; holds the resolved config."""
    if resume:
        folder = Path(resume)
    elif proc.is_main:
        folder = Path(run_dir) if run_dir else new_run_dir(cfg.log.dir, cfg.name)
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = None
    folder = Path(dist.broadcast(str(folder) if folder else None))
    if proc.is_main:
        (folder / "config.yaml").write_text(to_yaml(cfg))
        if data.vocab is not None:
            data.vocab.save(folder / "vocab.json")
    return folder


def _wrap(model: torch.nn.Module, cfg: Config, proc: dist.ProcessInfo, device: torch.device) -> torch.nn.Module:
    """DDP across processes (frozen parameters need find_unused_parameters), then torch.compile."""
    if proc.distributed:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                        find_unused_parameters=cfg.model.freeze != "none")
    if cfg.trainer.compile:
        model = torch.compile(model, mode=None if cfg.trainer.compile == "default" else cfg.trainer.compile)
    return model


def saved_vocab(run_dir: Path):
    """The vocabulary a text run was trained with (None for image runs)."""
    path = Path(run_dir) / "vocab.json"
    if not path.is_file():
        return None
    from kiln.data.text import Vocab

    return Vocab.load(path)


def _warn_changed(checkpoint: dict[str, Any], cfg: Config, world_size: int) -> None:
    """A run resumed with another config or world size is no longer exact; say what changed."""
    if checkpoint.get("world_size", 1) != world_size:
        log.warning("resuming a %d-process run with %d processes: training continues from the same state, but "
                    "batches and their order differ from the original run from here on",
                    checkpoint.get("world_size", 1), world_size)
    before, after = flatten(checkpoint["config"]), flatten(cfg.model_dump(mode="json"))
    changed = [f"{k}: {before.get(k)!r} -> {after.get(k)!r}" for k in after if before.get(k) != after.get(k)]
    if changed:
        log.warning("resuming with a changed config (the result will differ from an uninterrupted run): %s",
                    "; ".join(changed))


def _trackers(cfg: Config, run_dir: Path, resume_epoch: int | None):
    file_log = add_log_file(run_dir / "train.log")
    trackers: list[Any] = [MetricsFiles(run_dir, resume_epoch)]
    if cfg.log.tensorboard:
        from kiln.track.tensorboard import TensorBoardTracker

        trackers.append(TensorBoardTracker(run_dir / "tb", resume_epoch))
    trackers += _external_trackers(cfg, run_dir, resume_epoch is not None)
    return Trackers(trackers), file_log


def _external_trackers(cfg: Config, run_dir: Path, resuming: bool) -> list[Any]:
    """W&B and MLflow, when configured; one that cannot start is a warning, and training goes on."""
    from kiln.track.external import MlflowTracker, WandbTracker

    makers = []
    if cfg.log.wandb is not None:
        makers.append(("Weights & Biases", lambda: WandbTracker(cfg.log.wandb, run_dir, resuming)))
    if cfg.log.mlflow is not None:
        Path(cfg.log.dir).mkdir(parents=True, exist_ok=True)
        default_uri = f"sqlite:///{(Path(cfg.log.dir) / 'mlflow.db').resolve()}"
        makers.append(("MLflow", lambda: MlflowTracker(cfg.log.mlflow, run_dir, default_uri, cfg.name)))
    started = []
    for name, make in makers:
        try:
            started.append(make())
        except KilnError:
            raise  # not installed: a config the user must fix
        except Exception as e:  # noqa: BLE001 — an unreachable server must not stop training
            log.warning("%s tracker could not start (%s); training goes on without it", name, e)
    return started


def _test_best(cfg: Config, run_dir: Path, model, device, precision, channels_last, trackers,
               proc: dist.ProcessInfo) -> dict[str, Any]:
    path = resolve_checkpoint(run_dir, "best")
    state = load_checkpoint(path)  # on the CPU: only the weights go to the device, copied into the model
    load_weights(model, state["model"], path)
    data = build_data(cfg.data, seed=cfg.seed, device=device, splits=("test",), channels_last=channels_last,
                      vocab=saved_vocab(run_dir), rank=proc.rank, world_size=proc.world_size)
    results = run_evaluation(model, data, path, state, device, precision, run_dir if proc.is_main else None)
    trackers.log_test({k: v for k, v in results.items() if isinstance(v, float)})
    return results


def run_evaluation(model, data: Data, path: Path, state: dict[str, Any], device, precision: str,
                   run_dir: Path | None, limit: int | None = None) -> dict[str, Any]:
    """Evaluate on the test split and write test_metrics.json into `run_dir` (None: write nothing)."""
    raw = evaluate(model, data.test, num_classes=data.info.num_classes, device=device, precision=precision,
                   limit=limit, detailed=True)
    names = data.info.class_names
    results = {
        "checkpoint": str(path), "epoch": state["loop"]["epoch"],
        "loss": raw["loss"], "acc": raw["acc"], "acc_top5": raw.get("acc_top5"), "f1": raw["f1"],
        "num_samples": int(sum(sum(row) for row in raw["confusion_matrix"])),
        "per_class_acc": dict(zip(names, raw["per_class_acc"])),
        "class_names": names, "confusion_matrix": raw["confusion_matrix"],
    }
    if run_dir is None:
        return results
    (Path(run_dir) / "test_metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    log.info("test: loss %.4f | acc %.4f | top-5 %s | macro F1 %.4f  (%s)", results["loss"], results["acc"],
             f"{results['acc_top5']:.4f}" if results["acc_top5"] is not None else "n/a", results["f1"], path.name)
    return results


def test(run_dir: Path, *, checkpoint: str = "best", overrides: list[str] = ()) -> dict[str, Any]:
    """Evaluate a trained run's checkpoint on the test split (`kiln test`)."""
    run_dir = check_run_dir(run_dir)
    import yaml

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg = load_config(None, overrides, base=saved)
    device = resolve_device(cfg.trainer.device)
    precision = resolve_precision(cfg.trainer.precision, device)
    channels_last = use_channels_last(cfg.trainer.channels_last, device)
    path = resolve_checkpoint(run_dir, checkpoint)
    state = load_checkpoint(path)  # on the CPU: only the weights go to the device, copied into the model
    data = build_data(cfg.data, seed=cfg.seed, device=device, splits=("test",), channels_last=channels_last,
                      vocab=saved_vocab(run_dir))
    model = prepare_model(cfg, data.info, device, channels_last)
    load_weights(model, state["model"], path)
    limit = 2 if cfg.trainer.fast_dev_run else None
    return run_evaluation(model, data, path, state, device, precision, run_dir, limit)
