"""What a search leaves in its tune folder: results.csv (ranked), best.yaml (runnable with kiln train), the
study's plots, and the summary table `kiln tune` prints."""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from kiln.commands.tune.space import TuneConfig, trial_config
from kiln.config import to_yaml
from kiln.core.errors import first_line

log = logging.getLogger("kiln")


def write_results(study, tune: TuneConfig, raw: dict[str, Any], tune_dir: Path) -> list[dict[str, Any]]:
    """results.csv (ranked), best.yaml (runnable with kiln train), and the study's plots."""
    rows = [{"trial": t.number, "state": t.state.name.lower(), tune.metric: t.value,
             "epochs": t.user_attrs.get("epochs", 0), **{f"param:{k}": v for k, v in t.params.items()},
             **run_facts(t.user_attrs.get("run_dir"), tune.metric),
             "run_dir": t.user_attrs.get("run_dir", "")} for t in study.get_trials(deepcopy=False)]
    ranked = save_results(rows, tune, raw, tune_dir)
    _plots(study, tune_dir)
    return ranked


def run_facts(run_dir: str | None, metric: str) -> dict[str, Any]:
    """A trial's test result, parameters, seconds per epoch and samples per second, for comparing models."""
    from kiln.runs import RunDir

    facts = RunDir(run_dir).facts(metric.split("/", 1)[-1]) if run_dir and Path(run_dir).is_dir() else {}
    return {k: v for k, v in facts.items() if v is not None}


def save_results(rows: list[dict[str, Any]], tune: TuneConfig, raw: dict[str, Any], tune_dir: Path):
    """Rank the trials by the metric, write results.csv and the best complete trial's config as best.yaml."""
    scored = sorted((r for r in rows if r[tune.metric] is not None and r["state"] == "complete"),
                    key=lambda r: r[tune.metric], reverse=tune.mode == "max")
    ranked = [{"rank": i + 1, **r} for i, r in enumerate(scored)] + \
             [{"rank": "", **r} for r in rows if r not in scored]
    columns = list(dict.fromkeys(k for r in ranked for k in r))
    with open(tune_dir / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(ranked)
    if scored:
        best = scored[0]
        params = {k.removeprefix("param:"): v for k, v in best.items() if k.startswith("param:")}
        (tune_dir / "best.yaml").write_text(f"# best trial {best['trial']} of {tune_dir}: {tune.metric}="
                                            f"{best[tune.metric]:.6g}\n" + to_yaml(trial_config(raw, params)))
    return ranked


def _plots(study, tune_dir: Path) -> None:
    """Optuna's own figures: PNG through matplotlib, and interactive HTML when plotly is installed."""
    import importlib.util
    import warnings

    from optuna.trial import TrialState

    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if complete < 2:
        log.info("no plots/: Optuna's plots compare complete trials, and this search has %d (of %d; pruned and "
                 "failed trials do not count)", complete, len(study.get_trials(deepcopy=False)))
        return
    import optuna.visualization as plotly_vis
    import optuna.visualization.matplotlib as mpl_vis

    from kiln.viz.style import RC

    folder = tune_dir / "plots"
    folder.mkdir(exist_ok=True)
    has_plotly = importlib.util.find_spec("plotly") is not None
    skipped = []
    for name in ("plot_optimization_history", "plot_param_importances", "plot_parallel_coordinate", "plot_slice"):
        try:
            import matplotlib.pyplot as plt

            with warnings.catch_warnings(), plt.rc_context(RC):  # type: ignore[arg-type]
                warnings.simplefilter("ignore")
                ax = getattr(mpl_vis, name)(study)
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).figure
                fig.savefig(folder / f"{name[5:]}.png", bbox_inches="tight")
                plt.close(fig)
            if has_plotly:
                getattr(plotly_vis, name)(study).write_html(folder / f"{name[5:]}.html", include_plotlyjs="cdn")
        except Exception as e:  # noqa: BLE001 — a plot that cannot be drawn (e.g. one parameter) is not fatal
            skipped.append(f"{name[5:]} ({first_line(e)})")
    if skipped:
        log.info("plots/: %s not drawn", "; ".join(skipped))


def summary_table(tune_dir: Path):
    """Rows of results.csv, for the CLI's table."""
    with open(tune_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))
