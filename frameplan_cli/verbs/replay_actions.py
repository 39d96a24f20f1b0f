"""Replay an episode's recorded commands open loop in the simulator and say whether the task still succeeds.

The scene is rebuilt from scene_info.json (task, seed, augmentation record); every saved frame's
joint_command_full (both arms' 7 joint targets + gripper command) is sent through SimEnv, interpolated over the
episode's save_freq ticks. Reported: success (and the tick the goal first held), each object's final position and
rotation error against the recorded final pose, and the measured joints against the recorded ones. Nothing
renders unless --images is given.

Examples:
  frameplan replay-actions data/sim/block_handover_D435_pkl/episode0
  frameplan replay-actions data/sim --task blocks_stack_easy --limit 5 --json

Exit status: 0 every replay reached the goal, 3 some replay did not, 1 an error (one line naming the episode)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

FAILED = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("episode", type=Path,
                   help="an episode<N>/ folder or episode<N>.hdf5, or a folder holding episodes (all are replayed)")
    p.add_argument("--task", action="append", default=None, help="folder of episodes: only this task (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="folder of episodes: replay at most this many")
    p.add_argument("--images", action="store_true",
                   help="render the head camera at every saved frame and report the mean pixel difference from the "
                        "recording (slower; needs the recorded camera type)")
    p.add_argument("--no-interpolate", action="store_true",
                   help="hold each frame's command for save_freq ticks instead of moving linearly to it")
    p.add_argument("--no-feedforward", action="store_true",
                   help="interpolate without sending the ramp's joint velocity to the drives (lags behind)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="task config override, e.g. camera_config=cams.yaml for --images with a custom camera type")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def _episodes(path: Path, tasks: list[str] | None, limit: int | None) -> tuple[list[Path], bool]:
    """(episode paths, whether ``path`` is itself one episode)."""
    from frameplan_core.data.episode import find_episode_paths, parse_episode_name
    from frameplan_core.errors import ConfigError, DataError

    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    if not path.exists():
        raise DataError(f"{path}: no such episode or folder")
    if path.is_file() or parse_episode_name(path.name) is not None:
        return [path], True  # opening it says clearly what is wrong with it
    found = find_episode_paths(path, tasks)
    if not found:
        what = f" of task(s) {', '.join(tasks)}" if tasks else ""
        raise DataError(f"{path}: not an episode and holds no episodes{what} (expected episode<N>/ folders of "
                        f"pickles or episode<N>.hdf5 files)")
    paths = [p for _, _, p in found]
    return (paths[:limit] if limit else paths), False


def run(args: argparse.Namespace) -> int:
    from frameplan_core.errors import FrameplanError
    from frameplan_core.sim.replay import replay_episode

    paths, single = _episodes(args.episode, args.task, args.limit)
    results, errors = [], []
    for path in paths:
        try:
            r = replay_episode(path, cameras=("head_camera",) if args.images else (),
                               interpolate=not args.no_interpolate, feedforward=not args.no_feedforward,
                               overrides=args.overrides or None)
        except FrameplanError as exc:
            if single:
                raise
            errors.append({"episode": str(path), "error": f"{type(exc).__name__}: {exc}"})
            if not args.json:
                print(f"{path}: error: {exc}", flush=True)
            continue
        results.append(r)
        if not args.json:
            print(r.summary(), flush=True)
    ok = sum(r.success for r in results)
    if args.json:
        print(json.dumps({"replayed": len(results), "succeeded": ok, "errors": errors,
                          "episodes": [r.to_dict() for r in results]}, indent=2))
    elif not single:
        worst = max((r.max_position_error_m for r in results), default=0.0)
        print(f"{len(results)} replayed: {ok} reached the goal, {len(results) - ok} did not; {len(errors)} error(s); "
              f"largest final object position error {1000 * worst:.1f} mm")
    if errors:
        return 1
    return 0 if ok == len(results) else FAILED
