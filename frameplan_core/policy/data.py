"""Training samples for the goal-conditioned policy, from collected RoboTwin 1.0 episodes.

Reading a frame pickle costs milliseconds (each holds full-size images and depth), so the episodes are read once
into a **frame cache**: a folder of flat arrays that training memory-maps and never parses again::

    <cache>/policy_cache.json   format, image size/crop/camera, and per episode: key, task, seed, first row,
                                length, instruction, step segments
    <cache>/frames.npy          (N, S, S, 3) uint8: every saved head-camera frame, mapped to S x S (``fit``)
    <cache>/state.npy           (N, 16) float32: measured joints + gripper openings (``joint_state_full``)
    <cache>/command.npy         (N, 16) float32: commanded joint targets + gripper commands (``joint_command_full``)
    <cache>/splits.json         train/val/test by *episode*; its ``samples`` are the episode keys too (every saved
                                frame of an episode is a training sample)

A sample at frame t of an episode: the frame and state at t, a hindsight goal (the real frame ``1..interval``
saved frames ahead, or the end of the current step's segment, capped at the episode's last frame) and the target
chunk: the commands of frames t+1 .. t+chunk (the last one repeated past the end), as ``PolicyConfig.action``
says. Rebuilding a cache over a grown collection reuses the episodes it already holds and keeps their splits."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from frameplan_core import atomic
from frameplan_core.data import splits as splits_mod
from frameplan_core.errors import DataError
from frameplan_core.image import fit
from frameplan_core.policy.config import GRIPPERS, JOINT_DIM, JOINTS

log = logging.getLogger(__name__)

CACHE_FILE = "policy_cache.json"
CACHE_FORMAT = "frameplan-policy-cache"
CACHE_VERSION = 1
ARRAYS = ("frames", "state", "command")


def is_cache(path: str | Path) -> bool:
    return (Path(path) / CACHE_FILE).is_file()


# ----------------------------------------------------------------------------------------------- building

def _listed(ep) -> bool:
    """An episode counts only once its scene_info.json entry exists (a collection writes it before the episode
    folder appears, and it carries the seed and step segments the samples need)."""
    info = getattr(ep, "scene_info", None)
    return bool(info)


def read_episode(ep, image_size: int, crop: str, camera: str) -> dict:
    """One episode as arrays: frames (T, S, S, 3) uint8, state and command (T, 16) float32, plus its metadata.
    DataError naming the episode when it lacks the camera or the 16-d vectors (older collections)."""
    from frameplan_core.data.episode import FULL_KEY_GAP

    n = len(ep)
    frames = np.empty((n, image_size, image_size, 3), np.uint8)
    state = np.empty((n, JOINT_DIM), np.float32)
    command = np.empty((n, JOINT_DIM), np.float32)
    for i in range(n):
        frame = ep.frame(i)
        obs = frame["observation"]
        if camera not in obs:
            raise DataError(f"{ep.path}: frame {i} has no camera {camera!r} (have {sorted(obs)})")
        frames[i] = fit(obs[camera]["rgb"], image_size, crop)
        for key, arr in (("joint_state_full", state), ("joint_command_full", command)):
            if key not in frame:
                raise DataError(f"{ep.path}: frame {i} has no {key!r}: {FULL_KEY_GAP[key]}")
            arr[i] = np.asarray(frame[key], dtype=np.float32)
    if not (np.isfinite(state).all() and np.isfinite(command).all()):
        raise DataError(f"{ep.path}: non-finite joint_state_full/joint_command_full values")
    info = ep.scene_info or {}
    instructions = ep.instructions or {}
    segments = [[int(s["start_frame"]), int(s["end_frame"]), str(s.get("instruction", ""))]
                for s in info.get("segments", []) if "start_frame" in s and "end_frame" in s]
    return {"frames": frames, "state": state, "command": command,
            "meta": {"key": ep.key, "task": ep.task, "seed": info.get("seed"), "length": n,
                     "instruction": (instructions.get("seen") or [""])[0], "segments": segments,
                     "path": str(ep.path)}}


def build_cache(sources: str | Path | Sequence[str | Path], out: str | Path, image_size: int = 96,
                crop: str = "resize", camera: str = "head_camera", tasks: Sequence[str] | None = None,
                val_fraction: float = 0.1, test_fraction: float = 0.0, seed: int = 0, skip_bad: bool = True,
                progress: Callable[[int, int, str], None] | None = None) -> dict:
    """Build (or refresh) the frame cache at ``out`` from every finished episode under ``sources``.

    Episodes already in an existing cache of the same geometry are copied from it, not re-read, and keep their
    split; new ones are split by ``splits.assign`` (per task, by episode). Episodes without the 16-d vectors are
    skipped with a warning (``skip_bad``) or refused. The folder is replaced atomically. Returns the index."""
    from frameplan_core.data.episode import find_episode_paths, open_episode

    out = Path(out)
    srcs = [Path(s) for s in ([sources] if isinstance(sources, (str, Path)) else sources)]
    if not srcs:
        raise DataError("policy data: no source folders given")
    found = []
    for src in srcs:
        if not src.exists():
            raise DataError(f"{src}: no such folder of RoboTwin episodes")
        found += find_episode_paths(src, tasks)
    old = load_index(out) if is_cache(out) else None
    if old is not None and (old["image_size"], old["crop"], old["camera"]) != (image_size, crop, camera):
        log.info("%s: rebuilding (cache is %s px %s %s, asked %s px %s %s)", out, old["image_size"], old["crop"],
                 old["camera"], image_size, crop, camera)
        old = None
    reuse = {e["key"]: e for e in old["episodes"]} if old else {}
    old_arrays = open_arrays(out) if old else {}
    old_splits = splits_mod.episode_splits(splits_mod.load(out) or {}) if old else {}
    episodes: list[dict] = []
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in ARRAYS}
    skipped: list[str] = []
    seen: set[str] = set()
    for n_done, (_task, _index, path) in enumerate(found):
        try:
            ep = open_episode(path)
            if ep.key in seen:
                raise DataError(f"{path}: episode {ep.key} appears twice in the sources")
            seen.add(ep.key)
            if not _listed(ep):
                log.info("%s: not listed in scene_info.json (still being written?), skipped", path)
                continue
            prev = reuse.get(ep.key)
            if prev is not None and prev["length"] == len(ep):
                rows = slice(prev["start"], prev["start"] + prev["length"])
                data = {k: np.asarray(old_arrays[k][rows]) for k in ARRAYS}
                meta = {k: v for k, v in prev.items() if k != "start"}
            else:
                data = read_episode(ep, image_size, crop, camera)
                meta = data.pop("meta")
        except DataError as exc:
            if not skip_bad:
                raise
            skipped.append(str(exc))
            log.warning("skipping episode: %s", exc)
            continue
        for k in ARRAYS:
            chunks[k].append(data[k])
        episodes.append(meta)
        if progress is not None:
            progress(n_done + 1, len(found), meta["key"])
    if not episodes:
        why = f"; skipped: {skipped[0]}" if skipped else ""
        raise DataError(f"{', '.join(map(str, srcs))}: no usable episodes for the policy (need finished episodes with "
                        f"joint_state_full and joint_command_full, listed in scene_info.json){why}")
    start = 0
    for meta in episodes:
        meta["start"] = start
        start += meta["length"]
    keep = {k: s for k, s in old_splits.items() if k in seen}
    assignment = splits_mod.assign({e["key"]: e["task"] for e in episodes}, val_fraction, seed, test_fraction,
                                   keep=keep or None)
    split_data = splits_mod.build(assignment, {e["key"]: e["key"] for e in episodes}, seed, val_fraction,
                                  test_fraction)
    index = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "image_size": image_size, "crop": crop,
             "camera": camera, "sources": [str(s) for s in srcs], "frames": start, "episodes": episodes,
             "skipped": skipped}
    del old_arrays  # the memory maps of the cache being replaced
    with atomic.atomic_dir(out, overwrite=True) as tmp:
        for k in ARRAYS:
            np.save(tmp / f"{k}.npy", np.concatenate(chunks[k]))
        splits_mod.write(tmp, split_data)
        atomic.write_json(tmp / CACHE_FILE, index)
    counts = {s: len(v) for s, v in split_data["episodes"].items()}
    log.info("policy cache %s: %d episodes (%s), %d frames, %d reused, %d skipped", out, len(episodes), counts, start,
             sum(1 for e in episodes if e["key"] in reuse), len(skipped))
    return index


# ----------------------------------------------------------------------------------------------- reading

def load_index(root: str | Path) -> dict:
    from frameplan_core.jsonfile import read_json

    path = Path(root) / CACHE_FILE
    if not path.exists():
        raise DataError(f"{root}: not a policy frame cache (no {CACHE_FILE}); build one with "
                        "`frameplan train policy --data <episodes>`")
    index = read_json(path, DataError, kind=None, what="the policy cache index")
    if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT:
        raise DataError(f"{path}: not a {CACHE_FORMAT} index")
    if index.get("version") != CACHE_VERSION:
        raise DataError(f"{path}: cache version {index.get('version')} (this frameplan reads {CACHE_VERSION}); "
                        "rebuild it")
    return index


def check_geometry(root: str | Path, image_size: int, crop: str, camera: str, reader: str, remedy: str,
                   error: type[Exception] = DataError) -> dict:
    """The cache's index when its frames are what ``reader`` needs; else one ``error`` naming both geometries and the
    ``remedy`` (a cache is never resized silently: its frames were fitted once, at build time)."""
    index = load_index(root)
    have = (index["image_size"], index["crop"], index["camera"])
    if have != (image_size, crop, camera):
        raise error(f"--data {root}: the cache holds {have[0]} px {have[1]} {have[2]} frames but {reader} "
                    f"{image_size} px {crop} {camera}; {remedy}")
    return index


def open_arrays(root: str | Path) -> dict[str, np.ndarray]:
    """The cache's arrays, memory-mapped read-only; DataError when one is missing or does not fit the index."""
    root = Path(root)
    index = load_index(root)
    out = {}
    for k in ARRAYS:
        path = root / f"{k}.npy"
        try:
            out[k] = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read the cache array ({exc})") from None
        if len(out[k]) != index["frames"]:
            raise DataError(f"{path}: {len(out[k])} rows but the index says {index['frames']} frames; rebuild the cache")
    s = index["image_size"]
    if out["frames"].shape[1:] != (s, s, 3) or out["frames"].dtype != np.uint8:
        raise DataError(f"{root / 'frames.npy'}: expected (N, {s}, {s}, 3) uint8, got {out['frames'].shape} "
                        f"{out['frames'].dtype}")
    return out


@dataclass
class Sample:
    """One training sample in numbers: uint8 frames (S, S, 3), state (16,), target commands (chunk, 16) in the
    policy's action space (joint offsets or targets in rad, gripper commands in [0, 1])."""

    frame: np.ndarray
    goal: np.ndarray
    state: np.ndarray
    action: np.ndarray
    task: str
    t: int
    goal_t: int


def action_targets(command: np.ndarray, state: np.ndarray, mode: str) -> np.ndarray:
    """Commands (..., chunk, 16) -> the policy's action space given the state (..., 16) they start from."""
    out = np.array(command, dtype=np.float32, copy=True)
    if mode == "delta":
        out[..., list(JOINTS)] -= state[..., None, list(JOINTS)]
    return out


def commands_from_actions(action: np.ndarray, state: np.ndarray, mode: str) -> np.ndarray:
    """Inverse of ``action_targets``: (chunk, 16) actions + the (16,) state -> absolute commands."""
    out = np.array(action, dtype=np.float64, copy=True)
    if mode == "delta":
        out[:, list(JOINTS)] += np.asarray(state, dtype=np.float64)[list(JOINTS)]
    out[:, list(GRIPPERS)] = np.clip(out[:, list(GRIPPERS)], 0.0, 1.0)
    return out


class PolicySamples:
    """Samples of one split of a frame cache (every saved frame of its episodes), with hindsight goals.

    ``goal_at(i, rng)``: with ``rng`` (training) the goal is the segment end with probability ``segment_prob``,
    else ``1..interval`` frames ahead (uniform); without (validation) it is exactly ``interval`` ahead. Both are
    capped at the episode's last frame."""

    def __init__(self, root: str | Path, split: str | None, chunk: int, interval: int, action: str = "delta",
                 segment_prob: float = 0.0, tasks: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        self.index = load_index(root)
        self.arrays = open_arrays(root)
        self.chunk, self.interval, self.action, self.segment_prob = chunk, interval, action, segment_prob
        if split is not None:
            data = splits_mod.load(root)
            if data is None:
                raise DataError(f"{root}: no splits.json")
            wanted = set(data["episodes"].get(split, []))
        else:
            wanted = {e["key"] for e in self.index["episodes"]}
        self.episodes = [e for e in self.index["episodes"] if e["key"] in wanted and (not tasks or e["task"] in tasks)]
        self.where = f"{root} ({split or 'all'} split)"
        if not self.episodes:
            raise DataError(f"{self.where}: no episodes")
        lengths = np.array([e["length"] for e in self.episodes])
        self._ep = np.repeat(np.arange(len(self.episodes)), lengths)
        self._t = np.concatenate([np.arange(n) for n in lengths])
        # the segment end each frame belongs to (the next segment's end once a segment is finished)
        self._seg_end = np.concatenate([self._segment_ends(e) for e in self.episodes])

    @staticmethod
    def _segment_ends(ep: dict) -> np.ndarray:
        n = ep["length"]
        ends = np.full(n, n - 1)
        bounds = sorted({min(n - 1, int(end)) for _, end, _ in ep.get("segments", [])})
        for t in range(n):
            later = [b for b in bounds if b > t]
            ends[t] = later[0] if later else n - 1
        return ends

    def __len__(self) -> int:
        return len(self._t)

    def onsets(self, frames: int) -> np.ndarray:
        """Boolean per sample: within the first ``frames`` saved frames of a step segment (the episode's start counts
        as one). There the state is nearly still and does not say which way the next motion goes -- which arm, which
        hand-over point -- so only the goal can; these are the samples that teach the policy to read it."""
        out = np.zeros(len(self._t), bool)
        if frames <= 0:
            return out
        offset = 0
        for e in self.episodes:
            n = e["length"]
            starts = sorted({0} | {int(s) for s, _, _ in e.get("segments", []) if 0 <= int(s) < n})
            for s in starts:
                out[offset + s : offset + min(n, s + frames)] = True
            offset += n
        return out

    def first_sample(self, k: int) -> int:
        """The sample index of episode ``k``'s first saved frame."""
        return int(np.searchsorted(self._ep, k))

    def episode(self, i: int) -> dict:
        """The cache index entry of the episode sample ``i`` comes from (key, task, start, length, ...)."""
        return self.episodes[self._ep[i]]

    def task(self, i: int) -> str:
        return self.episode(i)["task"]

    def goal_at(self, i: int, rng: np.random.Generator | None) -> int:
        ep = self.episodes[self._ep[i]]
        t, last = int(self._t[i]), ep["length"] - 1
        if rng is None:
            return min(t + self.interval, last)
        if self.segment_prob > 0 and rng.random() < self.segment_prob:
            return int(self._seg_end[i])
        return min(t + int(rng.integers(1, self.interval + 1)), last)

    def get(self, i: int, rng: np.random.Generator | None = None) -> Sample:
        ep = self.episodes[self._ep[i]]
        s, n, t = ep["start"], ep["length"], int(self._t[i])
        g = self.goal_at(i, rng)
        future = s + np.minimum(t + np.arange(1, self.chunk + 1), n - 1)
        state = np.asarray(self.arrays["state"][s + t], dtype=np.float32)
        command = np.asarray(self.arrays["command"][future], dtype=np.float32)
        return Sample(frame=np.array(self.arrays["frames"][s + t]), goal=np.array(self.arrays["frames"][s + g]),
                      state=state, action=action_targets(command, state, self.action), task=ep["task"], t=t, goal_t=g)

    def task_frames(self) -> dict[str, float]:
        """Mean episode length (saved frames) per task."""
        lengths: dict[str, list[int]] = {}
        for e in self.episodes:
            lengths.setdefault(e["task"], []).append(e["length"])
        return {t: round(float(np.mean(v)), 1) for t, v in sorted(lengths.items())}

    def stats(self) -> dict[str, list]:
        """Normalisation over these samples: state mean/std (16,), action mean/std (chunk, 16), computed
        vectorised over every frame (std floored so constant entries stay finite)."""
        rows = np.array([e["start"] + t for e, t in ((self.episodes[k], int(tt)) for k, tt in zip(self._ep, self._t))])
        starts = np.array([self.episodes[k]["start"] for k in self._ep])
        lengths = np.array([self.episodes[k]["length"] for k in self._ep])
        state = np.asarray(self.arrays["state"], dtype=np.float64)[rows]
        ks = np.arange(1, self.chunk + 1)
        future = starts[:, None] + np.minimum(self._t[:, None] + ks[None, :], lengths[:, None] - 1)
        command = np.asarray(self.arrays["command"], dtype=np.float64)[future]
        act = action_targets(command, state, self.action).astype(np.float64)
        floor = 1e-3
        return {"state_mean": state.mean(0).tolist(), "state_std": np.maximum(state.std(0), floor).tolist(),
                "action_mean": act.mean(0).tolist(), "action_std": np.maximum(act.std(0), floor).tolist()}


__all__ = ["CACHE_FILE", "PolicySamples", "Sample", "action_targets", "build_cache", "commands_from_actions",
           "check_geometry", "is_cache", "load_index", "open_arrays", "read_episode"]
