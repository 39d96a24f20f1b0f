"""InstructPix2Pix folder datasets (seed 000 §3.1), written and read in the layout IP2P's training code expects:

    seeds.json                 [[dir, [seed, ...]], ...]    (here one seed per dir: dir == seed == sample id)
    <id>/<id>_0.jpg            input frame t
    <id>/<id>_1.jpg            target frame t + interval
    <id>/prompt.json           {"input": ..., "edit": <instruction>, "output": ...}
    <id>/meta.json             where the sample came from (episode, frames, camera, task, split)
    splits.json                episode-level splits (splits.py)
    frameplan_dataset.json     format, parameters and counts

The 3x3 grid dataset (grid_samples.py) uses the same folder conventions with ``format: grid``. Each sample folder
is written atomically, and the whole dataset is built in a hidden folder renamed into place at the end, so an
interrupted conversion leaves nothing a reader would accept. Readers also accept IP2P datasets made elsewhere
(several seeds per folder, no meta.json)."""
from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from frameplan_core import atomic
from frameplan_core.data import splits as splits_mod
from frameplan_core.errors import DataError
from frameplan_core.jsonfile import read_json
from frameplan_core.image import encode_image, ensure_rgb_uint8, read_image

INFO_FILE = "frameplan_dataset.json"
SEEDS_FILE = "seeds.json"


@dataclass
class Sample:
    id: str
    input: np.ndarray
    output: np.ndarray
    edit: str
    input_caption: str = ""
    output_caption: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


class FolderDatasetWriter:
    """Builds a dataset folder; use as a context manager. ``add`` writes one sample (atomically) and returns its
    id; a clean exit writes seeds.json, splits.json and frameplan_dataset.json and moves the folder into place."""

    def __init__(self, root: str | Path, fmt: str = "ip2p", ext: str = ".jpg", overwrite: bool = False,
                 params: dict | None = None, quality: int = 95):
        if ext not in (".jpg", ".png"):
            raise DataError(f"image extension must be .jpg or .png, got {ext!r}")
        self.root = Path(root)
        self.fmt, self.ext, self.quality = fmt, ext, quality
        self.overwrite = overwrite
        self.params = dict(params or {})
        self.splits_data: dict | None = None
        self.extra: dict[str, Any] = {}  # more top-level fields for frameplan_dataset.json (e.g. a summary)
        self._ctx = None
        self._tmp: Path | None = None
        self._ids: list[str] = []
        self._sample_episode: dict[str, str] = {}
        self._sample_split: dict[str, str] = {}
        self._episode_split: dict[str, str] = {}
        self._counts: dict[str, dict[str, int]] = {}

    def __enter__(self) -> FolderDatasetWriter:
        if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())) and not self.overwrite:
            raise DataError(f"{self.root}: already exists and is not empty (pass --overwrite to replace it)")
        # what a killed earlier build of this same dataset left (its process gone): never another writer's
        atomic.sweep_partials(self.root.parent, re.escape(self.root.name))
        self._ctx = atomic.atomic_dir(self.root, overwrite=True)
        self._tmp = self._ctx.__enter__()
        return self

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, input_image: np.ndarray, output_image: np.ndarray, edit: str, input_caption: str = "",
            output_caption: str = "", meta: dict | None = None, split: str = "train", episode: str = "") -> str:
        if self._tmp is None:
            raise DataError(f"{self.root}: add() outside the 'with' block")
        if split not in splits_mod.SPLITS:
            raise DataError(f"split must be one of {splits_mod.SPLITS}, got {split!r}")
        if not isinstance(edit, str) or not edit.strip():
            raise DataError(f"{self.root}: sample {len(self._ids)} has an empty instruction")
        if episode and self._episode_split.setdefault(episode, split) != split:
            raise DataError(f"episode {episode!r} already in split {self._episode_split[episode]!r}, not {split!r}")
        sid = f"{len(self._ids):06d}"
        a = encode_image(ensure_rgb_uint8(input_image, f"sample {sid} input"), self.ext, self.quality)
        b = encode_image(ensure_rgb_uint8(output_image, f"sample {sid} output"), self.ext, self.quality)
        meta = dict(meta or {}, split=split, episode=episode)
        with atomic.atomic_dir(self._tmp / sid) as d:
            (d / f"{sid}_0{self.ext}").write_bytes(a)
            (d / f"{sid}_1{self.ext}").write_bytes(b)
            prompt = {"input": input_caption, "edit": edit, "output": output_caption}
            (d / "prompt.json").write_text(json.dumps(prompt, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
            (d / "meta.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        self._ids.append(sid)
        self._sample_episode[sid] = episode or sid
        self._sample_split[sid] = split
        self._episode_split.setdefault(episode or sid, split)
        task = str(meta.get("task", ""))
        self._counts.setdefault(task, {}).setdefault(split, 0)
        self._counts[task][split] += 1
        return sid

    def set_episode_splits(self, episode_split: dict[str, str]) -> None:
        """Record the split of every source episode, including ones that gave no sample."""
        for ep, split in episode_split.items():
            if self._episode_split.setdefault(ep, split) != split:
                raise DataError(f"episode {ep!r} already in split {self._episode_split[ep]!r}, not {split!r}")

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        return {t: dict(v) for t, v in self._counts.items()}

    def __exit__(self, exc_type, exc, tb) -> bool:
        ctx, self._ctx = self._ctx, None
        if exc_type is None:
            try:
                if not self._ids:
                    raise DataError(f"{self.root}: no samples were written; dataset not created")
                seed = int(self.params.get("seed", 0))
                data = splits_mod.build(self._episode_split, self._sample_episode, seed,
                                        float(self.params.get("val_fraction", 0.0)),
                                        float(self.params.get("test_fraction", 0.0)))
                self.splits_data = data
                splits_mod.write(self._tmp, data)
                atomic.write_json(self._tmp / SEEDS_FILE, [[sid, [sid]] for sid in self._ids], indent=None)
                info = {"format": self.fmt, "version": 1, "image_ext": self.ext, "num_samples": len(self._ids),
                        "counts": self.counts, "params": self.params, **self.extra}
                atomic.write_json(self._tmp / INFO_FILE, info)
            except BaseException as err:
                ctx.__exit__(type(err), err, err.__traceback__)
                raise
        ctx.__exit__(exc_type, exc, tb)
        self._tmp = None
        return False


class FolderDataset:
    """Reader of an IP2P-layout folder (ours or IP2P's own): sample list from seeds.json, images loaded on access.
    ``split`` restricts to the sample ids of that split in splits.json."""

    expected_format: str | None = "ip2p"

    def __init__(self, root: str | Path, split: str | None = None):
        self.root = Path(root)
        seeds_path = self.root / SEEDS_FILE
        if not seeds_path.is_file():
            raise DataError(f"{self.root}: not an InstructPix2Pix-style dataset (no {SEEDS_FILE})")
        self.info = read_json(self.root / INFO_FILE) if (self.root / INFO_FILE).is_file() else {}
        self.format = self.info.get("format", "ip2p")
        if self.expected_format and self.format != self.expected_format:
            raise DataError(f"{self.root}: dataset format is {self.format!r}, expected {self.expected_format!r}")
        self.ext = self.info.get("image_ext")
        seeds = read_json(seeds_path, kind=None)
        if not isinstance(seeds, list):
            raise DataError(f"{seeds_path}: expected a list of [dir, [seeds...]]")
        entries: list[tuple[str, str]] = []
        for n, item in enumerate(seeds):
            if (not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[0], str)
                    or not isinstance(item[1], list) or not item[1]):
                raise DataError(f"{seeds_path}: entry {n} is not [dir, [seeds...]]: {item!r:.80}")
            entries.extend((item[0], str(s)) for s in item[1])
        self.splits = splits_mod.load(self.root)
        if split is not None:
            if self.splits is None:
                raise DataError(f"{self.root}: no splits.json, cannot select split {split!r}")
            if split not in self.splits["samples"]:
                raise DataError(f"{self.root}: unknown split {split!r} (have {sorted(self.splits['samples'])})")
            wanted = set(self.splits["samples"][split])
            entries = [e for e in entries if self._sid(e) in wanted]
        self.split = split
        self._entries = entries

    @staticmethod
    def _sid(entry: tuple[str, str]) -> str:
        d, s = entry
        return d if d == s else f"{d}/{s}"

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def ids(self) -> list[str]:
        return [self._sid(e) for e in self._entries]

    def _image_path(self, d: str, s: str, k: int) -> Path:
        if self.ext:
            return self.root / d / f"{s}_{k}{self.ext}"
        for ext in (".jpg", ".png", ".jpeg"):
            p = self.root / d / f"{s}_{k}{ext}"
            if p.is_file():
                return p
        return self.root / d / f"{s}_{k}.jpg"

    def image_paths(self, i: int) -> tuple[Path, Path]:
        d, s = self._entries[i]
        return self._image_path(d, s, 0), self._image_path(d, s, 1)

    def prompt(self, i: int) -> dict:
        d, _ = self._entries[i]
        p = self.root / d / "prompt.json"
        if not p.is_file():
            raise DataError(f"{p}: missing prompt.json")
        prompt = read_json(p, kind=None)
        if not isinstance(prompt, dict) or not isinstance(prompt.get("edit"), str):
            raise DataError(f"{p}: expected an object with a string 'edit'")
        return prompt

    def meta(self, i: int) -> dict:
        p = self.root / self._entries[i][0] / "meta.json"
        return read_json(p) if p.is_file() else {}

    def __getitem__(self, i: int) -> Sample:
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.root}: sample {i} out of range ({len(self)} samples)")
        i %= len(self)
        a, b = self.image_paths(i)
        prompt = self.prompt(i)
        return Sample(id=self._sid(self._entries[i]), input=read_image(a), output=read_image(b), edit=prompt["edit"],
                      input_caption=str(prompt.get("input", "")), output_caption=str(prompt.get("output", "")),
                      meta=self.meta(i))

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]


class IP2PDataset(FolderDataset):
    """An InstructPix2Pix pair dataset: ``input`` = frame t, ``output`` = frame t + interval, ``edit`` = instruction."""

    expected_format = "ip2p"


def detect_format(root: str | Path) -> str | None:
    """'ip2p' or 'grid' for a dataset folder, None for anything else."""
    root = Path(root)
    if not (root / SEEDS_FILE).is_file():
        return None
    info = root / INFO_FILE
    if info.is_file():
        return str(read_json(info).get("format", "ip2p"))
    return "ip2p"
