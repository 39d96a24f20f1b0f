"""Trajectory conditioning for the grid planner: a 2D path drawn on the first frame as a polyline whose colour
runs red -> blue along its length, with an end marker; 3D points are projected with the camera intrinsics.

The inverse helper (``episode_ee_trajectory``) projects an episode's end-effector positions into its head camera,
which gives the ground-truth path for evaluation and for trajectory-conditioned training samples."""
from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from frameplan_core.errors import DataError, InputError
from frameplan_core.image import center_box, pad_borders

log = logging.getLogger(__name__)

START_COLOR = (255, 0, 0)  # RGB red at the start of the path
END_COLOR = (0, 0, 255)  # RGB blue at the end
FAR_OUTSIDE = 0.25  # points further than this fraction of the image size outside it are clipped (with a warning)
MIN_DEPTH = 1e-6  # metres; points at or behind the camera plane cannot be projected


class TrajectoryClippedWarning(UserWarning):
    """Some trajectory points lay far outside the image and were moved onto its border."""


def _as_points(points: Any, dim: int, where: str) -> np.ndarray:
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected an array of {dim}-D points, got {type(points).__name__}",
                         kind="trajectory") from None
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise InputError(f"{where}: expected shape (N, {dim}), got {arr.shape}", kind="trajectory")
    if arr.shape[0] < 2:
        raise InputError(f"{where}: a trajectory needs at least 2 points, got {arr.shape[0]}", kind="trajectory")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise InputError(f"{where}: point(s) {np.flatnonzero(bad)[:5].tolist()} are NaN or infinite", kind="trajectory")
    return arr


def _check_K(K: Any, where: str = "intrinsics K") -> np.ndarray:
    K = np.asarray(K, dtype=np.float64)
    if K.shape == (9,):
        K = K.reshape(3, 3)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"{where}: expected a 3x3 camera matrix with positive fx, fy, got {K.tolist()}", kind="trajectory")
    return K


def project(points_cam: Any, K: Any, where: str = "trajectory") -> np.ndarray:
    """Project (N, 3) points in the camera optical frame (x right, y down, z forward, metres) to pixels."""
    P = _as_points(points_cam, 3, where)
    K = _check_K(K)
    behind = P[:, 2] <= MIN_DEPTH
    if behind.any():
        raise InputError(f"{where}: point(s) {np.flatnonzero(behind)[:5].tolist()} are at or behind the camera "
                         f"(z <= 0 in the optical frame, e.g. z={P[behind][0, 2]:.3f}); cannot project them", kind="trajectory")
    uvw = P @ K.T
    return uvw[:, :2] / uvw[:, 2:3]


def world_to_camera(points_world: Any, extrinsic_cv: Any, where: str = "trajectory") -> np.ndarray:
    """World points -> camera optical frame with an OpenCV extrinsic [R|t] (3x4 or 4x4, world -> camera)."""
    P = _as_points(points_world, 3, where)
    E = np.asarray(extrinsic_cv, dtype=np.float64)
    if E.shape not in ((3, 4), (4, 4)) or not np.isfinite(E).all():
        raise InputError(f"{where}: extrinsic_cv must be a finite 3x4 or 4x4 matrix, got shape {E.shape}", kind="trajectory")
    return P @ E[:3, :3].T + E[:3, 3]


@dataclass
class Trajectory:
    """A 2D path in pixel coordinates of an image of size ``image_hw`` (x right, y down), in time order."""

    points: np.ndarray
    image_hw: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        self.points = _as_points(self.points, 2, "trajectory")

    @classmethod
    def from_pixels(cls, points: Any, image_hw: tuple[int, int] | None = None) -> Trajectory:
        return cls(_as_points(points, 2, "trajectory"), image_hw)

    @classmethod
    def from_camera_points(cls, points_cam: Any, K: Any, image_hw: tuple[int, int] | None = None) -> Trajectory:
        """3D points in the camera optical frame (e.g. from a D435 camera_info K)."""
        return cls(project(points_cam, K), image_hw)

    @classmethod
    def from_world_points(cls, points_world: Any, extrinsic_cv: Any, intrinsic_cv: Any,
                          image_hw: tuple[int, int] | None = None) -> Trajectory:
        return cls(project(world_to_camera(points_world, extrinsic_cv), intrinsic_cv), image_hw)

    def to_json(self) -> dict[str, Any]:
        return {"points": self.points.tolist(), "image_hw": list(self.image_hw) if self.image_hw else None}


def as_trajectory(value: Any) -> Trajectory:
    """Accept a Trajectory, an (N, 2) array/list of pixel points, or a dict ``{"points": ...}`` /
    ``{"points_3d": ..., "K": ...}`` (camera optical frame) as read from a JSON file."""
    if isinstance(value, Trajectory):
        return value
    if isinstance(value, dict):
        hw = tuple(value["image_hw"]) if value.get("image_hw") else None
        if "points_3d" in value:
            if "K" not in value:
                raise InputError("trajectory: 'points_3d' needs the camera matrix 'K' (3x3) to be projected", kind="trajectory")
            return Trajectory.from_camera_points(value["points_3d"], value["K"], hw)
        if "points" in value:
            return Trajectory.from_pixels(value["points"], hw)
        raise InputError(f"trajectory: expected keys 'points' or 'points_3d' + 'K', got {sorted(value)}", kind="trajectory")
    return Trajectory.from_pixels(value)


def clip_points(points: np.ndarray, image_hw: tuple[int, int], far: float = FAR_OUTSIDE) -> np.ndarray:
    """Move points lying further than ``far`` x image size outside the image onto its border, warning once.
    Points just outside stay (the drawn line simply leaves the image there)."""
    h, w = image_hw
    lo = np.array([-far * w, -far * h])
    hi = np.array([(w - 1) + far * w, (h - 1) + far * h])
    outside = ((points < lo) | (points > hi)).any(axis=1)
    if not outside.any():
        return points
    msg = (f"trajectory: {int(outside.sum())} of {len(points)} point(s) lie far outside the {w}x{h} image "
           f"(e.g. {points[outside][0].round(1).tolist()}); clipped to the image border")
    warnings.warn(msg, TrajectoryClippedWarning, stacklevel=3)
    log.warning(msg)
    out = points.copy()
    out[outside] = np.clip(out[outside], [0, 0], [w - 1, h - 1])
    return out


def fit_points(points: np.ndarray, src_hw: tuple[int, int], size: int | tuple[int, int],
               policy: str = "center") -> np.ndarray:
    """Map pixel points of an image of ``src_hw`` the way ``image.fit(image, size, policy)`` maps the image."""
    th, tw = (size, size) if isinstance(size, int) else size
    h, w = src_hw
    p = np.asarray(points, dtype=np.float64).copy()
    if policy == "center":
        y0, x0, ch, cw = center_box(src_hw, (th, tw))
        p[:, 0] = (p[:, 0] - x0 + 0.5) * tw / cw - 0.5
        p[:, 1] = (p[:, 1] - y0 + 0.5) * th / ch - 0.5
    elif policy == "resize":
        p[:, 0] = (p[:, 0] + 0.5) * tw / w - 0.5
        p[:, 1] = (p[:, 1] + 0.5) * th / h - 0.5
    elif policy == "pad":
        top, bottom, left, right = pad_borders(src_hw, (th, tw))
        p[:, 0] += left
        p[:, 1] += top
        h, w = h + top + bottom, w + left + right
        p[:, 0] = (p[:, 0] + 0.5) * tw / w - 0.5
        p[:, 1] = (p[:, 1] + 0.5) * th / h - 0.5
    else:
        raise InputError(f"crop policy {policy!r}: expected one of center, resize, pad", kind="trajectory")
    return p


def draw_trajectory(image: np.ndarray, trajectory: Any, thickness: int = 2, end_marker: bool = True,
                    start_color: Sequence[int] = START_COLOR, end_color: Sequence[int] = END_COLOR,
                    step_px: float = 2.0) -> np.ndarray:
    """Return a copy of ``image`` (H, W, 3 uint8 RGB) with the path drawn; colour is interpolated by arc length.

    The line is split into pieces of about ``step_px`` so the gradient is smooth; the end marker is a filled
    circle of radius 2*thickness in the end colour."""
    from frameplan_core.image import ensure_rgb_uint8

    image = ensure_rgb_uint8(image, "trajectory image")
    if thickness < 1:
        raise InputError(f"trajectory thickness={thickness}: must be >= 1 px", kind="trajectory")
    traj = as_trajectory(trajectory)
    pts = clip_points(traj.points, image.shape[:2])
    seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
    total = float(seg.sum())
    c0, c1 = np.asarray(start_color, np.float64), np.asarray(end_color, np.float64)
    out = image.copy()
    shift = 4  # sub-pixel precision for cv2 drawing
    scale = 1 << shift

    def fix(p: np.ndarray) -> tuple[int, int]:
        return int(np.rint(p[0] * scale)), int(np.rint(p[1] * scale))

    done = 0.0
    for i, length in enumerate(seg):
        n = max(1, int(np.ceil(length / step_px)))
        for j in range(n):
            a, b = j / n, (j + 1) / n
            p, q = pts[i] + a * (pts[i + 1] - pts[i]), pts[i] + b * (pts[i + 1] - pts[i])
            frac = (done + (a + b) / 2 * length) / total if total > 0 else 0.0
            color = tuple(int(v) for v in np.rint((1 - frac) * c0 + frac * c1))
            cv2.line(out, fix(p), fix(q), color, thickness, cv2.LINE_AA, shift)
        done += float(length)
    if end_marker:
        cv2.circle(out, fix(pts[-1]), int(2 * thickness * scale), tuple(int(v) for v in c1), -1, cv2.LINE_AA, shift)
    return out


def point_at(points: Any, frac: float) -> np.ndarray:
    """The path's position at time fraction ``frac`` in [0, 1], its points taken as evenly spaced in time (a
    recorded end-effector track is sampled that way; a hand-drawn path is read the same way)."""
    pts = np.asarray(as_trajectory(points).points, np.float64)
    s = float(np.clip(frac, 0.0, 1.0)) * (len(pts) - 1)
    i = min(int(np.floor(s)), len(pts) - 2)
    return pts[i] + (s - i) * (pts[i + 1] - pts[i])


def time_marked_frames(drawn: np.ndarray, points: Any, thickness: int, n: int = 9,
                       start_color: Sequence[int] = START_COLOR, end_color: Sequence[int] = END_COLOR) -> list[np.ndarray]:
    """``n`` copies of a frame with its path drawn, copy k marked with a white-ringed disc where the path is at time
    k / (n - 1), in the path's colour at that time. Tiled into a plan's conditioning grid, every cell is then told
    where the end effector should be at its own time, which one red -> blue line leaves a small model to decode
    from colour (PlannerConfig.trajectory_marks)."""
    if thickness < 1:
        raise InputError(f"trajectory thickness={thickness}: must be >= 1 px", kind="trajectory")
    pts = clip_points(as_trajectory(points).points, drawn.shape[:2])
    c0, c1 = np.asarray(start_color, np.float64), np.asarray(end_color, np.float64)
    scale, radius = 16, 2 * thickness + 1
    out = []
    for k in range(n):
        frac = k / (n - 1) if n > 1 else 0.0
        p = point_at(pts, frac)
        centre = (int(np.rint(p[0] * scale)), int(np.rint(p[1] * scale)))
        img = drawn.copy()
        cv2.circle(img, centre, int((radius + 1) * scale), (255, 255, 255), -1, cv2.LINE_AA, 4)
        color = tuple(int(v) for v in np.rint((1 - frac) * c0 + frac * c1))
        cv2.circle(img, centre, int(radius * scale), color, -1, cv2.LINE_AA, 4)
        out.append(img)
    return out


# ---------------------------------------------------------------- inverse helper (evaluation, training data)
def ee_trajectory(points_world: Any, extrinsic_cv: Any, intrinsic_cv: Any,
                  image_hw: tuple[int, int] | None = None) -> Trajectory:
    """End-effector positions (N, 3, world frame) -> their 2D path in the camera with the given OpenCV
    extrinsic (world -> camera) and intrinsic matrices."""
    return Trajectory.from_world_points(points_world, extrinsic_cv, intrinsic_cv, image_hw)


# RoboTwin's ``endpose`` (14,): per arm [x, y, z, 3 orientation values, gripper], left arm first; positions in
# the world frame (see docs/SIM.md). ``arm`` selects which positions form the path.
ENDPOSE_POS = {"left": slice(0, 3), "right": slice(7, 10)}


def endpose_positions(endposes: Any, arm: str = "left", where: str = "endpose") -> np.ndarray:
    """(T, 14) RoboTwin end poses -> (T, 3) positions of one arm."""
    E = np.asarray(endposes, dtype=np.float64)
    if E.ndim != 2 or E.shape[1] != 14:
        raise DataError(f"{where}: expected RoboTwin end poses of shape (T, 14), got {E.shape}")
    if arm not in ENDPOSE_POS:
        raise InputError(f"{where}: arm {arm!r}: expected one of {sorted(ENDPOSE_POS)}", kind="trajectory")
    return E[:, ENDPOSE_POS[arm]]


def episode_ee_trajectory(episode: Any, frames: Sequence[int] | None = None, camera: str = "head_camera",
                          arm: str = "left", reference: int | None = None) -> Trajectory:
    """Project an episode's end-effector path into ``camera`` as seen at frame ``reference`` (default: the first
    frame used). ``episode`` is a reader with ``frame(i)`` returning the RoboTwin dict (``endpose``,
    ``observation[camera]["extrinsic_cv"/"intrinsic_cv"/"rgb"]``) and ``len()``."""
    if frames is None:
        frames = range(len(episode))
    frames = list(frames)
    if len(frames) < 2:
        raise InputError(f"episode trajectory: need at least 2 frames, got {len(frames)}", kind="trajectory")
    name = str(getattr(episode, "path", "episode"))
    ref_index = frames[0] if reference is None else reference
    ref = episode.frame(ref_index)
    try:
        cam = ref["observation"][camera]
        E, K = cam["extrinsic_cv"], cam["intrinsic_cv"]
        hw = tuple(np.asarray(cam["rgb"]).shape[:2]) if "rgb" in cam else None
    except (KeyError, TypeError) as exc:
        raise DataError(f"{name}: frame {ref_index}: no observation/{camera}/extrinsic_cv+intrinsic_cv "
                        f"({exc})") from None
    endposes = []
    for i in frames:
        d = episode.frame(i)
        if "endpose" not in d:
            raise DataError(f"{name}: frame {i}: no 'endpose' entry")
        endposes.append(np.asarray(d["endpose"], dtype=np.float64).reshape(-1))
    return ee_trajectory(endpose_positions(np.stack(endposes), arm, f"{name}: endpose"), E, K, hw)
