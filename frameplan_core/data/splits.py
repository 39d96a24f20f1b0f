"""Train/val/test splits by *episode*: two pairs cut from one episode are near duplicates, so an episode never
appears in two splits. Assignment ranks each task's episodes by a hash of (seed, episode key) and takes the first
ones as held out: deterministic and independent of listing order (an episode's rank never depends on the others).
The result is recorded in the dataset's ``splits.json`` so held-out evaluation reads exactly what training did not
see."""
from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from frameplan_core import atomic
from frameplan_core.errors import DataError
from frameplan_core.jsonfile import read_json

SPLITS = ("train", "val", "test")
FILENAME = "splits.json"


def _rank(seed: int, key: str) -> bytes:
    return hashlib.sha256(f"{int(seed)}:{key}".encode()).digest()


def _held_out_count(n: int, fraction: float) -> int:
    if fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * fraction)))


def assign(episodes: Mapping[str, str], val_fraction: float = 0.1, seed: int = 0,
           test_fraction: float = 0.0, keep: Mapping[str, str] | None = None) -> dict[str, str]:
    """``episodes`` maps episode key -> task; returns episode key -> split. Each task with at least two episodes
    gives ``round(n * fraction)`` (at least one) to val (and test), always keeping one for training.

    ``keep`` (episode key -> split, e.g. from an earlier version of the dataset) pins those episodes to their
    split; only the other episodes are assigned, with the fractions applied to them alone. Growing a dataset this
    way never moves an episode that a model was trained on into a held-out split (or the reverse)."""
    keep = dict(keep or {})
    bad = {k: v for k, v in keep.items() if v not in SPLITS}
    if bad:
        raise DataError(f"kept splits must be one of {SPLITS}: {dict(list(bad.items())[:3])}")
    if keep:
        fresh = assign({k: t for k, t in episodes.items() if k not in keep}, val_fraction, seed, test_fraction)
        return {k: keep.get(k) or fresh[k] for k in episodes}
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise DataError(f"{name} must be in [0, 1), got {frac}")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction}")
    by_task: dict[str, list[str]] = defaultdict(list)
    for key, task in episodes.items():
        by_task[task].append(key)
    out: dict[str, str] = {}
    for task, keys in by_task.items():
        ranked = sorted(keys, key=lambda k: _rank(seed, k))
        n_val = _held_out_count(len(ranked), val_fraction)
        n_test = min(_held_out_count(len(ranked), test_fraction), len(ranked) - n_val - 1) if test_fraction else 0
        for i, key in enumerate(ranked):
            out[key] = "val" if i < n_val else "test" if i < n_val + n_test else "train"
    return out


def build(episode_split: Mapping[str, str], sample_episode: Mapping[str, str], seed: int,
          val_fraction: float, test_fraction: float = 0.0) -> dict:
    """The splits.json content: episodes and sample ids per split (samples follow their episode)."""
    episodes = {s: sorted(k for k, v in episode_split.items() if v == s) for s in SPLITS}
    samples: dict[str, list[str]] = {s: [] for s in SPLITS}
    for sid, ep in sample_episode.items():
        if ep not in episode_split:
            raise DataError(f"sample {sid}: episode {ep!r} has no split")
        samples[episode_split[ep]].append(sid)
    data = {"by": "episode", "seed": int(seed), "val_fraction": val_fraction, "test_fraction": test_fraction,
            "episodes": episodes, "samples": {s: sorted(v) for s, v in samples.items()}}
    check_disjoint(data, "splits")
    return data


def check_disjoint(data: dict, where: str) -> None:
    for field in ("episodes", "samples"):
        seen: dict[str, str] = {}
        for split, items in data.get(field, {}).items():
            for item in items:
                if item in seen and seen[item] != split:
                    raise DataError(f"{where}: {field[:-1]} {item!r} is in both {seen[item]!r} and {split!r}")
                seen[item] = split


def write(root: str | Path, data: dict) -> Path:
    path = Path(root) / FILENAME
    atomic.write_json(path, data)
    return path


def episode_splits(data: Mapping) -> dict[str, str]:
    """episode key -> split of a loaded splits.json."""
    return {ep: split for split, eps in data.get("episodes", {}).items() for ep in eps}


def load(root: str | Path) -> dict | None:
    """splits.json of a dataset folder (None when absent); checked for disjointness."""
    path = Path(root) / FILENAME
    if not path.is_file():
        return None
    data = read_json(path)
    if not isinstance(data.get("samples"), dict):
        raise DataError(f"{path}: expected an object with 'episodes' and 'samples' per split")
    for fld in ("episodes", "samples"):
        value = data.get(fld, {})
        if not isinstance(value, dict):
            raise DataError(f"{path}: {fld!r} must be an object mapping each split to a list, got {type(value).__name__}")
        for split, items in value.items():
            if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
                raise DataError(f"{path}: {fld}/{split} must be a list of strings, got {str(items)[:60]}")
    check_disjoint(data, str(path))
    return data
