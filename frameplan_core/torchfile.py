"""Read ``.ckpt``/``.pt`` pickles without running code from them, with one-line errors.

Why: a torch checkpoint is a Python pickle, and a crafted pickle runs any command when it is loaded the
ordinary way (``weights_only=False``). Every checkpoint frameplan reads (SD-1.x ``.ckpt`` files, Lightning
training checkpoints, files ``frameplan inspect`` looks at) goes through ``load`` here: torch's weights-only
unpickler, which builds tensors, numbers, strings and containers and refuses everything else. Lightning 2.x
checkpoints and ours hold nothing else, so no extra type is allow-listed."""
from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

from frameplan_core.errors import ModelError, one_line


def load(path: str | Path, where: str | None = None) -> Any:
    """The unpickled object of ``path`` (tensors on the CPU); ModelError naming ``where`` (default the path) when
    the file is unreadable or its pickle would import or call anything beyond plain data."""
    import torch

    where = where or str(path)
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        calls = unsafe_globals(path, str(exc))
        if calls:
            raise ModelError(f"{where}: refused: loading it would call {', '.join(calls[:5])}; only checkpoints "
                             "of tensors and plain values are loaded (see docs/SECURITY.md)") from None
        raise ModelError(f"{where}: cannot read the checkpoint (UnpicklingError: {one_line(exc, 200)})") from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a damaged file
        raise ModelError(f"{where}: cannot read the checkpoint ({type(exc).__name__}: {one_line(exc, 200)})") from None


def unsafe_globals(path: str | Path, message: str = "") -> list[str]:
    """What a refused pickle would have imported and called, read without running it (torch's own scan of zip
    checkpoints; for other files the first one named in torch's error ``message``)."""
    import torch

    try:
        found = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # noqa: BLE001 - not a zip checkpoint, or a torch without the scan
        found = []
    return found or re.findall(r"GLOBAL ([\w.]+)", message)[:1]
