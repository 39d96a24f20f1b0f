"""ROS messages <-> numpy: every message the nodes read or build goes through here (images and camera info,
stamps, joint states and trajectories, paths, rviz markers), so the nodes hold no message layouts. Images follow
cv_bridge's conventions.

Why not just cv_bridge: the PyPI ROS 2 environment has no ROS 2 cv_bridge (PyPI's ``cv-bridge`` is ROS 1's), so
this module decodes the encodings we accept with numpy/OpenCV. When a system ROS 2 cv_bridge is importable it
decodes instead (``use_cv_bridge``); the validation in front of it is ours either way, so a malformed message
fails with the same clear InputError naming the topic and field.

Conventions kept (cv_bridge / sensor_msgs/image_encodings.hpp): encoding names (``rgb8``, ``bgr8``, ``rgba8``,
``bgra8``, ``mono8``, ``mono16``, ``8UC1``/``8UC3``/``8UC4``, ``16UC1``, ``32FC1``); ``step`` = bytes per row
(rows may be padded: the padding is ignored on decode, we always publish unpadded rows); ``is_bigendian``
follows the host byte order on encode, and multi-byte data from the other byte order is swapped on decode;
single-channel images decode to (H, W), others to (H, W, C).

Decoding is zero-copy when the rows are unpadded and the byte order is native: the array views ``msg.data``
(keep the message alive while using it; the arrays are read-only).
"""
from __future__ import annotations

import array
import sys
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from frameplan_core.errors import InputError


@dataclass(frozen=True)
class Encoding:
    dtype: np.dtype
    channels: int


ENCODINGS: dict[str, Encoding] = {
    "rgb8": Encoding(np.dtype(np.uint8), 3),
    "bgr8": Encoding(np.dtype(np.uint8), 3),
    "rgba8": Encoding(np.dtype(np.uint8), 4),
    "bgra8": Encoding(np.dtype(np.uint8), 4),
    "mono8": Encoding(np.dtype(np.uint8), 1),
    "8UC1": Encoding(np.dtype(np.uint8), 1),
    "8UC3": Encoding(np.dtype(np.uint8), 3),
    "8UC4": Encoding(np.dtype(np.uint8), 4),
    "mono16": Encoding(np.dtype(np.uint16), 1),
    "16UC1": Encoding(np.dtype(np.uint16), 1),
    "32FC1": Encoding(np.dtype(np.float32), 1),
}

# Colour encodings the foresight node accepts as camera input, and how each becomes RGB.
_TO_RGB = {
    "rgb8": None,
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
    "8UC1": cv2.COLOR_GRAY2RGB,
    "8UC3": None,  # cv_bridge treats 8UC3 as "whatever 3 channels"; we take it as RGB like passthrough
}
COLOR_ENCODINGS = tuple(_TO_RGB)
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")  # millimetres (REP 118 / realsense2_camera), metres
HOST_BIGENDIAN = sys.byteorder == "big"

_cv_bridge: Any = None  # None = not probed yet, False = unavailable, else a CvBridge instance


def cv_bridge_instance() -> Any:
    """A working ROS 2 ``cv_bridge.CvBridge`` or None. Probed once with a tiny round trip, because a ROS 1
    cv_bridge from PyPI may import but not work with ROS 2 messages."""
    global _cv_bridge
    if _cv_bridge is None:
        try:
            from cv_bridge import CvBridge  # type: ignore[import-not-found]

            bridge = CvBridge()
            probe = bridge.cv2_to_imgmsg(np.zeros((2, 3, 3), np.uint8), encoding="rgb8")
            ok = bridge.imgmsg_to_cv2(probe, desired_encoding="passthrough").shape == (2, 3, 3)
            _cv_bridge = bridge if ok else False
        except Exception:  # noqa: BLE001 - any failure means "not usable here"
            _cv_bridge = False
    return _cv_bridge or None


def check_image(msg: Any, where: str = "image") -> Encoding:
    """Validate encoding, size, step and data length of a sensor_msgs/Image; return its Encoding."""
    enc = ENCODINGS.get(msg.encoding)
    if enc is None:
        raise InputError(f"{where}: unsupported encoding {msg.encoding!r}; supported: {sorted(ENCODINGS)}", kind="bad_encoding")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    n = len(msg.data)
    if h == 0 or w == 0 or n == 0:
        raise InputError(f"{where}: empty image (height={h}, width={w}, {n} data bytes)", kind="empty_image")
    row = w * enc.channels * enc.dtype.itemsize
    if step < row:
        raise InputError(f"{where}: step {step} is smaller than width*channels*bytes = {w}*{enc.channels}*"
                         f"{enc.dtype.itemsize} = {row} for {msg.encoding}", kind="bad_size")
    if step % enc.dtype.itemsize:
        raise InputError(f"{where}: step {step} is not a multiple of the {enc.dtype.itemsize}-byte element size", kind="bad_size")
    if n != step * h:
        raise InputError(f"{where}: data has {n} bytes but step*height = {step}*{h} = {step * h}", kind="bad_size")
    return enc


def image_to_numpy(msg: Any, where: str = "image", use_cv_bridge: bool = True) -> np.ndarray:
    """Decode any supported encoding as-is (cv_bridge 'passthrough'): (H, W) or (H, W, C) of its dtype."""
    enc = check_image(msg, where)
    bridge = cv_bridge_instance() if use_cv_bridge else None
    if bridge is not None:
        return np.asarray(bridge.imgmsg_to_cv2(msg, desired_encoding="passthrough"))
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    swapped = enc.dtype.itemsize > 1 and bool(msg.is_bigendian) != HOST_BIGENDIAN
    dtype = enc.dtype.newbyteorder() if swapped else enc.dtype
    flat = np.frombuffer(msg.data, dtype=np.uint8)
    rows = flat.reshape(h, step)[:, : w * enc.channels * enc.dtype.itemsize]
    img = rows.view(dtype).reshape(h, w, enc.channels)  # view: no copy when rows are contiguous
    if swapped:
        img = img.astype(enc.dtype)  # byte-swap into native order (copy)
    return img[:, :, 0] if enc.channels == 1 else img


def check_color_image(msg: Any, where: str = "image") -> Encoding:
    """``check_image`` plus a colour/mono 8-bit encoding (what ``image_to_rgb`` decodes), without decoding: a
    subscription callback's check."""
    enc = check_image(msg, where)
    if msg.encoding not in _TO_RGB:
        raise InputError(f"{where}: encoding {msg.encoding!r} is not a colour image; accepted: {list(COLOR_ENCODINGS)}",
                         kind="bad_encoding")
    return enc


def image_to_rgb(msg: Any, where: str = "image", use_cv_bridge: bool = True) -> np.ndarray:
    """Decode a colour/mono 8-bit image as (H, W, 3) uint8 RGB (no copy for unpadded rgb8)."""
    check_color_image(msg, where)
    img = image_to_numpy(msg, where, use_cv_bridge)
    code = _TO_RGB[msg.encoding]
    if code is not None:
        img = cv2.cvtColor(np.ascontiguousarray(img), code)
    return img


def depth_to_16uc1(depth_mm: np.ndarray) -> np.ndarray:
    """Float millimetres -> uint16 millimetres as realsense2_camera publishes them (16UC1): rounded, 0 = no data
    (NaN, inf, <= 0), clipped at 65535."""
    d = np.asarray(depth_mm, dtype=np.float64)
    out = np.where(np.isfinite(d) & (d > 0), np.rint(d), 0.0)
    return np.clip(out, 0, 65535).astype(np.uint16)


def depth_to_mm(msg: Any, where: str = "depth") -> np.ndarray:
    """Depth image -> float32 millimetres: 16UC1/mono16 are mm (REP 118 / realsense2_camera), 32FC1 metres."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise InputError(f"{where}: depth encoding {msg.encoding!r}; expected 16UC1 (mm) or 32FC1 (m)", kind="bad_encoding")
    d = image_to_numpy(msg, where)
    return d.astype(np.float32) * (1000.0 if msg.encoding == "32FC1" else 1.0)


def _as_byte_array(arr: np.ndarray) -> array.array:
    data = array.array("B")
    data.frombytes(memoryview(np.ascontiguousarray(arr)).cast("B"))  # one copy, no per-element checks
    return data


def numpy_to_image(arr: np.ndarray, encoding: str, header: Any = None, *, stamp: Any = None,
                   frame_id: str | None = None) -> Any:
    """Encode ``arr`` as sensor_msgs/Image with ``encoding``; step = width*channels*itemsize (unpadded),
    ``is_bigendian`` = host order. The header is copied from ``header`` (a source frame's) when given."""
    from sensor_msgs.msg import Image

    enc = ENCODINGS.get(encoding)
    if enc is None:
        raise InputError(f"encoding {encoding!r} is not supported; supported: {sorted(ENCODINGS)}")
    if not isinstance(arr, np.ndarray):
        raise InputError(f"{encoding} image: expected a numpy array, got {type(arr).__name__}")
    channels = 1 if arr.ndim == 2 else (arr.shape[2] if arr.ndim == 3 else -1)
    if channels != enc.channels or arr.dtype != enc.dtype:
        raise InputError(f"{encoding} image: needs {enc.channels} channel(s) of {enc.dtype}, got shape "
                         f"{arr.shape} {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{encoding} image: empty array of shape {arr.shape}")
    arr = np.ascontiguousarray(arr)
    if arr.dtype.byteorder == (">" if not HOST_BIGENDIAN else "<"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    msg = Image()
    _set_header(msg, header, stamp, frame_id)
    msg.height, msg.width = int(arr.shape[0]), int(arr.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = int(HOST_BIGENDIAN)
    msg.step = int(arr.strides[0])
    msg.data = _as_byte_array(arr)
    return msg


def _set_header(msg: Any, header: Any, stamp: Any, frame_id: str | None) -> None:
    """Copy ``header`` (if any), then let explicit ``stamp``/``frame_id`` override it."""
    if header is not None:
        msg.header.stamp = header.stamp
        msg.header.frame_id = header.frame_id
    if stamp is not None:
        msg.header.stamp = stamp
    if frame_id is not None:
        msg.header.frame_id = frame_id


def rgb_to_image(rgb: np.ndarray, header: Any = None, **kw: Any) -> Any:
    return numpy_to_image(rgb, "rgb8", header, **kw)


def camera_info_to_K(msg: Any, where: str = "camera_info") -> np.ndarray:
    """3x3 float64 intrinsics from CameraInfo.k (row-major); refuses an all-zero (uncalibrated) K."""
    K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0 or K[2, 2] == 0:
        raise InputError(f"{where}: uncalibrated or invalid K {K.ravel().tolist()} (all finite, fx, fy > 0)", kind="camera_info")
    return K


def K_to_camera_info(K: np.ndarray, width: int, height: int, header: Any = None, *, stamp: Any = None,
                     frame_id: str | None = None, D: np.ndarray | None = None) -> Any:
    """CameraInfo for a rectified pinhole camera: plumb_bob with D (zeros by default), R = I, P = [K | 0]."""
    from sensor_msgs.msg import CameraInfo

    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise InputError(f"intrinsics: expected a 3x3 K, got shape {K.shape}")
    msg = CameraInfo()
    _set_header(msg, header, stamp, frame_id)
    msg.width, msg.height = int(width), int(height)
    msg.distortion_model = "plumb_bob"
    msg.d = [float(x) for x in (np.zeros(5) if D is None else np.asarray(D, np.float64).ravel())]
    msg.k = [float(x) for x in K.ravel()]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg.p = [float(x) for x in P.ravel()]
    return msg


# ---------------------------------------------------------------------------------------------- robot messages
def seconds_to_time(seconds: float) -> Any:
    """builtin_interfaces/Time of ``seconds`` (>= 0), e.g. a simulated time."""
    from builtin_interfaces.msg import Time

    ns = max(0, round(float(seconds) * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def seconds_to_duration(seconds: float) -> Any:
    from builtin_interfaces.msg import Duration

    ns = max(0, round(float(seconds) * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def stamp_key(stamp: Any) -> tuple[int, int]:
    return int(stamp.sec), int(stamp.nanosec)


def stamp_seconds(stamp: Any) -> float:
    """builtin_interfaces/Time -> seconds (float)."""
    return stamp.sec + stamp.nanosec * 1e-9


def stamp_plus(stamp: Any, seconds: float) -> Any:
    """``stamp`` + ``seconds`` as a new builtin_interfaces/Time (exact in nanoseconds)."""
    from builtin_interfaces.msg import Time

    total = stamp.sec * 1_000_000_000 + stamp.nanosec + round(seconds * 1e9)
    return Time(sec=total // 1_000_000_000, nanosec=total % 1_000_000_000)


def joint_state_msg(positions: np.ndarray, names: Any, stamp: Any, frame_id: str = "") -> Any:
    """sensor_msgs/JointState with one position per name (velocity and effort left empty: not measured)."""
    from sensor_msgs.msg import JointState

    msg = JointState()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.name = list(names)
    msg.position = [float(v) for v in np.asarray(positions, dtype=np.float64)]
    return msg


def joint_state_vector(msg: Any, names: Any, where: str = "joint_states") -> np.ndarray:
    """The positions of ``names`` (in that order) from a JointState that may hold other joints too."""
    got = list(msg.name)
    pos = np.asarray(msg.position, dtype=np.float64)
    if len(pos) != len(got):
        raise InputError(f"{where}: {len(got)} names but {len(pos)} positions", kind="joint_state")
    index = {n: i for i, n in enumerate(got)}
    missing = [n for n in names if n not in index]
    if missing:
        raise InputError(f"{where}: missing joint(s) {missing[:4]}{' ...' if len(missing) > 4 else ''} "
                         f"(have {len(got)} joints: {[str(n)[:40] for n in got[:4]]}{' ...' if len(got) > 4 else ''})",
                         kind="joint_state")
    out = pos[[index[n] for n in names]]
    if not np.isfinite(out).all():
        raise InputError(f"{where}: positions of {[n for n, v in zip(names, out) if not np.isfinite(v)][:4]} are "
                         "not finite", kind="joint_state")
    return out


def joint_trajectory_msg(commands: np.ndarray, names: Any, step_s: float, stamp: Any, frame_id: str = "") -> Any:
    """trajectory_msgs/JointTrajectory: point k = ``commands[k]`` at ``(k + 1) * step_s`` after ``stamp`` (the
    camera frame the commands were computed from)."""
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    msg = JointTrajectory()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.joint_names = list(names)
    for k, row in enumerate(np.asarray(commands, dtype=np.float64)):
        msg.points.append(JointTrajectoryPoint(positions=[float(v) for v in row],
                                               time_from_start=seconds_to_duration((k + 1) * step_s)))
    return msg


def joint_trajectory_points(msg: Any) -> tuple[list[str], list[tuple[Any, float]]]:
    """(joint names, [(positions, time_from_start in s), ...]) of a JointTrajectory, for
    ``joint_command.check_trajectory``."""
    return list(msg.joint_names), [(p.positions, p.time_from_start.sec + p.time_from_start.nanosec * 1e-9)
                                   for p in msg.points]


def compressed_image_msg(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90, header: Any = None, *,
                         stamp: Any = None, frame_id: str | None = None) -> Any:
    """sensor_msgs/CompressedImage as image_transport's compressed plugin publishes an rgb8 frame
    (``compressed.encode``)."""
    from sensor_msgs.msg import CompressedImage

    from frameplan_ros import compressed

    msg = CompressedImage()
    _set_header(msg, header, stamp, frame_id)
    msg.format, data = compressed.encode(rgb, fmt, quality)
    buf = array.array("B")
    buf.frombytes(data)
    msg.data = buf
    return msg


def to_rgb(msg: Any, where: str = "image") -> np.ndarray:
    """Any camera message we accept (sensor_msgs/Image, or CompressedImage) as (H, W, 3) uint8 RGB."""
    if hasattr(msg, "format") and not hasattr(msg, "encoding"):
        from frameplan_ros import compressed

        return compressed.to_rgb(msg, where)
    return image_to_rgb(msg, where)


def tcp_path_markers(paths: np.ndarray, frame_id: str, stamp: Any, ns: str = "frameplan_command") -> Any:
    """visualization_msgs/MarkerArray: per arm a LINE_STRIP through ``paths[:, arm]`` ((P, 2, 3) world positions,
    m; left green, right orange) and a sphere at its end, for rviz."""
    from geometry_msgs.msg import Point
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    colours = (ColorRGBA(r=0.1, g=0.8, b=0.2, a=1.0), ColorRGBA(r=1.0, g=0.55, b=0.0, a=1.0))
    out = MarkerArray()
    for arm in range(2):
        line = Marker()
        line.header.stamp, line.header.frame_id = stamp, frame_id
        line.ns, line.id, line.type, line.action = ns, 2 * arm, Marker.LINE_STRIP, Marker.ADD
        line.pose.orientation.w = 1.0
        line.scale.x = 0.006
        line.color = colours[arm]
        line.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in paths[:, arm]]
        end = Marker()
        end.header = line.header
        end.ns, end.id, end.type, end.action = ns, 2 * arm + 1, Marker.SPHERE, Marker.ADD
        end.pose.orientation.w = 1.0
        end.pose.position = line.points[-1]
        end.scale.x = end.scale.y = end.scale.z = 0.02
        end.color = colours[arm]
        out.markers += [line, end]
    return out


def path_msg(poses: Any, stamp: Any, frame_id: str) -> Any:
    """nav_msgs/Path of ``poses`` (geometry_msgs/PoseStamped) with a new header."""
    from nav_msgs.msg import Path as PathMsg

    path = PathMsg()
    path.header.stamp = stamp
    path.header.frame_id = frame_id
    path.poses = list(poses)
    return path


def trajectory_markers(path: Any) -> Any:
    """visualization_msgs/MarkerArray of a nav_msgs/Path: a red -> blue LINE_STRIP through it plus a sphere at its
    end, in the path's frame (rviz)."""
    from geometry_msgs.msg import Point
    from std_msgs.msg import ColorRGBA
    from visualization_msgs.msg import Marker, MarkerArray

    n = len(path.poses)
    line = Marker()
    line.header = path.header
    line.ns, line.id, line.type, line.action = "frameplan_trajectory", 0, Marker.LINE_STRIP, Marker.ADD
    line.pose.orientation.w = 1.0
    line.scale.x = 0.005
    for i, ps in enumerate(path.poses):
        f = i / max(n - 1, 1)
        line.points.append(Point(x=ps.pose.position.x, y=ps.pose.position.y, z=ps.pose.position.z))
        line.colors.append(ColorRGBA(r=1.0 - f, g=0.0, b=f, a=1.0))
    end = Marker()
    end.header = path.header
    end.ns, end.id, end.type, end.action = "frameplan_trajectory", 1, Marker.SPHERE, Marker.ADD
    end.pose = path.poses[-1].pose
    end.scale.x = end.scale.y = end.scale.z = 0.02
    end.color = ColorRGBA(r=0.0, g=0.0, b=1.0, a=1.0)
    return MarkerArray(markers=[line, end])


def path_points(path: Any) -> np.ndarray:
    """(N, 3) positions of a nav_msgs/Path's poses."""
    return np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in path.poses], dtype=np.float64)
