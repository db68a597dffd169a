"""kiln inspect RUN_DIR|CONFIG [--layers PATTERN] [--input IMAGE|TEXT | --sample N] [--save]"""

from __future__ import annotations

import argparse

from kiln.cli.common import add_verbosity, verbosity


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show a model's layers and intermediate outputs (forward hooks)",
                       description="Run one batch through the model of a run (with its trained weights) or of a "
                                   "config (freshly initialised, or pretrained) and print every layer's type, "
                                   "output shape, parameter count and whether it trains. With --save, write the "
                                   "chosen layers' activations as .pt files and feature-map grids (PNG).",
                       epilog="examples:\n  kiln inspect runs/fashion_mnist/20260101-120000\n"
                              "  kiln inspect configs/fashion_mnist_resnet.yaml --layers 'layer1*'\n"
                              "  kiln inspect runs/fashion_mnist/20260101-120000 --layers 0 --input shoe.png --save\n"
                              "  kiln inspect configs/image_folder.yaml data.root=photos --batch --split train",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="RUN_DIR|CONFIG")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides (e.g. data.root=...)")
    p.add_argument("--layers", metavar="PATTERN", help="layer names to show/save, shell-style (default: all leaves)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--input", metavar="IMAGE|TEXT", help="an image file (image models) or a text (text models)")
    group.add_argument("--sample", type=int, default=1, metavar="N", help="use the first N test samples (default 1)")
    group.add_argument("--batch", action="store_true",
                       help="see what the model sees: write a grid of one batch exactly as the model receives it "
                            "(decoded, resized, augmented, normalised; shown de-normalised) with its labels, and print "
                            "its per-channel statistics and the split's class counts (text: decoded padded rows)")
    p.add_argument("--split", choices=("train", "val", "test"), default="train", help="with --batch (default train)")
    p.add_argument("--checkpoint", default="best", metavar="best|last|PATH", help="for a run folder (default best)")
    p.add_argument("--save", action="store_true", help="write activations (.pt) and feature-map grids (.png)")
    p.add_argument("--out", metavar="DIR", help="where --save / --batch write (default RUN_DIR/inspect or ./inspect)")
    add_verbosity(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from kiln.commands.inspect_target import load_target
    from kiln.commands.layers import layer_table, save_activations
    from kiln.track.console import setup_logging

    setup_logging(verbosity(args))
    if args.batch:
        from kiln.commands.inspect_target import show_batch

        view = show_batch(Path(args.target), args.overrides, args.split, Path(args.out) if args.out else None)
        print("\n".join(view.lines))
        if view.figure_path:
            print(f"wrote {view.figure_path}")
        return 0
    target = load_target(Path(args.target), args.overrides, checkpoint=args.checkpoint, input=args.input,
                         sample=args.sample)
    rows, outputs = layer_table(target.model, target.inputs, args.layers)
    table = Table(title=f"{target.description} — input {target.input_description}")
    for column, justify in (("layer", "left"), ("type", "left"), ("output shape", "left"),
                            ("parameters", "right"), ("trainable", "center")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]  # one of rich's literals
    for r in rows:
        table.add_row(r.name, r.type, str(tuple(r.output_shape)) if r.output_shape else "-", f"{r.params:,}",
                      r.trainable)
    Console(width=120).print(table)
    if args.save:
        folder = Path(args.out) if args.out else (target.run_dir / "inspect" if target.run_dir else Path("inspect"))
        written = save_activations(outputs, folder)
        print(f"wrote {len(written)} files to {folder}")
    return 0
