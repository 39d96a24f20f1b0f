"""Image checks and geometry shared by every model and node. RGB uint8 (H, W, 3) at every API."""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import cv2
import numpy as np

from frameplan_core import atomic
from frameplan_core.errors import DataError, InputError

CropPolicy = Literal["center", "resize", "pad"]


def ensure_rgb_uint8(image: object, where: str = "image") -> np.ndarray:
    """Validate an HxWx3 uint8 RGB array and return it C-contiguous; errors name ``where`` and the problem.

    Grayscale (HxW / HxWx1) and RGBA are *not* silently converted here: callers that accept them convert
    explicitly (see ``to_rgb``)."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"{where}: expected a numpy array (H, W, 3) uint8 RGB, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"{where}: expected shape (H, W, 3) RGB, got {image.shape}; convert gray/RGBA with to_rgb()")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputError(f"{where}: empty image of shape {image.shape}")
    if image.dtype != np.uint8:
        raise InputError(f"{where}: expected dtype uint8 in [0, 255], got {image.dtype}")
    return np.ascontiguousarray(image)


def to_rgb(image: np.ndarray, where: str = "image") -> np.ndarray:
    """Accept gray (HxW, HxWx1), RGB or RGBA uint8 and return RGB uint8; floats/NaN are refused."""
    if not isinstance(image, np.ndarray):
        raise InputError(f"{where}: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise InputError(f"{where}: expected dtype uint8, got {image.dtype} (scale floats to [0, 255] uint8 first)")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    return ensure_rgb_uint8(image, where)


def fit(image: np.ndarray, size: int | tuple[int, int], policy: CropPolicy = "center") -> np.ndarray:
    """Map an RGB image to ``size`` (square int or (H, W)): centre crop to the aspect ratio then resize,
    plain resize (aspect distorted), or pad with black to the aspect ratio then resize."""
    th, tw = (size, size) if isinstance(size, int) else size
    if policy == "center":
        y0, x0, ch, cw = center_box(image.shape[:2], (th, tw))
        image = image[y0 : y0 + ch, x0 : x0 + cw]
    elif policy == "pad":
        image = cv2.copyMakeBorder(image, *pad_borders(image.shape[:2], (th, tw)), cv2.BORDER_CONSTANT, value=0)
    elif policy != "resize":
        raise InputError(f"crop policy {policy!r}: expected one of center, resize, pad")
    if image.shape[:2] == (th, tw):
        return np.ascontiguousarray(image)
    shrinking = image.shape[0] > th or image.shape[1] > tw
    return cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def unfit(pred: np.ndarray, original_hw: tuple[int, int], policy: CropPolicy = "center",
          background: np.ndarray | None = None) -> np.ndarray:
    """Inverse of ``fit``: map a model-resolution prediction back onto the input's geometry.

    For the centre crop, the cropped-away borders come from ``background`` (the input frame) when given."""
    h, w = original_hw
    if policy == "resize":
        return cv2.resize(pred, (w, h), interpolation=cv2.INTER_CUBIC)
    if policy == "pad":
        y0, x0, ch, cw = pad_box(pred.shape[:2], original_hw)
        return cv2.resize(pred[y0 : y0 + ch, x0 : x0 + cw], (w, h), interpolation=cv2.INTER_CUBIC)
    y0, x0, ch, cw = center_box(original_hw, pred.shape[:2])
    out = np.zeros((h, w, 3), np.uint8) if background is None else background.copy()
    out[y0 : y0 + ch, x0 : x0 + cw] = cv2.resize(pred, (cw, ch), interpolation=cv2.INTER_CUBIC)
    return out


# The crop geometry of ``fit``, shared by its inverses (``unfit``, ``unfit_map``) and by ``trajectory.fit_points``.
def center_box(src_hw: tuple[int, int], target_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, x0, h, w): the window of a ``src_hw`` image that the centre crop to ``target_hw``'s aspect ratio keeps
    (what the model sees)."""
    (h, w), (th, tw) = src_hw, target_hw
    scale = max(th / h, tw / w)
    ch, cw = min(h, round(th / scale)), min(w, round(tw / scale))
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def pad_borders(src_hw: tuple[int, int], target_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right): the black borders the ``pad`` policy adds to a ``src_hw`` image to reach
    ``target_hw``'s aspect ratio."""
    (h, w), (th, tw) = src_hw, target_hw
    ratio = tw / th
    if w / h > ratio:
        ph = round(w / ratio) - h
        return ph // 2, ph - ph // 2, 0, 0
    pw = round(h * ratio) - w
    return 0, 0, pw // 2, pw - pw // 2


def pad_box(pred_hw: tuple[int, int], original_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, x0, h, w): the window of a ``pad``-policy model image of ``pred_hw`` that shows the original image."""
    (ph, pw), (h, w) = pred_hw, original_hw
    scale = min(pw / w, ph / h)
    cw, ch = round(w * scale), round(h * scale)
    return (ph - ch) // 2, (pw - cw) // 2, ch, cw


def unfit_map(values: np.ndarray, original_hw: tuple[int, int], policy: CropPolicy = "center",
              fill: float = float("nan")) -> np.ndarray:
    """``unfit`` for a (H, W) float map (e.g. per-pixel uncertainty): the same geometry as the frame, bilinear so
    a non-negative map stays non-negative; the centre crop's cut-away borders (pixels the model never saw) get
    ``fill``."""
    values = np.ascontiguousarray(values, dtype=np.float32)
    if values.ndim != 2 or 0 in values.shape:
        raise InputError(f"unfit_map: expected a non-empty (H, W) map, got shape {values.shape}")
    h, w = original_hw
    if policy == "resize":
        return cv2.resize(values, (w, h), interpolation=cv2.INTER_LINEAR)
    if policy == "pad":
        y0, x0, ch, cw = pad_box(values.shape, original_hw)
        return cv2.resize(np.ascontiguousarray(values[y0 : y0 + ch, x0 : x0 + cw]), (w, h),
                          interpolation=cv2.INTER_LINEAR)
    if policy != "center":
        raise InputError(f"crop policy {policy!r}: expected one of center, resize, pad")
    y0, x0, ch, cw = center_box(original_hw, values.shape)
    out = np.full((h, w), fill, np.float32)
    out[y0 : y0 + ch, x0 : x0 + cw] = cv2.resize(values, (cw, ch), interpolation=cv2.INTER_LINEAR)
    return out


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (gray and RGBA converted)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise DataError(f"{path}: not a readable image (corrupt or unsupported format)")
    if img.dtype != np.uint8:
        raise DataError(f"{path}: {img.dtype} image; only 8-bit images are supported")
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def encode_image(image: np.ndarray, ext: str = ".png", quality: int = 95) -> bytes:
    image = ensure_rgb_uint8(image)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise DataError(f"could not encode image as {ext}")
    return buf.tobytes()


def gif_bytes(frames: Sequence[np.ndarray], fps: float) -> bytes:
    """An endlessly looping animated GIF of RGB uint8 frames (a plan's frames, a rollout's panels)."""
    import imageio.v3 as iio

    return iio.imwrite("<bytes>", list(frames), extension=".gif", duration=round(1000 / fps), loop=0)


def write_image(path: str | Path, image: np.ndarray, quality: int = 95) -> Path:
    """Write RGB uint8 atomically; format from the suffix (.png, .jpg)."""
    path = Path(path)
    atomic.write_bytes(path, encode_image(image, path.suffix or ".png", quality))
    return path


def hstack(images: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Side-by-side strip; images of other heights are resized to the first one's height."""
    h = images[0].shape[0]
    parts = []
    for i, im in enumerate(images):
        if im.shape[0] != h:
            im = cv2.resize(im, (round(im.shape[1] * h / im.shape[0]), h), interpolation=cv2.INTER_AREA)
        if i:
            parts.append(np.full((h, gap, 3), 255, np.uint8))
        parts.append(im)
    return np.concatenate(parts, axis=1)


def contact_sheet(images: Sequence[np.ndarray], cols: int = 4, cell: int = 160,
                  labels: Sequence[str] | None = None, gap: int = 4) -> np.ndarray:
    """Tile images (resized to ``cell`` px height keeping aspect) into a sheet with optional labels."""
    if not images:
        raise InputError("contact_sheet: no images")
    tiles = []
    for i, im in enumerate(images):
        w = max(1, round(im.shape[1] * cell / im.shape[0]))
        t = cv2.resize(np.ascontiguousarray(im), (w, cell), interpolation=cv2.INTER_AREA)
        if labels is not None and i < len(labels) and labels[i]:
            t = t.copy()
            cv2.putText(t, str(labels[i])[:40], (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 2, cv2.LINE_AA)
            cv2.putText(t, str(labels[i])[:40], (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(t)
    tw = max(t.shape[1] for t in tiles)
    rows = (len(tiles) + cols - 1) // cols
    ncols = min(cols, len(tiles))
    sheet = np.full((rows * (cell + gap) + gap, ncols * (tw + gap) + gap, 3), 255, np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = gap + r * (cell + gap), gap + c * (tw + gap)
        sheet[y : y + cell, x : x + t.shape[1]] = t
    return sheet
