"""Read a JSON file or raise one clear error naming it (the reading side of ``atomic.write_json``).

Why: configs, checkpoints' side files, datasets' indexes and episodes' side files are all JSON; each reader used to
catch its own subset of the ways that goes wrong (missing, unreadable, not UTF-8, not JSON, not an object) and let
the rest out as a traceback."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from frameplan_core.errors import DataError, FrameplanError

_KIND_NAMES = {dict: "a JSON object", list: "a JSON array"}


def read_json(path: str | Path, error: type[FrameplanError] = DataError, kind: type | None = dict,
              missing: str = "not found", what: str | None = None) -> Any:
    """The JSON value in ``path``, which must be a ``kind`` (dict: an object, the default; list; None: anything).

    Every failure raises ``error`` whose message starts with the path: ``missing`` when the file does not exist
    (say what to do about it), then unreadable, not UTF-8 (``what`` names the file's role), invalid JSON, or the
    wrong kind of value."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise error(f"{path}: {missing}") from None
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what + ' is ' if what else ''}not UTF-8 (byte {exc.start}: "
                    f"{raw[exc.start:exc.start + 1]!r})") from None
    try:
        data = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and numbers too long to convert
        raise error(f"{path}: invalid JSON ({exc})") from None
    if kind is not None and not isinstance(data, kind):
        raise error(f"{path}: expected {_KIND_NAMES.get(kind, kind.__name__)}, got {type(data).__name__}")
    return data
