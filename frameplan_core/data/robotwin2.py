"""RoboTwin 2.0 episodes: one ``episode<N>.hdf5`` per episode, the RoboTwin frame dict stacked over time.

Layout as RoboTwin 2.0 collects it: ``<task>/<config>/data/episode<N>.hdf5`` with the instructions in
``<task>/<config>/instructions/episode<N>.json`` (``{"seen": [...], "unseen": [...]}``). Inside the file:
``observation/<camera>/rgb`` holds JPEG bytes (fixed-length byte strings, NUL padded) that RoboTwin encoded from
*RGB* arrays with OpenCV, so ``cv2.imdecode`` gives RGB back and no channel swap is done; ``depth``,
``intrinsic_cv``, ``extrinsic_cv``, ``cam2world_gl`` are stacked arrays; ``joint_action`` is a group
(``left_arm``, ``left_gripper``, ``right_arm``, ``right_gripper``, ``vector``) and ``endpose`` a group
(``left_endpose``, ``left_gripper``, ``right_endpose``, ``right_gripper``); plain stacked datasets are accepted too.

The reader exposes the same interface as the 1.0 reader; ``frame(i)["joint_action"]`` / ``["endpose"]`` are the
flat vectors (``vector``, or the parts concatenated). Our simulator's (N, 16) ``joint_state_full`` and
``joint_command_full`` are top-level datasets when present (RoboTwin's own files do not have them).
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from frameplan_core import atomic
from frameplan_core.data.episode import (
    FULL_DIM,
    FULL_KEY_GAP,
    FULL_KEYS,
    EpisodeReader,
    parse_episode_name,
    read_instructions,
    read_scene_info,
    validate_frame,
)
from frameplan_core.errors import DataError

_JOINT_PARTS = ("left_arm", "left_gripper", "right_arm", "right_gripper")
_ENDPOSE_PARTS = ("left_endpose", "left_gripper", "right_endpose", "right_gripper")
_CAMERA_KEYS = ("depth", "intrinsic_cv", "extrinsic_cv", "cam2world_gl")


def _h5py():
    import h5py

    return h5py


def _layout(path: Path) -> tuple[str, str, Path]:
    """(task, config, folder holding instructions/ and scene_info.json) from the RoboTwin 2.0 layout."""
    if path.parent.name == "data" and path.parent.parent.name:
        cfg_dir = path.parent.parent
        return cfg_dir.parent.name or cfg_dir.name, cfg_dir.name, cfg_dir
    return path.parent.name, "", path.parent


def task_of_hdf5(path: str | Path) -> str:
    return _layout(Path(path))[0]


class RoboTwin2Episode(EpisodeReader):
    """Lazy reader of one RoboTwin 2.0 ``episode<N>.hdf5``: checks the structure (metadata only) on open and
    decodes a frame's JPEGs only when that frame is asked for."""

    def __init__(self, path: str | Path):
        self._fh = None  # first: __del__ closes it even when the checks below refuse the file
        self._pid = None
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: RoboTwin 2.0 episode file not found")
        index = parse_episode_name(self.path.stem)
        if index is None:
            raise DataError(f"{self.path}: RoboTwin 2.0 episode files are named episode<N>.hdf5")
        self.index = index
        self.task, self.camera_type, self._meta_dir = _layout(self.path)
        f = self._file()
        try:
            self._check_structure(f)
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            self.close()
            raise DataError(f"{self.path}: corrupt hdf5 ({type(exc).__name__}: {exc})") from None
        except DataError:
            self.close()
            raise

    # -- file handle (reopened after fork so DataLoader workers do not share one) --------------------
    def _file(self):
        h5py = _h5py()
        if self._fh is None or self._pid != os.getpid():
            try:
                self._fh = h5py.File(self.path, "r")
            except OSError as exc:
                raise DataError(f"{self.path}: cannot open as HDF5 (truncated or corrupt file: {exc})") from None
            self._pid = os.getpid()
        return self._fh

    def close(self) -> None:
        if self._fh is not None and self._pid == os.getpid():
            try:
                self._fh.close()
            except Exception:  # noqa: BLE001 - closing a broken file must not mask the real error
                pass
        self._fh = None

    def __del__(self):
        self.close()

    def _check_structure(self, f) -> None:
        h5py = _h5py()
        if "observation" not in f or not isinstance(f["observation"], h5py.Group):
            raise DataError(f"{self.path}: missing group 'observation' (have {sorted(f.keys())})")
        cams = [c for c in f["observation"] if isinstance(f["observation"][c], h5py.Group)]
        if not cams:
            raise DataError(f"{self.path}: 'observation' has no camera groups")
        n = None
        for cam in cams:
            g = f["observation"][cam]
            if "rgb" not in g:
                raise DataError(f"{self.path}: missing dataset observation/{cam}/rgb (have {sorted(g.keys())})")
            if g["rgb"].ndim != 1 or g["rgb"].dtype.kind not in "SO":
                raise DataError(f"{self.path}: observation/{cam}/rgb must be a 1-D array of JPEG byte strings, "
                                f"got shape {g['rgb'].shape} dtype {g['rgb'].dtype}")
            n = len(g["rgb"]) if n is None else n
        self._n = int(n)
        if self._n == 0:
            raise DataError(f"{self.path}: empty episode (0 frames)")
        for key in ("joint_action", "endpose"):
            if key not in f:
                raise DataError(f"{self.path}: missing '{key}' (have {sorted(f.keys())})")

        def check_len(name, obj):  # only the frame tree: forks may add other, non-per-frame datasets
            per_frame = name.split("/")[0] in ("observation", "joint_action", "endpose", "pointcloud", *FULL_KEYS)
            if per_frame and isinstance(obj, h5py.Dataset) and obj.ndim >= 1 and obj.shape[0] != self._n:
                raise DataError(f"{self.path}: dataset {name} has {obj.shape[0]} entries, expected {self._n} "
                                f"(one per frame)")

        f.visititems(check_len)
        for key in FULL_KEYS:
            if key in f and (not isinstance(f[key], h5py.Dataset) or f[key].shape[1:] != (FULL_DIM,)):
                raise DataError(f"{self.path}: {key} must be a ({self._n}, {FULL_DIM}) dataset, got "
                                f"{getattr(f[key], 'shape', 'a group')}")

    def __len__(self) -> int:
        return self._n

    # -- frames ---------------------------------------------------------------------------------------
    def _decode(self, f, cam: str, i: int) -> np.ndarray:
        raw = f["observation"][cam]["rgb"][i]
        buf = np.frombuffer(bytes(raw), dtype=np.uint8)
        import cv2

        img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
        if img is None:
            raise DataError(f"{self.path}: observation/{cam}/rgb[{i}] is not a decodable JPEG")
        return img  # RoboTwin encoded RGB arrays directly, so the decoded array is RGB: no swap

    @staticmethod
    def _vector(obj, parts: Sequence[str], i: int, where: str) -> np.ndarray:
        h5py = _h5py()
        if isinstance(obj, h5py.Dataset):
            return np.asarray(obj[i], dtype=np.float64).reshape(-1)
        if "vector" in obj:
            return np.asarray(obj["vector"][i], dtype=np.float64).reshape(-1)
        missing = [p for p in parts if p not in obj]
        if missing:
            raise DataError(f"{where}: missing {', '.join(missing)} (have {sorted(obj.keys())})")
        return np.concatenate([np.asarray(obj[p][i], dtype=np.float64).reshape(-1) for p in parts])

    def frame(self, i: int) -> dict:
        i = self._check_index(i)
        f = self._file()
        where = f"{self.path} frame {i}"
        try:
            obs = {}
            for cam in f["observation"]:
                g = f["observation"][cam]
                d = {"rgb": self._decode(f, cam, i)}
                for key in _CAMERA_KEYS:
                    if key in g:
                        d[key] = np.asarray(g[key][i])
                obs[cam] = d
            frame = {
                "observation": obs,
                "joint_action": self._vector(f["joint_action"], _JOINT_PARTS, i, f"{self.path}: joint_action"),
                "endpose": self._vector(f["endpose"], _ENDPOSE_PARTS, i, f"{self.path}: endpose"),
                "pointcloud": [],
            }
            for key in FULL_KEYS:
                if key in f:
                    frame[key] = np.asarray(f[key][i], dtype=np.float64)
            pcd = f.get("pointcloud")
            if isinstance(pcd, _h5py().Dataset) and pcd.ndim >= 1 and pcd.shape[0] == self._n:
                pc = np.asarray(f["pointcloud"][i])
                frame["pointcloud"] = pc if pc.size else []
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise DataError(f"{where}: cannot read ({type(exc).__name__}: {exc})") from None
        return validate_frame(frame, where, joint_dim=None)

    def rgb(self, i: int, camera: str = "head_camera") -> np.ndarray:
        i = self._check_index(i)
        f = self._file()
        if camera not in f["observation"]:
            raise DataError(f"{self.path}: no camera {camera!r} (have {sorted(f['observation'].keys())})")
        try:
            return self._decode(f, camera, i)
        except (OSError, RuntimeError, ValueError) as exc:
            raise DataError(f"{self.path}: observation/{camera}/rgb[{i}] unreadable ({exc})") from None

    def cameras(self) -> list[str]:
        return sorted(self._file()["observation"].keys())

    def has_joint_commands(self) -> bool:
        return "joint_command_full" in self._file()

    def full_vectors(self, require: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
        """The (frames, 16) datasets present, read whole (no JPEG decoding)."""
        f = self._file()
        missing = [k for k in require if k not in f]
        if missing:
            raise DataError(f"{self.path}: no {missing[0]!r} dataset: {FULL_KEY_GAP[missing[0]]}")
        try:
            return {k: np.asarray(f[k][:], dtype=np.float64) for k in FULL_KEYS if k in f}
        except (OSError, RuntimeError, ValueError) as exc:
            raise DataError(f"{self.path}: 16-d joint vectors unreadable ({exc})") from None

    @property
    def instructions(self) -> dict | None:
        for d in (self._meta_dir, self.path.parent):
            p = d / "instructions" / f"episode{self.index}.json"
            if p.is_file():
                return read_instructions(p)
        return None

    @property
    def scene_info(self) -> dict | None:
        return read_scene_info(self._meta_dir).get(f"episode_{self.index}")


# ----------------------------------------------------------------------------------------------- writer

def _jpeg_column(images: list[np.ndarray], where: str, quality: int) -> np.ndarray:
    import cv2

    encoded = []
    for t, img in enumerate(images):
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])  # RGB in, as RoboTwin does
        if not ok:
            raise DataError(f"{where}: could not JPEG-encode frame {t}")
        encoded.append(buf.tobytes())
    width = max(len(b) for b in encoded)
    return np.array([b.ljust(width, b"\0") for b in encoded], dtype=f"S{width}")


def write_hdf5(path: str | Path, frames: Sequence[dict], quality: int = 95) -> Path:
    """Write RoboTwin frame dicts (1.0 layout, (14,) joint vectors) as a RoboTwin 2.0 hdf5, atomically."""
    h5py = _h5py()
    path = Path(path)
    if not frames:
        raise DataError(f"{path}: refusing to write an empty episode")
    frames = [validate_frame(fr, f"{path} frame {t}") for t, fr in enumerate(frames)]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            for cam in frames[0]["observation"]:
                g = f.create_group(f"observation/{cam}")
                try:
                    cols = {k: [fr["observation"][cam][k] for fr in frames] for k in frames[0]["observation"][cam]}
                except KeyError as exc:
                    raise DataError(f"{path}: camera {cam!r} lacks {exc} in some frames") from None
                g.create_dataset("rgb", data=_jpeg_column(cols.pop("rgb"), f"{path} {cam}", quality))
                for key, col in cols.items():
                    g.create_dataset(key, data=np.stack(col))
            ja = np.stack([fr["joint_action"] for fr in frames]).astype(np.float64)
            ep = np.stack([fr["endpose"] for fr in frames]).astype(np.float64)
            for name, arr, parts in (("joint_action", ja, ("left_arm", "left_gripper", "right_arm", "right_gripper")),
                                     ("endpose", ep, _ENDPOSE_PARTS)):
                g = f.create_group(name)
                g.create_dataset(parts[0], data=arr[:, 0:6])
                g.create_dataset(parts[1], data=arr[:, 6])
                g.create_dataset(parts[2], data=arr[:, 7:13])
                g.create_dataset(parts[3], data=arr[:, 13])
                if name == "joint_action":
                    g.create_dataset("vector", data=arr)
            for key in FULL_KEYS:  # our simulator's 16-d vectors, when every frame has them
                if all(key in fr for fr in frames):
                    f.create_dataset(key, data=np.stack([fr[key] for fr in frames]).astype(np.float64))
            pcs = [fr["pointcloud"] for fr in frames]
            if all(isinstance(p, np.ndarray) and p.size for p in pcs) and len({p.shape for p in pcs}) == 1:
                f.create_dataset("pointcloud", data=np.stack(pcs))
            else:
                f.create_dataset("pointcloud", data=np.zeros((len(frames), 0)))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def episode_path(root: str | Path, task: str, config: str, index: int) -> Path:
    return Path(root) / task / config / "data" / f"episode{int(index)}.hdf5"


def write_episode(root: str | Path, task: str, config: str, index: int, frames: Sequence[dict],
                  instructions: dict | None = None, quality: int = 95) -> Path:
    """Write ``<root>/<task>/<config>/data/episode<N>.hdf5`` (+ ``instructions/episode<N>.json``)."""
    path = write_hdf5(episode_path(root, task, config, index), frames, quality)
    if instructions is not None:
        from frameplan_core.data.instructions import check_instructions

        check_instructions(instructions, f"{path} instructions")
        atomic.write_json(path.parent.parent / "instructions" / f"episode{int(index)}.json", instructions)
    return path
