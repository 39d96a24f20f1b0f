"""RoboTwin episodes (1.0 pickle folders and 2.0 hdf5 files) -> an InstructPix2Pix pair dataset (frame t -> frame
t+interval with the task instruction, and/or motion segment start -> end with the step instruction: pairs.py) or a
3x3 grid dataset (nine evenly spaced frames, with the end-effector track), with episode-level splits.

What ``frameplan convert`` does, as a library: ``convert(src, dst, ConvertOptions(...))`` writes the dataset
(atomically: a failure leaves no folder) and returns a ``ConvertResult`` whose ``lines()`` are the summary the verb
prints. Errors are DataError naming the episode or option; ``BadEpisode`` (a DataError) when an episode cannot be
read and ``skip_bad`` is off."""
from __future__ import annotations

import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frameplan_core.data.pairs import DEFAULT_MIN_SEGMENT_FRAMES, PAIRINGS
from frameplan_core.errors import DataError

log = logging.getLogger(__name__)

KINDS = ("ip2p", "grid")
INSTRUCTION_SETS = ("seen", "unseen")
MAX_TRAJECTORY_POINTS = 64  # the end-effector track stored with a grid sample is subsampled to at most this
# options a grid conversion ignores
GRID_ONLY_UNUSED = ("interval", "stride", "pairing", "min_segment_frames", "max_start", "paraphrase_key")
PARAPHRASE_KEYS = ("episode", "scene")  # what picks an ip2p pair's paraphrase with its start frame


class BadEpisode(DataError):
    """An episode could not be read (and ``skip_bad`` is off); the message names it and the problem."""


@dataclass
class ConvertOptions:
    """How to convert (the fields of ``frameplan convert``'s options, same names and defaults)."""

    to: str = "ip2p"  # ip2p | grid
    interval: int = 50  # ip2p: frames between input and target
    stride: int | None = None  # ip2p: step between pair starts (None = interval)
    pairing: str = "interval"  # ip2p: interval | segment | both (pairs.py)
    min_segment_frames: int = DEFAULT_MIN_SEGMENT_FRAMES  # ip2p: shorter motion segments give no pair
    # ip2p: only pairs that start at or before this frame: an episode's opening, where nothing but the instruction
    # tells what comes (which arm, which direction); None = every pair
    max_start: int | None = None
    camera: str = "head_camera"
    tasks: list[str] | None = None  # only these tasks (canonical or alias names); None = all
    seed: int = 0  # instruction choice and splits
    val_fraction: float = 0.1  # episodes held out per task
    test_fraction: float = 0.0
    keep_splits: Path | None = None  # an earlier dataset whose episodes keep their split
    size: int | None = None  # centre-crop and resize frames (grid: cells) to size x size; None = camera size
    instructions: str = "seen"  # which instruction list to draw from
    # ip2p: what picks a pair's paraphrase besides the start frame: the episode (default) or the scene's
    # collection seed, so the twins of an ``arm_choice: swapped`` collection get the same sentence with only the
    # side word changed (the only contrast that teaches the word; different templates are memorised instead)
    paraphrase_key: str = "episode"
    skip_bad: bool = False  # skip unreadable/short episodes and list them (else BadEpisode)
    overwrite: bool = False  # replace dst if it exists

    def validate(self) -> ConvertOptions:
        """DataError naming the first option out of range; returns self."""
        def bad(name: str, rule: str) -> DataError:
            return DataError(f"convert {name}={getattr(self, name)!r}: {rule}")

        if self.to not in KINDS:
            raise bad("to", f"expected one of {list(KINDS)}")
        if self.pairing not in PAIRINGS:
            raise bad("pairing", f"expected one of {list(PAIRINGS)}")
        if self.instructions not in INSTRUCTION_SETS:
            raise bad("instructions", f"expected one of {list(INSTRUCTION_SETS)}")
        if self.interval < 1:
            raise bad("interval", "must be >= 1")
        if self.stride is not None and self.stride < 1:
            raise bad("stride", "must be >= 1")
        if self.size is not None and self.size < 8:
            raise bad("size", "must be >= 8 pixels")
        if self.min_segment_frames < 1:
            raise bad("min_segment_frames", "must be >= 1")
        if self.max_start is not None and self.max_start < 0:
            raise bad("max_start", "must be >= 0 (a frame index)")
        if self.paraphrase_key not in PARAPHRASE_KEYS:
            raise bad("paraphrase_key", f"expected one of {list(PARAPHRASE_KEYS)}")
        for name in ("pairing", "max_start", "paraphrase_key"):  # ip2p-only options set away from their defaults
            if self.to == "grid" and getattr(self, name) != getattr(ConvertOptions, name):
                raise bad(name, "applies to ip2p datasets only (a grid sample spans a whole episode)")
        return self

    def params(self, src: Path) -> dict[str, Any]:
        """What the dataset records of its conversion (frameplan_dataset.json ``params``)."""
        keep = ("interval", "stride", "pairing", "min_segment_frames", "max_start", "paraphrase_key", "camera", "tasks", "seed",
                "val_fraction", "test_fraction", "size", "instructions")
        out = {k: getattr(self, k) for k in keep if not (self.to == "grid" and k in GRID_ONLY_UNUSED)}
        out.update(source=str(src), kind=self.to, keep_splits=str(self.keep_splits) if self.keep_splits else None)
        return out


@dataclass
class ConvertResult:
    """What a conversion wrote, for the summary (``lines()``) and for callers."""

    dst: Path
    options: ConvertOptions
    samples: int  # pairs or grids written
    episodes_found: int
    converted: Counter  # episodes converted per task
    counts: dict[str, dict[str, int]]  # samples per task and split
    split_episodes: dict[str, list]  # episode keys per split
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    no_trajectory: list[tuple[str, str]] = field(default_factory=list)  # grid: (path, reason)
    by_pairing: Counter = field(default_factory=Counter)  # ip2p samples per pairing kind
    no_segments: list[str] = field(default_factory=list)  # converted episodes that gave no segment pair

    def lines(self) -> list[str]:
        """The human summary ``frameplan convert`` prints."""
        o = self.options
        noun = "pairs" if o.to == "ip2p" else "grids"
        n_converted = sum(self.converted.values())
        out = [f"frameplan convert: wrote {self.samples} {noun} to {self.dst} ({o.to}, camera {o.camera}"
               + (f", interval {o.interval}" if o.to == "ip2p" else "") + ")",
               f"  episodes: {self.episodes_found} found, {n_converted} converted, {len(self.skipped)} skipped"]
        if o.to == "ip2p":
            out.append(f"  pairing {o.pairing}: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_pairing.items()))
                       + (f"; {len(self.no_segments)} converted episode(s) gave no segment pair (no recorded "
                          f"segments, or all shorter than {o.min_segment_frames} frames)" if self.no_segments else ""))
        for task in sorted(self.counts):
            by_split = self.counts[task]
            parts = ", ".join(f"{s} {n}" for s, n in sorted(by_split.items()))
            out.append(f"  {task}: {sum(by_split.values())} {noun} ({parts}) from {self.converted.get(task, 0)} "
                       "episode(s)")
        out.append("  splits (by episode): " + ", ".join(f"{s} {len(self.split_episodes.get(s, []))}"
                                                         for s in ("train", "val", "test")))
        if o.to == "grid":
            out.append(f"  end-effector trajectories: {n_converted - len(self.no_trajectory)} stored, "
                       f"{len(self.no_trajectory)} episode(s) without one")
        if self.skipped:
            out.append(f"  skipped {len(self.skipped)}:")
            out += [f"    {p}: {r}" for p, r in self.skipped]
        return out


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


def scene_key(ep) -> str:
    """``scene<seed>``: the collection seed of the episode's scene (scene_info.json), shared by its twins."""
    info = ep.scene_info
    seed = info.get("seed") if isinstance(info, dict) else None
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DataError(f"{ep.path}: paraphrase_key=scene needs the scene's collection seed in scene_info.json "
                        "(episodes collected by frameplan collect have it)")
    return f"scene{seed}"


def episode_samples(ep, o: ConvertOptions, key: str, no_trajectory: list | None = None) -> list[dict]:
    """Everything one episode contributes, read before any of it is written (a bad frame discards the episode):
    dicts of input, output, edit, input_caption, output_caption and meta. Grid episodes without end poses / camera
    matrices get no trajectory; (path, reason) goes to ``no_trajectory``."""
    from frameplan_core.data import grid_samples, instructions, pairs
    from frameplan_core.errors import InputError
    from frameplan_core.image import fit

    n = len(ep)
    ep_instr = ep.instructions
    task = instructions.canonical_task(ep.task)
    words = instructions.humanize(task)
    out = []
    if o.to == "ip2p":
        text_key = key if o.paraphrase_key == "episode" else scene_key(ep)
        for spec in pairs.episode_pairs(ep, o.pairing, o.interval, o.stride, o.min_segment_frames):
            if o.max_start is not None and spec.start > o.max_start:
                continue
            a, b = ep.rgb(spec.start, o.camera), ep.rgb(spec.end, o.camera)
            if o.size:
                a, b = fit(a, o.size, "center"), fit(b, o.size, "center")
            text, source = pairs.pair_instruction(spec, task, o.seed, text_key, o.instructions, ep_instr)
            out.append({"input": a, "output": b, "edit": text,
                        "input_caption": f"{words}, {o.camera} frame {spec.start}",
                        "output_caption": f"{words}, {o.camera} frame {spec.end}",
                        "meta": {"frames": [spec.start, spec.end], "instruction_source": source, **spec.meta()}})
    else:
        s = grid_samples.make_grid_sample(ep, o.camera, o.size)
        text, source = instructions.choose(task, o.seed, key, o.instructions, ep_instr)
        meta = {"frames": s["indices"], "instruction_source": source}
        try:
            meta["trajectory"] = grid_trajectory(ep, o.camera, o.size)
        except (DataError, InputError) as exc:
            if no_trajectory is not None:
                no_trajectory.append((str(ep.path), str(exc)))
        out.append({"input": s["source"], "output": s["target"], "edit": text,
                    "input_caption": f"{words}, first frame", "output_caption": f"{words}, nine-frame plan",
                    "meta": meta})
    for item in out:
        item["meta"].update(task=task, camera=o.camera, source=str(ep.path), episode_frames=n,
                            format="robotwin2" if ep.path.suffix in (".hdf5", ".h5") else "robotwin1")
    return out


def episode_splits(found: list[tuple[str, int, Path]], src: Path, o: ConvertOptions) -> dict[str, str]:
    """Split of every found episode (key: its path relative to ``src``): episodes listed in ``keep_splits``'s
    splits.json keep theirs, the others are assigned per task (splits.assign)."""
    from frameplan_core.data import splits

    keys = {episode_key(p, src): t for t, _, p in found}
    keep = None
    if o.keep_splits is not None:
        old = splits.load(o.keep_splits)
        if old is None:
            raise DataError(f"convert keep_splits={str(o.keep_splits)!r}: no {splits.FILENAME} there")
        keep = splits.episode_splits(old)
        gone = sorted(set(keep) - set(keys))
        if gone:
            log.warning("keep_splits: %d episode(s) of %s are not in %s (e.g. %s)", len(gone), o.keep_splits, src,
                        gone[0])
        keep = {k: v for k, v in keep.items() if k in keys}
    return splits.assign(keys, o.val_fraction, o.seed, o.test_fraction, keep=keep)


def episode_key(path: Path, src: Path) -> str:
    """How a dataset names an episode: its path relative to the conversion's source (its name when it is it)."""
    return path.relative_to(src).as_posix() if path != src else path.name


def find_source_episodes(src: Path, tasks: list[str] | None) -> list[tuple[str, int, Path]]:
    """(task, index, path) of the episodes under ``src`` (of ``tasks`` when given); DataError when there are none."""
    from frameplan_core.data.episode import find_episode_paths
    from frameplan_core.data.instructions import canonical_task

    found = find_episode_paths(src)
    if tasks:
        wanted = {canonical_task(t) for t in tasks}
        found = [e for e in found if canonical_task(e[0]) in wanted]
    if not found:
        which = f" for tasks {', '.join(tasks)}" if tasks else ""
        raise DataError(f"{src}: no RoboTwin episodes found{which} (expected <task>_<camera>_pkl/episode<N>/ "
                        f"folders or episode<N>.hdf5 files)")
    return found


def convert(src: str | Path, dst: str | Path, options: ConvertOptions, progress: bool | None = None
            ) -> ConvertResult:
    """Convert the episodes under ``src`` into a new dataset at ``dst`` (see the module docstring). ``progress``:
    a progress bar on stderr (None: only on a terminal)."""
    from tqdm import tqdm

    from frameplan_core.data import ip2p
    from frameplan_core.data.episode import open_episode
    from frameplan_core.data.instructions import canonical_task

    o = options.validate()
    src, dst = Path(src).resolve(), Path(dst)
    found = find_source_episodes(src, o.tasks)
    split_of = episode_splits(found, src, o)
    result = ConvertResult(dst, o, 0, len(found), Counter(), {}, {})
    writer = ip2p.FolderDatasetWriter(dst, fmt=o.to, ext=".jpg" if o.to == "ip2p" else ".png",
                                      overwrite=o.overwrite, params=o.params(src))
    with writer:
        writer.set_episode_splits(split_of)
        for task, _, path in tqdm(found, desc=f"convert -> {o.to}", unit="ep", file=sys.stderr,
                                  disable=None if progress is None else not progress):
            key = episode_key(path, src)
            try:
                samples = episode_samples(open_episode(path), o, key, result.no_trajectory)
            except DataError as exc:
                if not o.skip_bad:
                    raise BadEpisode(str(exc)) from None
                result.skipped.append((str(path), str(exc)))
                continue
            for s in samples:
                writer.add(s["input"], s["output"], s["edit"], s["input_caption"], s["output_caption"],
                           meta=s["meta"], split=split_of[key], episode=key)
                result.by_pairing[s["meta"].get("pairing", "grid")] += 1
            if o.to == "ip2p" and o.pairing != "interval" and not any(
                    s["meta"]["pairing"] == "segment" for s in samples):
                result.no_segments.append(str(path))
            result.converted[canonical_task(task)] += 1
        writer.extra["summary"] = _summary(result)
        if o.to == "grid" and result.no_trajectory:
            log.warning("%d of %d converted episode(s) have no end-effector track and were stored without a "
                        "trajectory (first: %s: %s)", len(result.no_trajectory), sum(result.converted.values()),
                        *result.no_trajectory[0])
        if not len(writer):
            reasons = "".join(f"\n  {p}: {r}" for p, r in result.skipped)
            raise DataError(f"no samples written from {len(found)} episode(s); {dst} not created{reasons}")
    result.samples = len(writer)
    result.counts = {task: dict(by_split) for task, by_split in writer.counts.items()}
    result.split_episodes = dict((writer.splits_data or {}).get("episodes", {}))
    return result


def _summary(r: ConvertResult) -> dict[str, Any]:
    """The dataset's record of its conversion (frameplan_dataset.json ``summary``)."""
    o = r.options
    out: dict[str, Any] = {"episodes_found": r.episodes_found, "episodes_converted": sum(r.converted.values()),
                           "skipped": [{"path": p, "reason": why} for p, why in r.skipped]}
    if o.to == "ip2p":
        out["pairs_by_kind"] = dict(sorted(r.by_pairing.items()))
        if o.pairing != "interval":
            out["no_segment_pairs"] = r.no_segments
    else:
        out["no_trajectory"] = [{"path": p, "reason": why} for p, why in r.no_trajectory]
    return out


__all__ = ["KINDS", "MAX_TRAJECTORY_POINTS", "BadEpisode", "ConvertOptions", "ConvertResult", "convert",
           "episode_samples", "grid_trajectory"]
