"""kiln from Python and notebooks — what `import kiln` exports (loaded on first use, so `import kiln` and the CLI
stay fast):

    run = kiln.train("fashion_mnist", "trainer.epochs=3")      # a Run: .dir, .metrics, .test, .history
    model = run.load()                                         # or kiln.load("runs/fashion_mnist/2026...")
    model.predict(["shoe.png", "shirt.jpg"])                   # prediction records (as_frame=True: a DataFrame)
    kiln.config("fashion_mnist", {"optim": {"lr": 0.1}})       # the resolved config, as `kiln config` shows it

Configs are a file, a shipped config's name, a dict or a `kiln.config.Config`; overrides are "a.b=c" strings or
dicts, applied as the command line's are. Mistakes raise `kiln.KilnError` with the message the CLI prints."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kiln.config import Config, resolve_config
from kiln.core.errors import KilnError, TrainingInterrupted
from kiln.core.formats import TestResults
from kiln.runs import RunDir
from kiln.tasks import Prediction, task_class

ConfigLike = Path | str | dict[str, Any] | Config
Override = str | dict[str, Any]


class History(list):
    """The metrics of every epoch (metrics.jsonl's rows, one dict each), oldest first."""

    def to_pandas(self) -> Any:
        """The rows as a pandas DataFrame (pandas is not one of kiln's requirements: pip install pandas)."""
        try:
            import pandas
        except ImportError:
            raise KilnError("to_pandas() needs pandas: pip install pandas") from None
        return pandas.DataFrame(list(self))


@dataclass(frozen=True)
class Run:
    """A finished (or stopped) training run."""

    dir: Path
    metrics: dict[str, float]  # the last epoch's
    test: TestResults | None  # test_metrics.json (None: the run was not tested)
    config: Config  # what it trained with, derived values included

    @property
    def history(self) -> History:
        return History(RunDir(self.dir).metrics())

    def load(self, checkpoint: str = "best") -> Model:
        return Model(self.dir, checkpoint)

    def plot(self) -> Any:
        """The training curves — loss, the task's training metric and the learning rate, train against validation,
        the best epoch marked — as a matplotlib Figure (a notebook shows it)."""
        from kiln.tasks import task_class
        from kiln.viz import figures

        rows = list(self.history)
        if not rows:
            raise KilnError(f"{self.dir} has no epochs recorded yet (metrics.jsonl is empty)")
        checkpoint = self.config.trainer.checkpoint
        monitor, mode = checkpoint.monitor or self.config.task.default_monitor, checkpoint.mode or "max"
        if not any(monitor in r for r in rows):
            monitor, mode = "train/loss", "min"
        return figures.curves(rows, monitor, mode, task_class(self.config.task.name).train_metric or "loss")

    def _repr_html_(self) -> str:
        """A notebook's view of the run: where it is, its last epoch's metrics and its test results."""
        import html

        def table(title: str, values: dict[str, Any]) -> str:
            cells = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{v:.4g}</td></tr>" for k, v in values.items()
                            if isinstance(v, (int, float)) and not isinstance(v, bool))
            return f"<b>{title}</b><table>{cells}</table>" if cells else ""

        return (f"<div><b>kiln run</b> <code>{html.escape(str(self.dir))}</code> — task "
                f"{html.escape(self.config.task.name)}, model {html.escape(self.config.model.name)}"
                + table("last epoch", self.metrics) + table("test (best.pt)", dict(self.test or {})) + "</div>")


class Model:
    """A trained run's model with its weights (`kiln.load`): predict, test and export it, or use `.module`."""

    def __init__(self, run_dir: Path | str, checkpoint: str = "best"):
        from kiln.train.trained import load_trained

        self.checkpoint = checkpoint
        self._trained = load_trained(run_dir, checkpoint)

    @property
    def module(self) -> Any:
        """The torch.nn.Module, in eval mode, on the run's device."""
        return self._trained.model

    @property
    def config(self) -> Config:
        return self._trained.cfg

    @property
    def dir(self) -> Path:
        return self._trained.run.path

    def predict(self, inputs: Any, *, top_k: int = 3, as_frame: bool = False, tta: str | None = None) -> Any:
        """Predictions for `inputs`: a path, folder, glob or CSV of image paths, a text, a PIL image or a uint8
        array (H, W[, C]) — or a list of these. Returns prediction records (`.input`, `.label`, `.probability`,
        `.top`), or with `as_frame` a pandas DataFrame with the columns `kiln predict --out` writes. `tta`:
        test-time views averaged, as `kiln predict --tta` (hflip, flips, crops:N)."""
        from kiln.commands.predict import predict_with

        items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        with tempfile.TemporaryDirectory(prefix="kiln-predict-") as folder:
            texts = [_as_input(item, Path(folder), i) for i, item in enumerate(items)]
            results = predict_with(self._trained, texts, top_k=top_k, tta=tta)
        return _frame(results) if as_frame else results

    def test(self, *overrides: Override, tta: str | None = None) -> TestResults:
        """Evaluate on the run's test split — or, with data overrides such as "data.root=other", on other data (its
        results go to their own file; the run's own stay untouched). `tta`: test-time views averaged, as `kiln
        test --tta` (results in test_metrics-tta-<views>.json)."""
        from kiln.config import override_strings
        from kiln.train.evaluation import run_test

        return run_test(self.dir, checkpoint=self.checkpoint, overrides=override_strings(overrides), tta=tta)

    def export(self, format: str = "onnx", path: Path | str | None = None) -> Path:
        """Write the model as onnx | exported | torchscript | safetensors (parity-checked as `kiln export` does);
        returns the file."""
        from kiln.commands.export import export

        return Path(export(self.dir, format, checkpoint=self.checkpoint, out=Path(path) if path else None).path)


def _as_input(item: Any, folder: Path, index: int) -> str:
    """What `kiln predict` reads: paths and texts as they are; an in-memory image saved losslessly as a PNG file,
    so it is decoded exactly as an image file is."""
    if isinstance(item, (str, Path)):
        return str(item)
    image = _pil_image(item)
    if image is None:
        raise KilnError(f"cannot predict a {type(item).__name__}: give file paths, folders, globs or CSVs of "
                        "paths, texts, PIL images or uint8 arrays (H, W) or (H, W, C)")
    path = folder / f"input-{index:05d}.png"
    image.save(path)
    return str(path)


def _pil_image(item: Any) -> Any:
    from PIL import Image

    if isinstance(item, Image.Image):
        return item
    array = item.numpy() if hasattr(item, "numpy") and hasattr(item, "dtype") else item
    import numpy as np

    if isinstance(array, np.ndarray) and array.dtype == np.uint8 and array.ndim in (2, 3):
        return Image.fromarray(array[..., 0] if array.ndim == 3 and array.shape[2] == 1 else array)
    return None


def _frame(results: list[Prediction]) -> Any:
    rows = [dict(zip(task_class(r.kind).csv_header(r), task_class(r.kind).csv_row(r))) for r in results]
    return History(rows).to_pandas()


def config(config: ConfigLike, *overrides: Override) -> Config:
    """The resolved config, as `kiln config` prints it."""
    return resolve_config(config, *overrides)


def train(config: ConfigLike | None, *overrides: Override, resume: Path | str | None = None,
          run_dir: Path | str | None = None, quiet: bool = True) -> Run:
    """Train `config` (with `overrides`) in a new run folder (or `run_dir`), or continue the run in `resume` with its
    own config (pass None for `config`; overrides such as trainer.epochs=N still apply); `quiet`: no progress bar
    (the log still says what happens). The preflight checks run inside, before any data is read."""
    from kiln.config import override_strings
    from kiln.train import session

    _log_as_the_cli_does()
    if resume is not None:
        if config is not None:
            raise KilnError("a resumed run trains with its own config: call kiln.train(None, *overrides, resume=RUN)")
        cfg = RunDir.open(resume).config(override_strings(overrides))
    elif config is None:
        raise KilnError("kiln.train needs a config (a file, a shipped config's name, a dict or a Config), or resume=RUN")
    else:
        cfg = resolve_config(config, *overrides)
    try:
        result = session.train(cfg, resume=Path(resume) if resume else None,
                               run_dir=Path(run_dir) if run_dir else None, quiet=quiet)
    except TrainingInterrupted as e:
        if e.preempted:  # SLURM's warning: the job is requeued, kiln's own error says so
            raise
        # Ctrl-C, or a notebook's interrupt: the step finished and last.pt was saved — raised on as what it was,
        # with the resume call
        raise KeyboardInterrupt(f"{e} From Python: kiln.train(None, resume={e.run or 'RUN'!r})") from e
    return Run(Path(result.run_dir).resolve(), result.metrics, result.test_metrics, result.config or cfg)


def _log_as_the_cli_does() -> None:
    """kiln's log on stderr (once, however often this is called) and, through it, every epoch line into the run's
    train.log — as under the CLI; without it Python's default level would keep only warnings."""
    from kiln.track.console import setup_logging

    setup_logging(0)


class ExportedModel:
    """An exported ONNX model (`kiln.load("model.onnx")`): predictions through onnxruntime, read and answered as
    `kiln predict model.onnx` does (its .json metadata says how). Testing and exporting need the run folder."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        if not self.path.is_file():
            raise KilnError(f"{self.path}: no such file")

    def predict(self, inputs: Any, *, top_k: int = 3, as_frame: bool = False, tta: str | None = None) -> Any:
        """As Model.predict: paths, folders, texts, PIL images or uint8 arrays, or a list of these."""
        from kiln.commands.predict import Ask, predict

        items = inputs if isinstance(inputs, (list, tuple)) else [inputs]
        with tempfile.TemporaryDirectory(prefix="kiln-predict-") as folder:
            texts = [_as_input(item, Path(folder), i) for i, item in enumerate(items)]
            results = predict([self.path], texts, Ask(top_k=top_k, tta=tta))
        return _frame(results) if as_frame else results

    def __repr__(self) -> str:
        return f"ExportedModel({str(self.path)!r})"


def load(run: Path | str, checkpoint: str = "best") -> Model | ExportedModel:
    """A trained run's model with the weights of `checkpoint` (best | last | a path) — or, for an exported ONNX file
    (kiln export), a model that predicts through onnxruntime."""
    if Path(run).suffix.lower() == ".onnx":
        return ExportedModel(run)
    return Model(run, checkpoint)


def cv(config: ConfigLike, *overrides: Override, folds: int = 5, test: bool = False) -> dict[str, Any]:
    """k-fold cross-validation of `config` (`kiln cv`): every fold's results, their mean and spread (cv.json)."""
    from kiln.commands.cv import run_cv

    _log_as_the_cli_does()
    return run_cv(resolve_config(config, *overrides), folds, test=test)


def tune(tune_config: Path | str, *overrides: Override, resume: Path | str | None = None, workers: int = 1) -> Path:
    """A search (`kiln tune`): returns its tune folder (results.csv, best.yaml, plots/)."""
    from kiln.commands.tune.runner import run_tune
    from kiln.config import override_strings

    _log_as_the_cli_does()
    return run_tune(Path(tune_config), override_strings(overrides), resume=Path(resume) if resume else None,
                    workers=workers)


__all__: Sequence[str] = ["ExportedModel", "History", "Model", "Run", "config", "cv", "load", "train", "tune"]
