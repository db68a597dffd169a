"""`kiln new DIR --from PROJECT`: a pytorch-template project's `config.json` as the equivalent kiln config.

The project's code is not copied: the kiln config names its model (`model.model:MnistModel`) and records the
project folder as `code_dir`, so kiln imports the project's own modules. Nothing of the project is imported here:
its files are read as text (and `ast`) only. What cannot be mapped is listed, never silently dropped.
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.core.errors import KilnError

# torchvision dataset classes a pytorch-template data loader may wrap -> kiln's registered datasets
TORCHVISION_DATASETS = {"MNIST": "mnist", "FashionMNIST": "fashion_mnist", "KMNIST": "kmnist", "CIFAR10": "cifar10",
                        "CIFAR100": "cifar100"}
METRICS = {"val_loss": "val/loss", "val_accuracy": "val/acc", "val_top_k_acc": "val/acc_top5", "loss": "train/loss",
           "accuracy": "train/acc"}
CROSS_ENTROPY_LOSSES = ("nll_loss", "cross_entropy")
REQUIRED = ("arch", "data_loader", "optimizer", "loss", "trainer")
KNOWN = {"name", "n_gpu", "arch", "data_loader", "optimizer", "loss", "metrics", "lr_scheduler", "trainer"}
TRAINER_KEYS = {"epochs", "save_dir", "save_period", "verbosity", "monitor", "early_stop", "tensorboard"}


@dataclass
class Migration:
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what was mapped differently, or not at all

    def note(self, text: str) -> None:
        self.notes.append(text)


def read_template_config(project: Path) -> dict[str, Any]:
    path = Path(project) / "config.json"
    if not path.is_file():
        raise KilnError(f"no config.json in {project}: --from takes a pytorch-template project folder (the one "
                        "with config.json, model/model.py and data_loader/data_loaders.py)")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise KilnError(f"{path} is not valid JSON: {e}") from None
    missing = [k for k in REQUIRED if k not in raw] if isinstance(raw, dict) else list(REQUIRED)
    if missing:
        raise KilnError(f"{path} is not a pytorch-template config: it has no {', '.join(missing)} "
                        f"(a pytorch-template config.json has {', '.join(sorted(KNOWN))})")
    return raw


def migrate(project: Path, config_dir: Path) -> Migration:
    """The kiln config equivalent to `project`'s config.json, for a config file written into `config_dir`."""
    project = Path(project).resolve()
    raw = read_template_config(project)
    m = Migration({"name": _name(raw.get("name", "run")),
                   "code_dir": os.path.relpath(project, Path(config_dir).resolve())})
    for key in sorted(set(raw) - KNOWN):
        m.note(f"config.json key '{key}' is not a pytorch-template key kiln knows; not mapped")
    _model(raw, project, m)
    _data(raw, project, m)
    _optimizer(raw, m)
    _loss(raw, project, m)
    _schedule(raw, m)
    _trainer(raw, project, m)
    if raw.get("metrics"):
        m.note(f"metrics {raw['metrics']}: kiln computes accuracy, top-5 accuracy (over 5 classes) and macro F1 for "
               "every epoch; your metric functions are not called")
    n_gpu = raw.get("n_gpu", 1)
    if n_gpu == 0:
        m.config.setdefault("trainer", {})["device"] = "cpu"
    elif isinstance(n_gpu, int) and n_gpu > 1:
        m.note(f"n_gpu {n_gpu}: kiln trains on several GPUs with DistributedDataParallel — run "
               f"`kiln train CONFIG --nproc {n_gpu}` (DataParallel is not used)")
    return m


def _name(name: Any) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(name)) or "run"


def _classes_in(path: Path) -> dict[str, list[str]]:
    """Class name -> base class names, of the classes defined in a Python file (read, not imported)."""
    if not path.is_file():
        return {}
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as e:
        raise KilnError(f"{path} does not parse as Python: {e}") from None
    return {node.name: [ast.unparse(b) for b in node.bases] for node in tree.body if isinstance(node, ast.ClassDef)}


def _model(raw: dict[str, Any], project: Path, m: Migration) -> None:
    arch = raw["arch"]
    name = arch.get("type") if isinstance(arch, dict) else None
    classes = _classes_in(project / "model" / "model.py")
    if not name or name not in classes:
        found = ", ".join(classes) or "none"
        raise KilnError(f"arch.type {name!r} is not a class in {project / 'model' / 'model.py'} (classes there: {found})")
    m.config["model"] = {"name": f"model.model:{name}", "args": dict(arch.get("args") or {})}


def _data(raw: dict[str, Any], project: Path, m: Migration) -> None:
    loader = raw["data_loader"]
    args = dict(loader.get("args") or {})
    data: dict[str, Any] = {}
    source = project / "data_loader" / "data_loaders.py"
    text = source.read_text() if source.is_file() else ""
    body = _class_source(text, loader.get("type", ""))
    found = re.findall(r"datasets\.(\w+)\(", body)
    registered = [TORCHVISION_DATASETS[f] for f in found if f in TORCHVISION_DATASETS]
    if registered:
        data["name"] = registered[0]
        if "data_dir" in args:
            data["root"] = str((project / args.pop("data_dir")).resolve())
    else:
        datasets = [n for n, bases in _classes_in(source).items() if any(b.endswith("Dataset") for b in bases)]
        m.note(f"data_loader {loader.get('type')!r} does not wrap a torchvision dataset kiln has registered "
               f"({'found ' + ', '.join(found) if found else 'none found'}): "
               + (f"data.name is your Dataset data_loader.data_loaders:{datasets[0]}; check data.args"
                  if datasets else "set data.name to your Dataset class (package.module:Class) and data.args"))
        if datasets:
            data["name"] = f"data_loader.data_loaders:{datasets[0]}"
    for old, new in (("batch_size", "batch_size"), ("validation_split", "val_split"), ("num_workers", "num_workers")):
        if old in args:
            data[new] = args.pop(old)
    if args.pop("shuffle", True) is False:
        m.note("data_loader.args.shuffle false: kiln always shuffles the training split (seeded, resumable)")
    args.pop("training", None)
    for key in args:
        m.note(f"data_loader.args.{key} is not mapped (kiln's data settings are under data:)")
    m.config["data"] = data


def _class_source(text: str, name: str) -> str:
    """The source of class `name` in `text` (all of `text` when it is not found)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return text
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return ast.get_source_segment(text, node) or text
    return text


def _optimizer(raw: dict[str, Any], m: Migration) -> None:
    opt = raw["optimizer"]
    args = dict(opt.get("args") or {})
    optim: dict[str, Any] = {"name": f"torch.optim:{opt.get('type', 'Adam')}", "decay_norm_and_bias": True}
    if "lr" in args:
        optim["lr"] = args.pop("lr")
    if "weight_decay" in args:
        optim["weight_decay"] = args.pop("weight_decay")
    if args:
        optim["args"] = args
    m.config["optim"] = optim


def _loss(raw: dict[str, Any], project: Path, m: Migration) -> None:
    loss = raw["loss"]
    if loss in CROSS_ENTROPY_LOSSES:
        m.note(f"loss {loss}: kiln's cross-entropy. On a model ending in log_softmax that is the same loss: "
               "cross-entropy applies log_softmax again, which leaves log-probabilities unchanged, then takes the NLL")
        return
    m.config["task"] = {"loss": f"model.loss:{loss}"}
    if not (project / "model" / "loss.py").is_file() or f"def {loss}(" not in (project / "model" / "loss.py").read_text():
        m.note(f"loss {loss!r} is not a function in model/loss.py: fix task.loss")


def _schedule(raw: dict[str, Any], m: Migration) -> None:
    sched = raw.get("lr_scheduler")
    if not sched:
        return
    m.config["schedule"] = {"name": f"torch.optim.lr_scheduler:{sched.get('type')}", "args": dict(sched.get("args") or {})}


def _trainer(raw: dict[str, Any], project: Path, m: Migration) -> None:
    tr = raw["trainer"]
    trainer: dict[str, Any] = {}
    if "epochs" in tr:
        trainer["epochs"] = tr["epochs"]
    monitor = str(tr.get("monitor", "off"))
    if monitor != "off":
        mode, _, metric = monitor.partition(" ")
        if mode not in ("min", "max") or metric not in METRICS:
            m.note(f"trainer.monitor {monitor!r} is not mapped (kiln monitors val/acc, val/loss, ...)")
        else:
            trainer["checkpoint"] = {"monitor": METRICS[metric], "mode": mode}
            if tr.get("early_stop"):
                trainer["early_stopping"] = {"enabled": True, "monitor": METRICS[metric], "mode": mode,
                                             "patience": int(tr["early_stop"])}
    m.config["trainer"] = trainer
    log: dict[str, Any] = {}
    if "save_dir" in tr:
        log["dir"] = str((project / tr["save_dir"]).resolve())
    if "tensorboard" in tr:
        log["tensorboard"] = bool(tr["tensorboard"])
    m.config["log"] = log
    if "save_period" in tr:
        m.note(f"trainer.save_period {tr['save_period']}: kiln writes last.pt every epoch and best.pt on improvement "
               "(trainer.checkpoint.keep_top_k keeps more)")
    if "verbosity" in tr:
        m.note("trainer.verbosity: use -q / -v on the kiln command line")
    for key in sorted(set(tr) - TRAINER_KEYS):
        m.note(f"config.json key 'trainer.{key}' is not mapped")
