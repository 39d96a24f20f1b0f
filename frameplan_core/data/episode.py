"""What every episode format shares, and which reader reads a path.

The shared base: the frame dict both RoboTwin formats hold (``validate_frame``: ``observation`` -> camera ->
{rgb, depth, intrinsic_cv, extrinsic_cv, cam2world_gl}; ``joint_action``, ``endpose``, optional (16,)
``joint_state_full``/``joint_command_full``; ``pointcloud``), episode naming (``episode<N>``), the side files
(instructions, scene_info.json) and ``EpisodeReader``, the interface of every reader. The format modules
(robotwin.py: RoboTwin 1.0 pickles, robotwin2.py: RoboTwin 2.0 hdf5) build on this module and never on each other;
the dispatch (``open_episode``, ``find_episode_paths``, ``find_episodes``) picks one by layout and imports it when
called, so listing a folder of 1.0 episodes does not import h5py.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from frameplan_core import atomic
from frameplan_core.errors import DataError
from frameplan_core.jsonfile import read_json

JOINT_DIM = 14
FULL_DIM = 16  # joint_state_full / joint_command_full: per arm 7 joints + gripper, left arm first
FULL_KEYS = ("joint_state_full", "joint_command_full")
_CAMERA_MATRICES = {"intrinsic_cv": (3, 3), "extrinsic_cv": (3, 4), "cam2world_gl": (4, 4)}
_EPISODE_RE = re.compile(r"^episode(\d+)$")


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


# ----------------------------------------------------------------------------------------------- side files

def read_instructions(path: str | Path) -> dict:
    """Read and check an instruction json (``{"seen": [...], "unseen": [...]}``, UTF-8)."""
    from frameplan_core.data.instructions import load_instructions_file

    return load_instructions_file(path)


def read_scene_info(task_path: str | Path) -> dict:
    path = Path(task_path) / "scene_info.json"
    if not path.is_file():
        return {}
    return read_json(path)


# ----------------------------------------------------------------------------------------------- reader base

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


# ----------------------------------------------------------------------------------------------- dispatch

def open_episode(path: str | Path) -> EpisodeReader:
    """A RoboTwin 1.0 episode folder or a RoboTwin 2.0 ``episode<N>.hdf5`` file, by layout."""
    path = Path(path)
    if path.is_file() and path.suffix in (".hdf5", ".h5"):
        from frameplan_core.data.robotwin2 import RoboTwin2Episode

        return RoboTwin2Episode(path)
    if path.is_dir():
        from frameplan_core.data.robotwin import RoboTwinEpisode

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
    from frameplan_core.data.robotwin import is_frame_file, parse_task_dir
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
        if parsed is None and not any(is_frame_file(n) for n in os.listdir(d)):
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
