"""Export a training checkpoint as a model folder (the same folder `frameplan train` writes to OUT/model).

  frameplan export predictor --checkpoint runs/predictor/checkpoints/step=0004000.ckpt --out runs/pred_4000
  frameplan eval predictor --model runs/pred_4000 --data DATA --split val

Checkpoints hold the raw and the EMA weights; the EMA weights are exported unless --raw. This is how a run's
intermediate checkpoints are compared on the validation split before one is shipped."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=("predictor", "planner", "policy"), help="model family the checkpoint belongs to")
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="a checkpoints/step=N.ckpt of a run")
    parser.add_argument("--out", required=True, help="model folder to write")
    parser.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA weights")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out folder")


def run(args: argparse.Namespace) -> int:
    from frameplan_training.run import export_checkpoint

    folder = export_checkpoint(args.kind, args.checkpoint, args.out, ema=not args.raw, overwrite=args.overwrite)
    print(f"exported {args.kind} ({'raw' if args.raw else 'EMA'} weights of {args.checkpoint}): {folder}")
    return 0
