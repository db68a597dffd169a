"""kiln predict RUN_DIR INPUT ... [--file rows.csv]"""

from __future__ import annotations

import argparse

from kiln.cli.common import add_verbosity, verbosity


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
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="texts (text runs), or image files, folders, glob patterns or CSVs of paths (image runs)")
    p.add_argument("--file", help="text runs: a CSV file of texts in the run's dataset layout (a label column is "
                                  "optional); runs on your own Dataset: passed to it as file=FILE")
    p.add_argument("--checkpoint", default="best", metavar="best|last|PATH",
                   help="which weights (default best); predict says which checkpoint and epoch they are, and warns "
                        "when the run is still training or stopped before its last epoch")
    p.add_argument("--path-column", metavar="NAME",
                   help="CSV inputs: the column of image paths (default: the run's data.path_column, else 'path', "
                        "else the one column whose values are image files)")
    p.add_argument("--top-k", type=int, default=3, help="how many classes to show per input (default 3)")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    p.add_argument("--out", metavar="CSV|DIR", help="write the predictions to this CSV file instead of printing "
                                                   "them (columns file, label, probability, top_k; multilabel: file, "
                                                   "labels and each label's probability; regression: file and each "
                                                   "target); segmentation: a folder (no suffix) gets one mask PNG "
                                                   "per input, at the input's size")
    add_verbosity(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from kiln.commands.predict import predict
    from kiln.track.console import setup_logging

    setup_logging(verbosity(args))

    results = predict(Path(args.run_dir), args.inputs, file=Path(args.file) if args.file else None,
                      checkpoint=args.checkpoint, top_k=args.top_k, path_column=args.path_column)
    if args.out:
        from kiln.tasks import task_class

        print(task_class(results[0].kind if results else "multiclass").write_predictions(results, Path(args.out)))
        return 0
    for r in results:
        if args.json:
            print(json.dumps(as_json(r), ensure_ascii=False))
        else:
            excerpt = r.input if len(r.input) <= 60 else r.input[:57] + "..."
            print(f"{_shown(r)}\t{excerpt}")
    return 0


def _shown(r) -> str:
    """One prediction's text, as its task writes it."""
    from kiln.tasks import task_class

    return task_class(r.kind).prediction_text(r)


def as_json(r) -> dict:
    from kiln.tasks import task_class

    return task_class(r.kind).prediction_json(r)
