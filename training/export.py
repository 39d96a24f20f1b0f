"""Shrink an exported model folder: rewrite its safetensors weights in fp16 where that is safe.

"Safe" per tensor: every value is finite and within fp16's normal range after the cast, and the relative error
of the tensor (||w16 - w|| / ||w||) is below ``tol``; anything else stays fp32. The core loaders cast weights to
the runtime dtype (fp32 on CPU, bf16/fp16 on GPU), so storage precision only costs the rounding."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from frameplan_core import atomic

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
FP16_TINY = 6.1e-5  # smallest normal fp16; smaller non-zero magnitudes lose precision as subnormals


def _safe_fp16(t: torch.Tensor, tol: float) -> bool:
    if not t.is_floating_point() or t.dtype == torch.float16 or t.numel() == 0:
        return False
    t32 = t.float()
    if not torch.isfinite(t32).all() or t32.abs().max() > FP16_MAX:
        return False
    norm = t32.norm()
    if norm == 0:
        return True
    return float((t32.half().float() - t32).norm() / norm) < tol


def to_fp16_where_safe(folder: str | Path, tol: float = 1e-3) -> dict[str, int]:
    """Rewrite every ``*.safetensors`` under ``folder`` in place; returns counts of fp16/fp32 tensors."""
    from safetensors import safe_open
    from safetensors.torch import save

    counts = {"fp16": 0, "kept": 0, "bytes_before": 0, "bytes_after": 0}
    for path in sorted(Path(folder).rglob("*.safetensors")):
        with safe_open(str(path), "pt") as f:  # keep the header metadata: a LoRA's alpha/rank live there
            metadata = f.metadata()
            sd = {k: f.get_tensor(k) for k in f.keys()}
        out = {}
        for k, v in sd.items():
            if _safe_fp16(v, tol):
                out[k] = v.half().contiguous()
                counts["fp16"] += 1
            else:
                out[k] = v.contiguous()
                counts["kept"] += 1
        counts["bytes_before"] += path.stat().st_size
        atomic.write_bytes(path, save(out, metadata=metadata))
        counts["bytes_after"] += path.stat().st_size
    log.info("fp16 export of %s: %d tensors fp16, %d kept, %.1f MB -> %.1f MB", folder, counts["fp16"],
             counts["kept"], counts["bytes_before"] / 1e6, counts["bytes_after"] / 1e6)
    return counts
