"""kiln export RUN_DIR --format onnx|exported|torchscript|safetensors [--checkpoint best|last] [--out FILE]"""

from __future__ import annotations

import argparse

from kiln.cli.common import add_verbosity, verbosity


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a trained model (ONNX, torch.export, TorchScript), parity-checked",
                       description="Write the run's model as ONNX (dynamic batch; needs pip install -e .[export]), "
                                   "a torch.export program (.pt2) or TorchScript (a detector: ONNX, one image at a "
                                   "time, NMS included), with its preprocessing (input "
                                   "shape, channels, mean/std, class names, task) beside it as FILE.json and in the "
                                   "ONNX metadata. The export is run on a real test batch and must match the PyTorch "
                                   "model within 1e-4 (largest output difference printed: logits; a detector's "
                                   "boxes and scores); a failing file is removed. "
                                   "kiln predict takes the ONNX file like a run folder.",
                       epilog="examples:\n  kiln export runs/fashion_mnist/20260101-120000 --format onnx\n"
                              "  kiln predict runs/fashion_mnist/20260101-120000/model.onnx shoe.png",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="overrides of the run's config, e.g. data.root=... where the test data lives on this machine "
                        "(the export is checked on a batch of it)")
    p.add_argument("--format", default="onnx", choices=["onnx", "exported", "torchscript", "safetensors"],
                   help="onnx (default), exported (torch.export .pt2), torchscript, or safetensors (the weights "
                        "and what rebuilds the model: what model.pretrained, timm and Hugging Face load)")
    p.add_argument("--checkpoint", default="best", metavar="best|last|PATH")
    p.add_argument("--out", metavar="FILE", help="where to write (default RUN_DIR/model.onnx, .pt2 or .ts.pt)")
    add_verbosity(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from kiln.commands.export import export
    from kiln.track.console import setup_logging

    setup_logging(verbosity(args))
    result = export(Path(args.run_dir), args.format, checkpoint=args.checkpoint,
                    out=Path(args.out) if args.out else None, overrides=args.overrides)
    from kiln.commands.export import onnx_data_file

    extra = [result.meta_path.name] + ([onnx_data_file(result.path).name] if args.format == "onnx" and
                                       onnx_data_file(result.path).is_file() else [])
    tokenizer = result.path.with_name(result.path.name + ".tokenizer")  # a model tokenizer's run
    extra += [tokenizer.name + "/"] if tokenizer.is_dir() else []
    if args.format == "safetensors":
        print(f"wrote {result.path} (+ {', '.join(extra)}); loads back into the model unchanged (largest "
              f"difference {result.max_abs_diff:.2e}); start from it with model.pretrained={result.path}")
        return 0
    each = ", ".join(f"{name} {d:.2e}" for name, d in (result.differences or {}).items())
    print(f"wrote {result.path} (+ {', '.join(extra)}); matches the PyTorch model on {result.batch} test "
          f"samples: largest output difference {result.max_abs_diff:.2e}" + (f" ({each})" if each else ""))
    return 0
