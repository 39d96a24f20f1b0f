"""Train a frameplan model with PyTorch Lightning.

  frameplan train predictor --config config/train_predictor.yaml --data DATA --out runs/predictor [--set k=v ...]
  frameplan train planner   --config config/train_planner.yaml   --data GRIDS --out runs/planner
  frameplan train vae       --config config/train_vae.yaml       --data DATA --out runs/vae
  frameplan train policy    --config config/train_policy.yaml    --data data/sim --out runs/policy [--set goal=false]

The embedded tiny models are trained in this order: ``vae`` (the ÷8 VAE, no pretrained one exists offline), then
``predictor`` and ``planner`` with ``--set vae_from=runs/vae/model``. ``--resume CKPT`` (or ``--resume auto``)
continues a run exactly (weights, optimizer, lr schedule, EMA, data order, step). See docs/TRAINING.md."""
from __future__ import annotations

import argparse

KINDS = ("predictor", "planner", "vae", "policy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=KINDS, help="model family to train")
    parser.add_argument("--config", default=None, help="training YAML (default: config/train_<kind>.yaml if present)")
    parser.add_argument("--data", required=True, help="dataset folder written by `frameplan convert` (ip2p for "
                        "predictor/vae, grid for planner; for policy: RoboTwin episodes, cached as frames once, or such a cache)")
    parser.add_argument("--out", required=True, help="run folder (checkpoints/, logs/, samples/, model/)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set lr=3e-4 --set max_steps=2000 (repeatable)")
    parser.add_argument("--resume", default=None, metavar="CKPT",
                        help="checkpoint to resume from, or 'auto' for the latest one in OUT/checkpoints")
    parser.add_argument("--no-export", action="store_true", help="do not export the model at the end")


def default_config(kind: str):
    """config/train_<kind>.yaml in the cwd, else where ``frameplan_core.paths.config_path`` finds the shipped configs
    (the source tree, the ament index, or the share folder of a pip install); None when there is none."""
    from pathlib import Path

    from frameplan_core.paths import config_path

    name = f"train_{kind}.yaml"
    for p in (Path.cwd() / "config" / name, config_path(name)):
        if p.is_file():
            return p
    return None


def run(args: argparse.Namespace) -> int:
    import logging

    from frameplan_training.config import load_train_config
    from frameplan_training.run import quiet_other_ranks, train

    quiet_other_ranks()  # DDP: every process runs this command; rank 0 speaks for the run
    log = logging.getLogger("frameplan.train")
    config = args.config or default_config(args.kind)
    cfg = load_train_config(args.kind, config, args.overrides)
    log.info("training %s with %s%s", args.kind, config or "built-in defaults",
             f" (overrides: {', '.join(args.overrides)})" if args.overrides else "")
    result = train(args.kind, cfg, args.data, args.out, resume=args.resume, export=not args.no_export)
    if result.rank != 0:
        return 0
    print(f"trained {args.kind}: {result.global_step} optimizer steps in {result.seconds:.1f} s")
    for k in sorted(result.metrics):
        print(f"  {k} = {result.metrics[k]:.5g}")
    if result.checkpoints:
        print(f"checkpoints: {result.checkpoints[-1].parent} (latest {result.checkpoints[-1].name})")
    if result.samples:
        print(f"sample images: {result.samples[-1]}")
    if result.model_dir:
        print(f"model: {result.model_dir}")
    print(f"summary: {result.out / 'train_summary.json'}")
    return 0
