"""Convert RoboTwin episodes (1.0 pickle folders and 2.0 hdf5 files) into an InstructPix2Pix pair dataset
(frame t -> frame t+interval with the task instruction, and/or motion segment start -> end with the step
instruction: frameplan_core/data/pairs.py) or a 3x3 grid dataset (nine evenly spaced frames), with episode-level
splits. The conversion itself is frameplan_core/data/convert.py.

Example: frameplan convert robotwin data/robotwin --to ip2p out/ip2p --interval 50 --camera head_camera
         frameplan convert robotwin data/sim --to ip2p out/ip2p --pairing both"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source_format", choices=["robotwin"], help="format of the source episodes")
    p.add_argument("src", type=Path, help="folder holding RoboTwin episodes (searched recursively), or one episode")
    p.add_argument("dst", type=Path, help="dataset folder to create")
    p.add_argument("--to", required=True, choices=["ip2p", "grid"], help="dataset kind to write")
    p.add_argument("--interval", type=int, default=50, help="ip2p: frames between input and target (default 50)")
    p.add_argument("--stride", type=int, default=None, help="ip2p: step between pair starts (default = interval)")
    p.add_argument("--pairing", choices=["interval", "segment", "both"], default="interval",
                   help="ip2p: 'interval' pairs (t -> t+interval, task instruction; default), 'segment' pairs (each "
                        "recorded motion segment's start -> end frame, step instruction) or both kinds")
    p.add_argument("--min-segment-frames", type=int, default=3, metavar="N",
                   help="ip2p: skip motion segments spanning fewer than N frames (default 3)")
    p.add_argument("--max-start", type=int, default=None, metavar="FRAME",
                   help="ip2p: only pairs starting at or before FRAME (an episode's opening, where only the "
                        "instruction tells what comes; default every pair)")
    p.add_argument("--paraphrase-key", choices=["episode", "scene"], default="episode",
                   help="ip2p: what chooses each pair's paraphrase with its start frame: the episode (default) or "
                        "the scene's collection seed, so the twins of an arm_choice=swapped collection get the same "
                        "sentence with only the side word changed")
    p.add_argument("--camera", default="head_camera", help="camera to take frames from (default head_camera)")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help="only these tasks (default all)")
    p.add_argument("--seed", type=int, default=0, help="seed for instruction choice and splits (default 0)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="episodes held out per task for val (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.0, help="episodes held out per task for test (default 0)")
    p.add_argument("--keep-splits", type=Path, default=None, metavar="DATASET",
                   help="keep the split of every episode listed in DATASET/splits.json (an earlier conversion); "
                        "only new episodes are assigned, so a grown dataset never leaks trained-on episodes into "
                        "val/test")
    p.add_argument("--size", type=int, default=None,
                   help="centre-crop and resize frames to SIZE x SIZE (grid: per cell); default keep the camera size")
    p.add_argument("--instructions", choices=["seen", "unseen"], default="seen",
                   help="which instruction list to draw from (default seen)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable/short episodes and list them")
    p.add_argument("--overwrite", action="store_true", help="replace DST if it exists")


def options(args: argparse.Namespace):
    """The ConvertOptions of the parsed arguments (same names)."""
    from dataclasses import fields

    from frameplan_core.data.convert import ConvertOptions

    return ConvertOptions(**{f.name: getattr(args, f.name) for f in fields(ConvertOptions)})


def run(args: argparse.Namespace) -> int:
    from frameplan_core import atomic
    from frameplan_core.data.convert import BadEpisode, convert
    from frameplan_core.errors import DataError

    with atomic.sigterm_as_interrupt():  # SIGTERM as Ctrl-C: the unfinished dataset folder is removed
        try:
            result = convert(args.src, args.dst, options(args))
        except BadEpisode as exc:
            raise DataError(f"{exc}\n(pass --skip-bad to skip bad episodes and list them)") from None
    print("\n".join(result.lines()))
    return 0
