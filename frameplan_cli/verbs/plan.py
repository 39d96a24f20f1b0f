"""Generate a 9-frame 3x3 serpentine visual plan from one image and an instruction, a trajectory, or both.

Writes into --out: grid.png (the 3x3 mosaic; grid_NN.png per grid when chained), frames/frame_NN.png in time
order, plan.gif (the sequence), conditioning.png (the source grid the model saw) and plan.json (inputs, timings,
confidences). With two or more samples (the embedded model's default is 4) also the uncertainty of every frame:
uncertainty.png (heat map of the grid with a scale bar in grey levels; uncertainty_NN.png per grid when chained)
and uncertainty.npy (float32 (frames, cell, cell) in grey levels, time order; frameplan_core/uncertainty.py).
Trajectory file (JSON): [[x, y], ...] pixel points of --image, or {"points": [[x, y], ...]}, or
{"points_3d": [[x, y, z], ...], "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]} in the camera optical frame."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="current camera frame (PNG/JPEG)")
    parser.add_argument("--instruction", default=None, help="what should happen (omit for trajectory-only plans)")
    parser.add_argument("--trajectory", default=None, help="JSON file with the 2D (or 3D + K) path to follow")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--checkpoint", default="tiny",
                        help="planner checkpoint folder, 'tiny' (shipped weights) or a local FLUX.1-dev folder")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: model config, 20)")
    parser.add_argument("--guidance", type=float, default=None, help="guidance (default: model config, 3.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--samples", type=int, default=None,
                        help="plans averaged per pixel (the expected frames; default: the model's)")
    parser.add_argument("--chain", type=int, default=1, help="grids generated autoregressively (8k+1 frames)")
    parser.add_argument("--lora", action="append", default=[], metavar="PATH[=NAME]",
                        help="load a LoRA adapter (diffusers format); repeatable")
    parser.add_argument("--adapter", default=None, help="adapter to use for this plan ('none' = base weights)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fps", type=float, default=4.0, help="frame rate of plan.gif")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--no-uncertainty", action="store_true", help="do not write uncertainty.png/.npy")


def read_trajectory(path: str | Path):
    from frameplan_core.errors import DataError, InputError
    from frameplan_core.jsonfile import read_json
    from frameplan_core.trajectory import as_trajectory

    path = Path(path)
    data = read_json(path, DataError, kind=None, missing="trajectory file not found", what="the trajectory file")
    try:
        return as_trajectory(data)
    except InputError as exc:
        raise InputError(f"{path}: {exc}", kind=exc.kind) from None


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from frameplan_core import atomic, grid, uncertainty
    from frameplan_core.errors import InputError
    from frameplan_core.image import encode_image, gif_bytes, read_image
    from frameplan_core.planner import GridPlanner

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise InputError(f"{out}: already exists; pass --overwrite to replace it")
    if args.instruction is None and args.trajectory is None:
        raise InputError("give --instruction, --trajectory, or both (the plan needs at least one goal)")
    if args.fps <= 0:
        raise InputError(f"--fps {args.fps}: must be > 0")
    image = read_image(args.image)
    trajectory = read_trajectory(args.trajectory) if args.trajectory else None
    planner = GridPlanner.from_pretrained(args.checkpoint, device=args.device)
    for spec in args.lora:
        path, _, name = spec.partition("=")
        planner.load_adapter(path, name or Path(path).stem)
    plan = planner.plan(image, instruction=args.instruction, trajectory=trajectory, steps=args.steps,
                        guidance=args.guidance, seed=args.seed, adapter=args.adapter, chain=args.chain,
                        samples=args.samples)
    with atomic.atomic_dir(out, overwrite=True) as tmp:
        atomic.write_bytes(tmp / "grid.png", encode_image(plan.grid))
        if len(plan.grids) > 1:
            for k, g in enumerate(plan.grids, 1):
                atomic.write_bytes(tmp / f"grid_{k:02d}.png", encode_image(g))
        for k, f in enumerate(plan.frames, 1):
            atomic.write_bytes(tmp / "frames" / f"frame_{k:02d}.png", encode_image(f))
        atomic.write_bytes(tmp / "plan.gif", gif_bytes(plan.frames, args.fps))
        atomic.write_bytes(tmp / "conditioning.png", encode_image(plan.conditioning))
        maps = None if args.no_uncertainty else plan.uncertainty
        if maps is not None:
            for k in range(len(plan.grids)):
                heat = uncertainty.heatmap(grid.compose(maps[8 * k : 8 * k + 9]))
                name = "uncertainty.png" if k == len(plan.grids) - 1 else f"uncertainty_{k + 1:02d}.png"
                atomic.write_bytes(tmp / name, encode_image(uncertainty.with_legend(
                    heat, uncertainty.HEATMAP_MAX, uncertainty.confidence_of(maps[8 * k + 1 : 8 * k + 9]))))
            atomic.write_bytes(tmp / "uncertainty.npy", uncertainty.npy_bytes(np.stack(maps)))
        atomic.write_json(tmp / "plan.json", {
            "image": str(args.image), "instruction": plan.instruction, "checkpoint": str(args.checkpoint),
            "trajectory_cell_px": None if plan.trajectory is None else plan.trajectory.tolist(),
            "frames": len(plan.frames), "inputs": plan.inputs, "timings": plan.timings,
            "confidence": plan.confidence, "frame_confidence": plan.frame_confidence,
            "uncertainty": {"files": ["uncertainty.png", "uncertainty.npy"], "unit": "grey levels (0..255)",
                            "heatmap_max": uncertainty.HEATMAP_MAX} if maps is not None else plan.uncertainty_note,
        })
    print(f"plan: {len(plan.frames)} frames ({', '.join(plan.inputs['modalities'])}) in "
          f"{plan.timings['total_s']:.2f} s -> {out}/ (grid.png, frames/, plan.gif, conditioning.png, plan.json"
          + (", uncertainty.png/.npy" if maps is not None else "") + ")"
          + (f"; confidence {plan.confidence:.3f}" if plan.confidence is not None else ""))
    return 0
