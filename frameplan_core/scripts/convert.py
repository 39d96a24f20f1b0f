"""Convert RoboTwin episodes (1.0 pickle folders and 2.0 hdf5 files) into an InstructPix2Pix pair dataset
(frame t -> frame t+interval with the task instruction, and/or motion segment start -> end with the step
instruction: frameplan_core/data/pairs.py) or a 3x3 grid dataset (nine evenly spaced frames), with episode-level
splits.

Example: frameplan convert robotwin data/robotwin --to ip2p out/ip2p --interval 50 --camera head_camera
         frameplan convert robotwin data/sim --to ip2p out/ip2p --pairing both"""
from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter, defaultdict
from pathlib import Path

log = logging.getLogger(__name__)


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


MAX_TRAJECTORY_POINTS = 64  # the end-effector track stored with a grid sample is subsampled to at most this


def grid_trajectory(ep, camera: str, size: int | None) -> dict:
    """The end-effector track of the arm that moves most in ``camera`` (arc length of its projected path),
    subsampled in time to at most MAX_TRAJECTORY_POINTS frames and mapped like the grid cells (centre crop and
    resize to ``size``): ``{"points": [[x, y], ...], "image_hw": [h, w], "arm": "left"|"right"}`` in pixels of
    the stored cell images. Raises DataError/InputError when the episode has no end poses or camera matrices."""
    import numpy as np

    from frameplan_core.trajectory import ENDPOSE_POS, episode_ee_trajectory, fit_points

    n = len(ep)
    frames = sorted(set(np.rint(np.linspace(0, n - 1, min(n, MAX_TRAJECTORY_POINTS))).astype(int).tolist()))
    best = None
    for arm in ENDPOSE_POS:
        traj = episode_ee_trajectory(ep, frames, camera=camera, arm=arm)
        length = float(np.linalg.norm(np.diff(traj.points, axis=0), axis=1).sum())
        if best is None or length > best[0]:
            best = (length, arm, traj)
    _, arm, traj = best
    hw = tuple(traj.image_hw) if traj.image_hw else tuple(ep.rgb(frames[0], camera).shape[:2])
    points = traj.points
    if size:
        points, hw = fit_points(points, hw, int(size), "center"), (int(size), int(size))
    return {"points": points.tolist(), "image_hw": list(hw), "arm": arm}


def _episode_samples(ep, kind: str, args, key: str, no_trajectory: list | None = None) -> list[dict]:
    """Read everything one episode contributes before writing any of it (a bad frame discards the episode).
    Grid episodes without end poses / camera matrices get no trajectory; (path, reason) goes to
    ``no_trajectory``."""
    from frameplan_core.data import grid_samples, instructions, pairs
    from frameplan_core.errors import DataError, InputError
    from frameplan_core.image import fit

    n = len(ep)
    ep_instr = ep.instructions
    task = instructions.canonical_task(ep.task)
    words = instructions.humanize(task)
    out = []
    if kind == "ip2p":
        for spec in pairs.episode_pairs(ep, args.pairing, args.interval, args.stride, args.min_segment_frames):
            a, b = ep.rgb(spec.start, args.camera), ep.rgb(spec.end, args.camera)
            if args.size:
                a, b = fit(a, args.size, "center"), fit(b, args.size, "center")
            text, source = pairs.pair_instruction(spec, task, args.seed, key, args.instructions, ep_instr)
            out.append({"input": a, "output": b, "edit": text,
                        "input_caption": f"{words}, {args.camera} frame {spec.start}",
                        "output_caption": f"{words}, {args.camera} frame {spec.end}",
                        "meta": {"frames": [spec.start, spec.end], "instruction_source": source, **spec.meta()}})
    else:
        s = grid_samples.make_grid_sample(ep, args.camera, args.size)
        text, source = instructions.choose(task, args.seed, key, args.instructions, ep_instr)
        meta = {"frames": s["indices"], "instruction_source": source}
        try:
            meta["trajectory"] = grid_trajectory(ep, args.camera, args.size)
        except (DataError, InputError) as exc:
            if no_trajectory is not None:
                no_trajectory.append((str(ep.path), str(exc)))
        out.append({"input": s["source"], "output": s["target"], "edit": text,
                    "input_caption": f"{words}, first frame", "output_caption": f"{words}, nine-frame plan",
                    "meta": meta})
    for o in out:
        o["meta"].update(task=task, camera=args.camera, source=str(ep.path), episode_frames=n,
                         format="robotwin2" if ep.path.suffix in (".hdf5", ".h5") else "robotwin1")
    return out


def run(args: argparse.Namespace) -> int:
    from frameplan_core import atomic

    with atomic.sigterm_as_interrupt():  # SIGTERM as Ctrl-C: the unfinished dataset folder is removed
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from frameplan_core.data import ip2p, robotwin, splits
    from frameplan_core.data.instructions import canonical_task
    from frameplan_core.errors import DataError

    if args.interval < 1:
        raise DataError(f"--interval must be >= 1, got {args.interval}")
    if args.stride is not None and args.stride < 1:
        raise DataError(f"--stride must be >= 1, got {args.stride}")
    if args.size is not None and args.size < 8:
        raise DataError(f"--size must be >= 8 pixels, got {args.size}")
    if args.min_segment_frames < 1:
        raise DataError(f"--min-segment-frames must be >= 1, got {args.min_segment_frames}")
    if args.to == "grid" and args.pairing != "interval":
        raise DataError(f"--pairing {args.pairing} applies to --to ip2p only (a grid sample spans a whole episode)")
    src = args.src.resolve()
    found = robotwin.find_episode_paths(src)
    if args.tasks:
        wanted = {canonical_task(t) for t in args.tasks}
        found = [e for e in found if canonical_task(e[0]) in wanted]
    if not found:
        which = f" for tasks {', '.join(args.tasks)}" if args.tasks else ""
        raise DataError(f"{args.src}: no RoboTwin episodes found{which} (expected <task>_<camera>_pkl/episode<N>/ "
                        f"folders or episode<N>.hdf5 files)")

    def key_of(path: Path) -> str:
        return path.relative_to(src).as_posix() if path != src else path.name

    keep = None
    if args.keep_splits is not None:
        old = splits.load(args.keep_splits)
        if old is None:
            raise DataError(f"--keep-splits {args.keep_splits}: no {splits.FILENAME} there")
        keep = splits.episode_splits(old)
        known = {key_of(p) for _, _, p in found}
        gone = sorted(set(keep) - known)
        if gone:
            log.warning("--keep-splits: %d episode(s) of %s are not in %s (e.g. %s)", len(gone), args.keep_splits,
                        args.src, gone[0])
        keep = {k: v for k, v in keep.items() if k in known}
    episode_split = splits.assign({key_of(p): t for t, _, p in found}, args.val_fraction, args.seed,
                                  args.test_fraction, keep=keep)
    params = {k: getattr(args, k) for k in ("interval", "stride", "pairing", "min_segment_frames", "camera", "tasks",
                                           "seed", "val_fraction", "test_fraction", "size", "instructions")}
    params.update(source=str(src), kind=args.to, keep_splits=str(args.keep_splits) if args.keep_splits else None)
    if args.to == "grid":
        for k in ("interval", "stride", "pairing", "min_segment_frames"):
            params.pop(k)
    skipped: list[tuple[str, str]] = []
    no_trajectory: list[tuple[str, str]] = []
    converted: Counter = Counter()
    by_pairing: Counter = Counter()  # ip2p samples per pairing kind
    no_segments: list[str] = []  # converted episodes that gave no segment pair
    writer = ip2p.FolderDatasetWriter(args.dst, fmt=args.to, ext=".jpg" if args.to == "ip2p" else ".png",
                                      overwrite=args.overwrite, params=params)
    with writer:
        writer.set_episode_splits(episode_split)
        for task, _, path in tqdm(found, desc=f"convert -> {args.to}", unit="ep", disable=None, file=sys.stderr):
            key = key_of(path)
            try:
                ep = robotwin.open_episode(path)
                samples = _episode_samples(ep, args.to, args, key, no_trajectory)
            except DataError as exc:
                if not args.skip_bad:
                    raise DataError(f"{exc}\n(pass --skip-bad to skip bad episodes and list them)") from None
                skipped.append((str(path), str(exc)))
                continue
            for s in samples:
                writer.add(s["input"], s["output"], s["edit"], s["input_caption"], s["output_caption"],
                           meta=s["meta"], split=episode_split[key], episode=key)
                by_pairing[s["meta"].get("pairing", "grid")] += 1
            if args.to == "ip2p" and args.pairing != "interval" and not any(
                    s["meta"]["pairing"] == "segment" for s in samples):
                no_segments.append(str(path))
            converted[canonical_task(task)] += 1
        writer.extra["summary"] = {"episodes_found": len(found), "episodes_converted": sum(converted.values()),
                                   "skipped": [{"path": p, "reason": r} for p, r in skipped]}
        if args.to == "ip2p":
            writer.extra["summary"]["pairs_by_kind"] = dict(sorted(by_pairing.items()))
            if args.pairing != "interval":
                writer.extra["summary"]["no_segment_pairs"] = no_segments
        if args.to == "grid":
            writer.extra["summary"]["no_trajectory"] = [{"path": p, "reason": r} for p, r in no_trajectory]
            if no_trajectory:
                log.warning("%d of %d converted episode(s) have no end-effector track and were stored without a "
                            "trajectory (first: %s: %s)", len(no_trajectory), sum(converted.values()),
                            *no_trajectory[0])
        if not len(writer):
            reasons = "".join(f"\n  {p}: {r}" for p, r in skipped)
            raise DataError(f"no samples written from {len(found)} episode(s); {args.dst} not created{reasons}")
    _print_summary(args, found, converted, writer, skipped, no_trajectory, by_pairing, no_segments)
    return 0


def _print_summary(args, found, converted, writer, skipped, no_trajectory=(), by_pairing=None,
                   no_segments=()) -> None:
    noun = "pairs" if args.to == "ip2p" else "grids"
    print(f"frameplan convert: wrote {len(writer)} {noun} to {args.dst} ({args.to}, camera {args.camera}"
          + (f", interval {args.interval}" if args.to == "ip2p" else "") + ")")
    print(f"  episodes: {len(found)} found, {sum(converted.values())} converted, {len(skipped)} skipped")
    if args.to == "ip2p":
        print(f"  pairing {args.pairing}: " + ", ".join(f"{k} {v}" for k, v in sorted((by_pairing or {}).items()))
              + (f"; {len(no_segments)} converted episode(s) gave no segment pair (no recorded segments, or all "
                 f"shorter than {args.min_segment_frames} frames)" if no_segments else ""))
    per_task: dict[str, dict[str, int]] = defaultdict(dict)
    for task, by_split in writer.counts.items():
        per_task[task] = by_split
    for task in sorted(per_task):
        parts = ", ".join(f"{s} {n}" for s, n in sorted(per_task[task].items()))
        print(f"  {task}: {sum(per_task[task].values())} {noun} ({parts}) from {converted.get(task, 0)} episode(s)")
    sd = writer.splits_data or {}
    eps = sd.get("episodes", {})
    print("  splits (by episode): " + ", ".join(f"{s} {len(eps.get(s, []))}" for s in ("train", "val", "test")))
    if args.to == "grid":
        with_track = sum(converted.values()) - len(no_trajectory)
        print(f"  end-effector trajectories: {with_track} stored, {len(no_trajectory)} episode(s) without one")
    if skipped:
        print(f"  skipped {len(skipped)}:")
        for p, r in skipped:
            print(f"    {p}: {r}")
