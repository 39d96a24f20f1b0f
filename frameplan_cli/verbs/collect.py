"""Collect simulated RoboTwin 1.0 episodes (SAPIEN, two Panda arms) of block_hammer_beat, block_handover or
blocks_stack_easy into <out>/<task>_<camera_type>_pkl/episode<N>/<i>.pkl, with instructions and scene_info.json.

Failed plans and failed success checks are discarded and retried with the next seed; existing episodes are kept,
so a second run resumes where the first stopped.

Example: frameplan collect --task block_hammer_beat --episodes 100 --out data/sim --workers 2 --preview"""
from __future__ import annotations

import argparse
from pathlib import Path

from frameplan_core.sim.task_config import TASK_NAMES as TASKS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, choices=TASKS + ("all",), help="task to collect ('all' = the three)")
    p.add_argument("--episodes", type=int, default=None, help="number of episodes (config episode_num, default 100)")
    p.add_argument("--out", type=Path, default=None, help="output root (config save_path, default data/sim)")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    p.add_argument("--config", type=Path, default=None,
                   help="task config YAML (RoboTwin field names; default: the packaged tasks/<task>.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. --set save_freq=10 --set augmentation.enabled=true")
    p.add_argument("--seed", type=int, default=None, help="base seed (episode N tries seed+1000*N, +1, ...)")
    p.add_argument("--start", type=int, default=None, help="first episode index (config st_episode)")
    p.add_argument("--camera-type", default=None, help="head camera type: D435, Large_D435, L515 ...")
    p.add_argument("--cameras", nargs="+", default=None,
                   help="cameras to record (default all four: head_camera front_camera left_camera right_camera)")
    p.add_argument("--save-freq", type=int, default=None, help="sim steps (1/250 s) between saved frames (default 15)")
    p.add_argument("--augment", action="store_true", help="enable conditional augmentation (lights, colours, jitter)")
    p.add_argument("--preview", action="store_true", help="write a PNG strip of the first episode from every camera")
    p.add_argument("--summary-json", type=Path, default=None, help="also write the summary as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_config(task: str, args: argparse.Namespace):
    from frameplan_core.sim.task_config import load_task_config

    overrides = list(args.overrides)
    if args.episodes is not None:
        overrides.append(f"episode_num={args.episodes}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.start is not None:
        overrides.append(f"st_episode={args.start}")
    if args.camera_type:
        overrides.append(f"head_camera_type={args.camera_type}")
    if args.save_freq is not None:
        overrides.append(f"save_freq={args.save_freq}")
    if args.cameras:
        overrides.append(f"cameras=[{', '.join(args.cameras)}]")
    if args.augment:
        overrides.append("augmentation.enabled=true")
    cfg = load_task_config(task, args.config, overrides)
    from frameplan_core.sim.cameras import camera_type

    camera_type(cfg.head_camera_type, cfg.camera_config)  # fail early on an unknown camera type
    return cfg


def run(args: argparse.Namespace) -> int:
    from frameplan_core import atomic

    with atomic.sigterm_as_interrupt():  # SIGTERM as Ctrl-C: the unfinished episode is removed, workers stopped
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from frameplan_core.errors import ConfigError
    from frameplan_core.sim.collect import collect, format_summary, preview

    if args.workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {args.workers}")
    if args.task == "all" and args.config is not None:
        raise ConfigError("--config applies to one task; use --task NAME with --config")
    tasks = TASKS if args.task == "all" else (args.task,)
    summaries = []
    for task in tasks:
        cfg = build_config(task, args)
        out = args.out or Path(cfg.save_path)
        s = collect(cfg, out, workers=args.workers, progress=not args.no_progress)
        print(format_summary(s))
        summaries.append(s.to_dict())
        if args.preview:
            print(f"preview: {preview(out, cfg)}")
    if args.summary_json:
        from frameplan_core import atomic

        atomic.write_json(args.summary_json, summaries if len(summaries) > 1 else summaries[0])
    return 0


if __name__ == "__main__":  # pragma: no cover
    import sys

    from frameplan_cli.main import main

    sys.exit(main(["collect", *sys.argv[1:]]))
