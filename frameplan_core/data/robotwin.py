"""RoboTwin 1.0 episodes: one pickle per frame, ``<root>/<task>_<camera_type>_pkl/episode<N>/<i>.pkl``.

Each pickle is the dict RoboTwin writes: ``observation`` -> camera -> {rgb (H,W,3) uint8, depth (H,W) float64 mm,
intrinsic_cv 3x3, extrinsic_cv 3x4, cam2world_gl 4x4}; ``pointcloud`` (N,6) or []; ``joint_action`` (14,)
[6 left joints, left gripper, 6 right joints, right gripper]; ``endpose`` (14,). Our simulator adds two (16,)
vectors per frame, both arms' 7 joints + gripper: ``joint_state_full`` (measured) and ``joint_command_full`` (the
commanded targets, gripper command in [0, 1]: what a replay sends); episodes from other sources lack them.

Episodes can hold thousands of frames, so the reader opens one pickle at a time. The writer builds the episode in
a hidden ``.partial`` directory and renames it into place, so a crashed collection never leaves an episode that a
reader would accept. Instructions (``{"seen": [...], "unseen": [...]}``, as RoboTwin 2.0 stores them) live in
``<task dir>/instructions/episode<N>.json``; per-episode scene facts in ``<task dir>/scene_info.json``.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any


from frameplan_core import atomic
# the shared base (episode.py); which reader reads a path (open_episode, find_episodes) is decided there too
from frameplan_core.data.episode import (
    EpisodeReader,
    parse_episode_name,
    read_instructions,
    read_scene_info,
    validate_frame,
)
from frameplan_core.errors import DataError

CAMERAS = ("head_camera", "front_camera", "left_camera", "right_camera")
# RoboTwin camera types (task_config/_camera_config.yml); longest first so "Large_D435" wins over "D435".
CAMERA_TYPES = ("Large_D435", "Large_L515", "D435", "L515")
_FRAME_RE = re.compile(r"^(\d+)\.pkl$")


# ----------------------------------------------------------------------------------------------- layout

def task_dir(root: str | Path, task: str, camera_type: str) -> Path:
    """``<root>/<task>_<camera_type>_pkl`` (RoboTwin names the folder after the head camera type)."""
    if not task or "/" in task or not camera_type or "/" in camera_type:
        raise DataError(f"invalid task {task!r} or camera type {camera_type!r} for a RoboTwin folder name")
    return Path(root) / f"{task}_{camera_type}_pkl"


def episode_dir(root: str | Path, task: str, camera_type: str, index: int) -> Path:
    if int(index) < 0:
        raise DataError(f"episode index must be >= 0, got {index}")
    return task_dir(root, task, camera_type) / f"episode{int(index)}"


def parse_task_dir(name: str) -> tuple[str, str] | None:
    """``block_hammer_beat_D435_pkl`` -> (``block_hammer_beat``, ``D435``); None if not a RoboTwin 1.0 folder."""
    if not name.endswith("_pkl") or name.startswith("."):
        return None
    stem = name[: -len("_pkl")]
    for ct in CAMERA_TYPES:
        if stem.endswith("_" + ct) and len(stem) > len(ct) + 1:
            return stem[: -len(ct) - 1], ct
    if "_" in stem:
        task, ct = stem.rsplit("_", 1)
        if task and ct:
            return task, ct
    return None


def is_frame_file(name: str) -> bool:
    """Whether ``name`` is a frame pickle of a 1.0 episode folder (``<i>.pkl``)."""
    return _FRAME_RE.match(name) is not None


def _signature(frame: dict) -> dict:
    return {cam: {k: getattr(v, "shape", None) for k, v in data.items()} for cam, data in frame["observation"].items()}


# ----------------------------------------------------------------------------------------------- pickles

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Frames contain only dicts, lists, numbers and numpy arrays; refuse anything else so that a pickle from an
    untrusted download cannot run code."""

    _ALLOWED = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"), ("collections", "OrderedDict"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            if module.startswith("numpy._core"):  # pickles written by numpy 2 load under numpy 1.x
                module = module.replace("numpy._core", "numpy.core", 1)
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only numpy arrays are allowed)")


def load_frame_pickle(path: str | Path) -> Any:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read frame ({exc.strerror or exc})") from None
    if not data:
        raise DataError(f"{path}: empty file (truncated frame)")
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError,
            IndexError, KeyError, MemoryError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: corrupt or truncated pickle ({type(exc).__name__}: {exc})") from None


# ----------------------------------------------------------------------------------------------- side files

@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def merge_scene_info(task_path: str | Path, index: int, info: dict) -> None:
    """Add ``info`` under ``episode_<index>`` in scene_info.json; safe with parallel writer processes."""
    task_path = Path(task_path)
    with _locked(task_path / ".scene_info.json.lock"):
        data = read_scene_info(task_path)
        data[f"episode_{int(index)}"] = info
        atomic.write_json(task_path / "scene_info.json", data)


# ----------------------------------------------------------------------------------------------- writer

class EpisodeWriter:
    """Write one RoboTwin 1.0 episode atomically::

        with EpisodeWriter(root, "block_hammer_beat", "D435", 0) as ep:
            for frame in frames:
                ep.add_frame(frame)
            ep.instructions = {"seen": [...], "unseen": [...]}
            ep.scene_info = {"seed": 3}

    Frames go to a hidden temporary folder that is renamed to ``episode<index>`` on a clean exit and removed on
    an exception. Every frame must have the same cameras and array shapes as the first one."""

    def __init__(self, root: str | Path, task: str, camera_type: str, index: int, overwrite: bool = False):
        self.root = Path(root)
        self.task, self.camera_type, self.index = task, camera_type, int(index)
        self.task_path = task_dir(root, task, camera_type)
        self.path = episode_dir(root, task, camera_type, index)
        self.overwrite = overwrite
        self.instructions: dict | None = None
        self.scene_info: dict | None = None
        self._ctx = None
        self._tmp: Path | None = None
        self._count = 0
        self._sig: dict | None = None

    def __len__(self) -> int:
        return self._count

    def __enter__(self) -> EpisodeWriter:
        if self.path.exists() and not self.overwrite:
            raise DataError(f"{self.path}: episode already exists (pass overwrite=True to replace it)")
        self._ctx = atomic.atomic_dir(self.path, overwrite=self.overwrite)
        self._tmp = self._ctx.__enter__()
        return self

    def add_frame(self, frame: dict) -> None:
        if self._tmp is None:
            raise DataError(f"{self.path}: add_frame() outside the 'with EpisodeWriter(...)' block")
        where = f"{self.path}/{self._count}.pkl"
        frame = validate_frame(frame, where)
        sig = _signature(frame)
        if self._sig is None:
            self._sig = sig
        elif sig != self._sig:
            raise DataError(f"{where}: cameras/array shapes {sig} differ from frame 0 {self._sig}")
        with open(self._tmp / f"{self._count}.pkl", "wb") as fh:
            pickle.dump(frame, fh)
        self._count += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        ctx, self._ctx = self._ctx, None
        self._tmp = None
        if exc_type is None:
            try:
                if self._count == 0:
                    raise DataError(f"{self.path}: refusing to write an empty episode (no frames added)")
                if self.instructions is not None:
                    from frameplan_core.data.instructions import check_instructions

                    check_instructions(self.instructions, f"{self.path} instructions")
                if self.path.exists() and not self.overwrite:
                    raise DataError(f"{self.path}: episode appeared while writing (another writer?)")
                # The side files go first and the episode folder is renamed into place last, so an episode that a
                # reader (or a resumed collection, which skips existing episodes) sees always has them.
                if self.instructions is not None:
                    atomic.write_json(self.task_path / "instructions" / f"episode{self.index}.json", self.instructions)
                if self.scene_info is not None:
                    merge_scene_info(self.task_path, self.index, self.scene_info)
            except BaseException as err:
                ctx.__exit__(type(err), err, err.__traceback__)
                raise
        try:
            ctx.__exit__(exc_type, exc, tb)
        except FileExistsError:
            raise DataError(f"{self.path}: episode appeared while writing (another writer?)") from None
        return False


# ----------------------------------------------------------------------------------------------- reader

class RoboTwinEpisode(EpisodeReader):
    """Lazy reader of ``.../<task>_<camera_type>_pkl/episode<N>/``: lists the frame files once (and refuses gaps
    in the numbering), then loads a pickle only when a frame is asked for."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise DataError(f"{self.path}: RoboTwin 1.0 episode folder not found")
        index = parse_episode_name(self.path.name)
        if index is None:
            raise DataError(f"{self.path}: episode folders are named episode<N>")
        self.index = index
        parsed = parse_task_dir(self.path.parent.name)
        self.task, self.camera_type = parsed if parsed else (self.path.parent.name, "")
        numbers = sorted(int(m.group(1)) for p in os.scandir(self.path) if (m := _FRAME_RE.match(p.name)))
        if not numbers:
            raise DataError(f"{self.path}: empty episode (no <i>.pkl frames)")
        if numbers != list(range(len(numbers))):
            missing = sorted(set(range(numbers[-1] + 1)) - set(numbers))
            raise DataError(f"{self.path}: gap in frame numbering, missing {', '.join(f'{m}.pkl' for m in missing[:5])}"
                            f"{' ...' if len(missing) > 5 else ''} ({len(numbers)} frames, last {numbers[-1]}.pkl)")
        self._n = len(numbers)

    def __len__(self) -> int:
        return self._n

    def frame_path(self, i: int) -> Path:
        return self.path / f"{self._check_index(i)}.pkl"

    def frame(self, i: int) -> dict:
        p = self.frame_path(i)
        return validate_frame(load_frame_pickle(p), str(p))

    @property
    def task_path(self) -> Path:
        return self.path.parent

    @property
    def instructions(self) -> dict | None:
        p = self.task_path / "instructions" / f"episode{self.index}.json"
        return read_instructions(p) if p.is_file() else None

    @property
    def scene_info(self) -> dict | None:
        return read_scene_info(self.task_path).get(f"episode_{self.index}")
