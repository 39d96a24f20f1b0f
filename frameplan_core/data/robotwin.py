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
import json
import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from frameplan_core import atomic
from frameplan_core.errors import DataError

CAMERAS = ("head_camera", "front_camera", "left_camera", "right_camera")
# RoboTwin camera types (task_config/_camera_config.yml); longest first so "Large_D435" wins over "D435".
CAMERA_TYPES = ("Large_D435", "Large_L515", "D435", "L515")
JOINT_DIM = 14
FULL_DIM = 16  # joint_state_full / joint_command_full: per arm 7 joints + gripper, left arm first
FULL_KEYS = ("joint_state_full", "joint_command_full")
_CAMERA_MATRICES = {"intrinsic_cv": (3, 3), "extrinsic_cv": (3, 4), "cam2world_gl": (4, 4)}
_EPISODE_RE = re.compile(r"^episode(\d+)$")
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


def parse_episode_name(name: str) -> int | None:
    m = _EPISODE_RE.match(name)
    return int(m.group(1)) if m else None


# ----------------------------------------------------------------------------------------------- validation

def _check_array(value: Any, where: str, shape: tuple | None = None, ndim: int | None = None,
                 kinds: str = "fiu") -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise DataError(f"{where}: expected a numpy array, got {type(value).__name__}")
    if value.dtype.kind not in kinds:
        raise DataError(f"{where}: dtype {value.dtype} not allowed (expected kind in {kinds!r})")
    if shape is not None and value.shape != shape:
        raise DataError(f"{where}: expected shape {shape}, got {value.shape}")
    if ndim is not None and value.ndim != ndim:
        raise DataError(f"{where}: expected {ndim} dimensions, got shape {value.shape}")
    return value


def validate_frame(frame: Any, where: str, joint_dim: int | None = JOINT_DIM) -> dict:
    """Check one frame dict against the RoboTwin layout; returns it with depth as float64 and a missing
    pointcloud as []. Every error names ``where`` and the offending key."""
    if not isinstance(frame, dict):
        raise DataError(f"{where}: expected a dict frame, got {type(frame).__name__}")
    for key in ("observation", "joint_action", "endpose"):
        if key not in frame:
            raise DataError(f"{where}: missing key {key!r} (have {sorted(frame)})")
    obs = frame["observation"]
    if not isinstance(obs, dict) or not obs:
        raise DataError(f"{where}: 'observation' must be a non-empty dict of cameras")
    out_obs = {}
    for cam, data in obs.items():
        w = f"{where}: observation/{cam}"
        if not isinstance(data, dict):
            raise DataError(f"{w}: expected a dict, got {type(data).__name__}")
        if "rgb" not in data:
            raise DataError(f"{w}: missing key 'rgb' (have {sorted(data)})")
        rgb = _check_array(data["rgb"], f"{w}/rgb", ndim=3, kinds="u")
        if rgb.dtype != np.uint8 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
            raise DataError(f"{w}/rgb: expected (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
        cam_out = dict(data)
        if "depth" in data:
            depth = _check_array(data["depth"], f"{w}/depth", shape=rgb.shape[:2])
            cam_out["depth"] = depth.astype(np.float64, copy=False)
        for key, shape in _CAMERA_MATRICES.items():
            if key in data:
                _check_array(data[key], f"{w}/{key}", shape=shape, kinds="fi")
        out_obs[cam] = cam_out
    for key in ("joint_action", "endpose"):
        arr = _check_array(frame[key], f"{where}: {key}", ndim=1, kinds="fi")
        if joint_dim is not None and key == "joint_action" and arr.shape != (joint_dim,):
            raise DataError(f"{where}: joint_action: expected shape ({joint_dim},), got {arr.shape}")
        if joint_dim is not None and key == "endpose" and arr.shape != (JOINT_DIM,):
            raise DataError(f"{where}: endpose: expected shape ({JOINT_DIM},), got {arr.shape}")
    for key in FULL_KEYS:  # optional (our simulator's episodes)
        if key in frame:
            _check_array(frame[key], f"{where}: {key}", shape=(FULL_DIM,), kinds="fi")
    pc = frame.get("pointcloud", [])
    if isinstance(pc, list):
        if pc:
            raise DataError(f"{where}: pointcloud: expected an (N, 6) array or [], got a non-empty list")
    else:
        pc = _check_array(pc, f"{where}: pointcloud", kinds="fi")
        if pc.size and (pc.ndim != 2 or pc.shape[1] != 6):
            raise DataError(f"{where}: pointcloud: expected shape (N, 6), got {pc.shape}")
    out = dict(frame)
    out["observation"] = out_obs
    out["pointcloud"] = pc
    return out


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

def read_instructions(path: str | Path) -> dict:
    """Read and check an instruction json (``{"seen": [...], "unseen": [...]}``, UTF-8)."""
    from frameplan_core.data.instructions import load_instructions_file

    return load_instructions_file(path)


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_scene_info(task_path: str | Path) -> dict:
    path = Path(task_path) / "scene_info.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid UTF-8 JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object keyed by 'episode_<N>'")
    return data


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

FULL_KEY_GAP = {
    "joint_command_full": "the episode predates the 16 commanded joint/gripper targets that a replay needs "
                          "(RoboTwin's 14-d joint_action lacks joint 7 and holds the measured gripper opening, so it "
                          "does not replay); collect it again with `frameplan collect`",
    "joint_state_full": "the measured 16-d joint state is recorded only by `frameplan collect`",
}

class EpisodeReader:
    """What every episode reader offers (RoboTwin 1.0 pickles, RoboTwin 2.0 hdf5)."""

    path: Path
    task: str
    camera_type: str
    index: int

    def __len__(self) -> int:
        raise NotImplementedError

    def frame(self, i: int) -> dict:
        raise NotImplementedError

    def _check_index(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.path}: frame {i} out of range (episode has {n} frames)")
        return i % n

    def __iter__(self) -> Iterator[dict]:
        for i in range(len(self)):
            yield self.frame(i)

    def _camera(self, i: int, camera: str) -> dict:
        obs = self.frame(i)["observation"]
        if camera not in obs:
            raise DataError(f"{self.path}: frame {i} has no camera {camera!r} (have {sorted(obs)})")
        return obs[camera]

    def rgb(self, i: int, camera: str = "head_camera") -> np.ndarray:
        return self._camera(i, camera)["rgb"]

    def depth(self, i: int, camera: str = "head_camera") -> np.ndarray:
        data = self._camera(i, camera)
        if "depth" not in data:
            raise DataError(f"{self.path}: frame {i} camera {camera!r} has no depth")
        return data["depth"]

    def cameras(self) -> list[str]:
        return sorted(self.frame(0)["observation"])

    def joint_action(self, i: int) -> np.ndarray:
        return np.asarray(self.frame(i)["joint_action"], dtype=np.float64)

    def _full(self, i: int, key: str) -> np.ndarray:
        frame = self.frame(i)
        if key not in frame:
            raise DataError(f"{self.path}: frame {i} has no {key!r}: {FULL_KEY_GAP[key]}")
        return np.asarray(frame[key], dtype=np.float64)

    def joint_command(self, i: int) -> np.ndarray:
        """(16,) commanded targets of frame ``i``: left joints 1..7 (rad), left gripper command in [0, 1], right
        joints 1..7, right gripper. DataError naming the episode when it was recorded without them."""
        return self._full(i, "joint_command_full")

    def joint_state_full(self, i: int) -> np.ndarray:
        """(16,) measured joints of frame ``i`` in the layout of ``joint_command``."""
        return self._full(i, "joint_state_full")

    def joint_commands(self) -> np.ndarray:
        """(frames, 16) every frame's commanded targets (reads every frame); DataError when any frame lacks them."""
        return self.full_vectors(require=("joint_command_full",))["joint_command_full"]

    def full_vectors(self, require: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """{key: (frames, 16)} for each of ``joint_state_full`` / ``joint_command_full`` that every frame has, read in
        one pass; DataError naming the episode and the first frame without a key in ``require``."""
        cols: dict[str, list] = {k: [] for k in FULL_KEYS}
        for i in range(len(self)):
            frame = self.frame(i)
            for key in list(cols):
                if key in frame:
                    cols[key].append(np.asarray(frame[key], dtype=np.float64))
                elif key in require:
                    raise DataError(f"{self.path}: frame {i} has no {key!r}: {FULL_KEY_GAP[key]}")
                else:
                    del cols[key]
        return {k: np.stack(v) for k, v in cols.items()}

    def has_joint_commands(self) -> bool:
        """Whether the episode records the full commands a replay needs (checks the first and the last frame)."""
        return all("joint_command_full" in self.frame(i) for i in {0, len(self) - 1})

    def validate(self) -> None:
        """Read every frame (the lazy accessors only check what they touch)."""
        for _ in self:
            pass

    @property
    def instructions(self) -> dict | None:
        raise NotImplementedError

    @property
    def scene_info(self) -> dict | None:
        raise NotImplementedError

    @property
    def key(self) -> str:
        """A stable name for splits and metadata: ``<task>/<camera_type>/episode<N>``."""
        return f"{self.task}/{self.camera_type}/episode{self.index}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, task={self.task!r}, frames={len(self)})"


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


# ----------------------------------------------------------------------------------------------- discovery

def open_episode(path: str | Path) -> EpisodeReader:
    """A RoboTwin 1.0 episode folder or a RoboTwin 2.0 ``episode<N>.hdf5`` file, by layout."""
    path = Path(path)
    if path.is_file() and path.suffix in (".hdf5", ".h5"):
        from frameplan_core.data.robotwin2 import RoboTwin2Episode

        return RoboTwin2Episode(path)
    if path.is_dir():
        return RoboTwinEpisode(path)
    if not path.exists():
        raise DataError(f"{path}: no such episode (expected an episode<N>/ folder of pickles or an episode<N>.hdf5)")
    raise DataError(f"{path}: not a RoboTwin episode (expected an episode<N>/ folder of pickles or an .hdf5 file)")


def _hidden(name: str) -> bool:
    return name.startswith(".") or atomic.is_partial(name)


def find_episode_paths(root: str | Path,
                       tasks: list[str] | tuple[str, ...] | None = None) -> list[tuple[str, int, Path]]:
    """(task, index, path) of every 1.0 episode folder and 2.0 hdf5 under ``root`` without opening them; hidden
    and ``.partial`` entries are skipped. ``root`` may itself be an episode."""
    from frameplan_core.data.robotwin2 import task_of_hdf5

    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    found: list[tuple[str, int, Path]] = []

    def consider_dir(d: Path) -> bool:
        idx = parse_episode_name(d.name)
        if idx is None:
            return False
        parsed = parse_task_dir(d.parent.name)
        if parsed is None and not any(_FRAME_RE.match(n) for n in os.listdir(d)):
            return False
        found.append((parsed[0] if parsed else d.parent.name, idx, d))
        return True

    def consider_file(f: Path) -> None:
        if f.suffix in (".hdf5", ".h5") and parse_episode_name(f.stem) is not None:
            found.append((task_of_hdf5(f), parse_episode_name(f.stem), f))

    if root.is_file():
        consider_file(root)
    elif not consider_dir(root):
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
            keep = []
            for d in dirnames:
                if not consider_dir(Path(dirpath) / d):
                    keep.append(d)
            dirnames[:] = keep
            for f in sorted(filenames):
                if not _hidden(f):
                    consider_file(Path(dirpath) / f)
    if tasks:
        wanted = set(tasks)
        found = [e for e in found if e[0] in wanted]
    return sorted(found, key=lambda e: (e[0], e[1], str(e[2])))


def find_episodes(root: str | Path, tasks: list[str] | tuple[str, ...] | None = None) -> list[EpisodeReader]:
    """Open every 1.0 and 2.0 episode under ``root``, sorted by (task, index). A broken episode raises DataError;
    use ``find_episode_paths`` + ``open_episode`` to skip bad ones."""
    return [open_episode(p) for _, _, p in find_episode_paths(root, tasks)]
