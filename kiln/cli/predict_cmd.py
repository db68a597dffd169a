"""kiln predict RUN_DIR INPUT ... [--file rows.csv]"""

from __future__ import annotations

import argparse
from pathlib import Path

from kiln.cli.common import TTA_HELP, add_verbosity, verbosity, weight_list


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="predict classes, labels or values for new texts or images with a trained run",
                       description="Print the prediction for each input — the class and its probability (multiclass), "
                                   "every label at or above its threshold with its probability (multilabel), the "
                                   "target values in their original units (regression) — for texts for text "
                                   "runs (or the rows of a CSV file with --file), image files (PNG/JPEG, "
                                   "converted to the training size and normalisation) for image runs. For a run on your "
                                   "own Dataset: the samples of its split='predict' (with --file passed as file=...).",
                       epilog='examples:\n  kiln predict runs/ag_news/20260101-120000 "Stocks rally as rates fall"\n'
                              "  kiln predict runs/ag_news/20260101-120000 --file headlines.csv\n"
                              "  kiln predict runs/fashion_mnist/20260101-120000 shoe.png shirt.jpg\n"
                              "  kiln predict runs/pets/20260101-120000 photos/new/ --out predictions.csv",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, an exported model.onnx, or a `kiln cv` folder "
                                                      "(every fold's model)")
    p.add_argument("inputs", nargs="*", metavar="[RUN_DIR ...] INPUT",
                   help="more runs or ONNX files (all the models answer as one ensemble: their probabilities or "
                        "values averaged), then texts (text runs), or image files, folders, glob patterns or CSVs of "
                        "paths (image runs)")
    p.add_argument("--file", help="text runs: a CSV file of texts in the run's dataset layout (a label column is "
                                  "optional); runs on your own Dataset: passed to it as file=FILE")
    p.add_argument("--checkpoint", default="best", metavar="best|last|PATH",
                   help="which weights (default best); predict says which checkpoint and epoch they are, and warns "
                        "when the run is still training or stopped before its last epoch")
    p.add_argument("--path-column", metavar="NAME",
                   help="CSV inputs: the column of image paths (default: the run's data.path_column, else 'path', "
                        "else the one column whose values are image files)")
    p.add_argument("--top-k", type=int, default=3, help="how many classes to show per input (default 3)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="settings",
                   help="a setting of the run's config for these predictions (repeatable), e.g. "
                        "task.score_threshold=0.3 (a detector's boxes kept), task.max_detections=10")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    p.add_argument("--overlay", metavar="DIR", help="segmentation and detection: also write each input with its "
                                                   "predicted mask or boxes drawn in, as DIR/<stem>.png")
    p.add_argument("--tta", metavar="VIEWS", help=f"test-time augmentation, each model's answers averaged over views "
                                                  f"of each image: {TTA_HELP}")
    p.add_argument("--weights", metavar="W,W,...", type=weight_list,
                   help="an ensemble's weights, one per model in order (default: equal)")
    p.add_argument("--submission", metavar="TEMPLATE.csv",
                   help="a competition's sample submission: written to --out with its label column filled, row for "
                        "row (the id column is the one naming the input files, with or without extension; every "
                        "row must match one input and every input one row)")
    p.add_argument("--id-column", metavar="NAME", help="--submission: the template's id column (default: the one "
                                                       "whose values name the input files)")
    p.add_argument("--label-column", metavar="NAME", help="--submission: the column to fill (default: the other one)")
    p.add_argument("--labels", choices=("auto", "index", "name"), default="auto",
                   help="--submission: class indices in the run's class order, or class names (default auto: "
                        "indices when the template's label column holds integers)")
    p.add_argument("--out", metavar="CSV|DIR", help="write the predictions to this CSV file instead of printing "
                                                   "them (columns file, label, probability, top_k; multilabel: file, "
                                                   "labels and each label's probability; regression: file and each "
                                                   "target); segmentation: a folder (no suffix) gets one mask PNG "
                                                   "per input, at the input's size")
    add_verbosity(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from kiln.commands.predict import Ask, predict
    from kiln.track.console import setup_logging

    setup_logging(verbosity(args))

    models, inputs = models_and_inputs(args.run_dir, args.inputs)
    ask = Ask(file=Path(args.file) if args.file else None, checkpoint=args.checkpoint, top_k=args.top_k,
              overrides=tuple(args.settings), path_column=args.path_column, tta=args.tta, weights=args.weights)
    if args.submission:
        return _submit(args, models, inputs, ask)
    if args.overlay:
        from kiln.commands.predict import predict_named
        from kiln.tasks import task_class

        results, names = predict_named(models, inputs, ask)
        print(task_class(results[0].kind if results else "multiclass").write_overlays(results, Path(args.overlay),
                                                                                     names))
    else:
        results = predict(models, inputs, ask)
    if args.out:
        from kiln.commands.predict import write_predictions

        print(write_predictions(models, results, Path(args.out)))
        return 0
    for r in results:
        if args.json:
            print(json.dumps(as_json(r), ensure_ascii=False))
        else:
            excerpt = r.input if len(r.input) <= 60 else r.input[:57] + "..."
            print(f"{_shown(r)}\t{excerpt}")
    return 0


def models_and_inputs(first: str, rest: list[str]) -> tuple[list[Path], list[str]]:
    """The models (the first argument, then every run folder, cv folder or ONNX file after it) and the inputs."""
    from kiln.train.ensemble import is_model_path

    models = [Path(first)]
    while rest and is_model_path(rest[0]):
        models.append(Path(rest.pop(0)))
    return models, rest


def _submit(args: argparse.Namespace, models: list[Path], inputs: list[str], ask) -> int:
    from kiln.commands.predict import predict_named
    from kiln.commands.submission import write_submission
    from kiln.core.errors import KilnError

    if not args.out:
        raise KilnError("--submission writes the filled template to --out FILE.csv: give --out")
    results, names = predict_named(models, inputs, ask)
    out = write_submission(results, names, Path(args.submission), Path(args.out), id_column=args.id_column,
                           label_column=args.label_column, labels=args.labels)
    print(f"wrote {out} ({len(results)} rows)")
    return 0


def _shown(r) -> str:
    """One prediction's text, as its task writes it."""
    from kiln.tasks import task_class

    return task_class(r.kind).prediction_text(r)


def as_json(r) -> dict:
    from kiln.tasks import task_class

    return task_class(r.kind).prediction_json(r)
