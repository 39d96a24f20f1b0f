"""sensor_msgs/CompressedImage as image_transport's ``compressed`` plugin writes and reads it (JPEG or PNG).

``format`` conventions (compressed_image_transport): ``"<raw encoding>; <jpeg|png> compressed <encoding of the
compressed pixels>"``, e.g. ``"rgb8; jpeg compressed bgr8"`` (colour is compressed from BGR pixels, so OpenCV's
decoder gives them back in BGR order), ``"mono8; jpeg compressed "`` (grey). A format without ``;`` comes from
old publishers: 3 channels are BGR, 1 is grey. ``compressedDepth`` (the depth plugin) and 16-bit images are
not colour camera input and are refused.

Checks before decoding (``check``, cheap, in the subscription callback): the format string, a JPEG or PNG
signature, and the image size from the JPEG frame header / PNG IHDR, at most ``MAX_PIXELS``, so that a small
message cannot make the decoder allocate gigabytes. ``to_rgb`` decodes (in the worker); data that does not
decode is an InputError like a bad raw image."""
from __future__ import annotations

import struct
from typing import Any

import cv2
import numpy as np

from frameplan_core.errors import InputError, one_line

FORMATS = ("jpeg", "png")
MAX_PIXELS = 4096 * 4096  # a decoded frame of at most 48 MB (RGB); a D435 colour frame is 1920x1080 at most
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_COLOR = ("rgb8", "bgr8", "rgba8", "bgra8")
_GREY = ("mono8", "8UC1")


def _fmt(msg: Any) -> str:
    return one_line(msg.format, 80)


def _parse_format(fmt: str, where: str) -> tuple[str | None, str | None]:
    """(raw encoding or None for an old-style format, 'bgr'|'rgb'|None = the order of the compressed pixels)."""
    if ";" not in fmt:
        if fmt.strip().lower() not in ("", "jpeg", "jpg", "png"):
            raise InputError(f"{where}: unsupported format {one_line(fmt, 80)!r}; expected e.g. 'rgb8; jpeg compressed "
                             "bgr8' (image_transport compressed, jpeg or png)", kind="bad_compressed")
        return None, None
    raw, rest = (part.strip() for part in fmt.split(";", 1))
    rest_l = rest.lower()
    if "compresseddepth" in rest_l.replace(" ", ""):
        raise InputError(f"{where}: format {one_line(fmt, 80)!r} is compressedDepth (a depth image), not a colour "
                         "camera image", kind="bad_compressed")
    if not any(f"{f} compressed" in rest_l for f in FORMATS):
        raise InputError(f"{where}: unsupported format {one_line(fmt, 80)!r}; accepted: jpeg or png compressed",
                         kind="bad_compressed")
    if raw not in _COLOR + _GREY:
        raise InputError(f"{where}: format {one_line(fmt, 80)!r}: raw encoding {one_line(raw, 40)!r} is not an 8-bit "
                         f"colour or grey image; accepted: {list(_COLOR + _GREY)}", kind="bad_compressed")
    target = rest_l.split("compressed", 1)[1].strip()
    order = "rgb" if target.startswith("rgb") else "bgr"  # "compressed bgr8", or nothing (grey): OpenCV's BGR
    return raw, order


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF marker, None if none is found in a well-formed marker sequence."""
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        if length < 2:
            return None
        i += 2 + length
    return None


def check(msg: Any, where: str = "compressed image") -> tuple[int, int]:
    """Validate a CompressedImage without decoding it; returns its (width, height)."""
    blob = _as_bytes(msg.data)
    n = len(blob)
    if n == 0:
        raise InputError(f"{where}: empty image (0 data bytes)", kind="bad_compressed")
    _parse_format(msg.format, where)
    head = blob[:64]
    if head.startswith(_PNG_MAGIC):
        if n < 24 or head[12:16] != b"IHDR":
            raise InputError(f"{where}: PNG data without an IHDR header ({n} bytes); corrupt image", kind="bad_compressed")
        w, h = struct.unpack(">II", head[16:24])
    elif head.startswith(_JPEG_MAGIC):
        size = _jpeg_size(blob)
        if size is None:
            raise InputError(f"{where}: JPEG data without a frame header ({n} bytes); corrupt image", kind="bad_compressed")
        w, h = size
    else:
        raise InputError(f"{where}: data is neither JPEG nor PNG (starts with {head[:8].hex()}; format "
                         f"{_fmt(msg)!r}); corrupt or unsupported image", kind="bad_compressed")
    if w == 0 or h == 0:
        raise InputError(f"{where}: empty image (width={w}, height={h})", kind="bad_compressed")
    if w * h > MAX_PIXELS:
        raise InputError(f"{where}: {w}x{h} image is larger than {MAX_PIXELS} pixels; refused before decoding",
                         kind="bad_compressed")
    return int(w), int(h)


def _as_bytes(data: Any) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)) or hasattr(data, "typecode"):  # array.array('B') from rclpy
        return bytes(data)
    return np.asarray(data, dtype=np.uint8).tobytes()  # a list


def to_rgb(msg: Any, where: str = "compressed image") -> np.ndarray:
    """Decode to (H, W, 3) uint8 RGB (``check`` first; corrupt data is an InputError)."""
    w, h = check(msg, where)
    raw, order = _parse_format(msg.format, where)
    buf = np.frombuffer(_as_bytes(msg.data), dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InputError(f"{where}: data does not decode ({len(buf)} bytes, format {_fmt(msg)!r}); corrupt image",
                         kind="bad_compressed")
    if img.dtype != np.uint8:
        raise InputError(f"{where}: {img.dtype} pixels; only 8-bit colour or grey images are accepted", kind="bad_compressed")
    if img.shape[:2] != (h, w):
        raise InputError(f"{where}: decoded {img.shape[1]}x{img.shape[0]}, header says {w}x{h}; corrupt image",
                         kind="bad_compressed")
    if img.ndim == 2 or img.shape[2] == 1:
        return cv2.cvtColor(img.reshape(h, w), cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB if order != "rgb" else cv2.COLOR_RGBA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if order != "rgb" else np.ascontiguousarray(img)


def encode(rgb: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> tuple[str, bytes]:
    """(format string, data) of an RGB uint8 frame as compressed_image_transport publishes an rgb8 image."""
    if fmt not in FORMATS:
        raise InputError(f"compressed format {fmt!r}: expected one of {list(FORMATS)}")
    bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", bgr, params)
    if not ok:
        raise InputError(f"could not encode a {rgb.shape} frame as {fmt}")
    return f"rgb8; {fmt} compressed bgr8", buf.tobytes()


__all__ = ["FORMATS", "MAX_PIXELS", "check", "encode", "to_rgb"]
