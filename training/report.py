"""eval/report.md: markdown tables in the shape of seed 000's Table 2 (one row per task, SSIM and PSNR), extended
with the copy-the-input baseline beside every number, the changed-region columns first, the sharpness ratio, the
instruction-generalisation table (seen templates vs unseen paraphrases), and for the planner the per-frame-index
table."""
from __future__ import annotations

import math
from typing import Any


def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def main_table(per_task: dict[str, dict], model_key: str = "model") -> str:
    """Rows: tasks + mean. Columns, model beside copy-the-input: changed-region PSNR/SSIM and the model's gain (Δ),
    whole-frame PSNR/SSIM, and the changed-region sharpness ratio (prediction ÷ ground truth)."""
    header = ["Task", "n", "PSNR chg ↑", "PSNR chg copy", "Δ PSNR chg", "SSIM chg ↑", "SSIM chg copy", "Δ SSIM chg",
              "PSNR ↑", "PSNR copy", "SSIM ↑", "SSIM copy", "sharpness", "sharpness copy"]
    rows = []
    for task, d in per_task.items():
        m, b = d[model_key], d["baseline"]
        rows.append([task, str(m["n"]), _f(m["psnr_changed"], 2), _f(b["psnr_changed"], 2),
                     _f(m["psnr_changed"] - b["psnr_changed"], 2), _f(m["ssim_changed"]), _f(b["ssim_changed"]),
                     _f(m["ssim_changed"] - b["ssim_changed"]), _f(m["psnr"], 2), _f(b["psnr"], 2), _f(m["ssim"]),
                     _f(b["ssim"]), _f(m.get("sharpness_changed"), 2), _f(b.get("sharpness_changed"), 2)])
    return _table(header, rows)


def generalisation_table(per_task: dict[str, dict], seen_key: str = "model", unseen_key: str = "unseen") -> str:
    header = ["Task", "n", "PSNR seen", "PSNR unseen", "PSNR chg seen", "PSNR chg unseen", "Δ PSNR chg (unseen − seen)",
              "SSIM chg seen", "SSIM chg unseen", "sharpness seen", "sharpness unseen"]
    rows = []
    for task, d in per_task.items():
        if unseen_key not in d:
            continue
        s, u = d[seen_key], d[unseen_key]
        rows.append([task, str(u["n"]), _f(s["psnr"], 2), _f(u["psnr"], 2), _f(s["psnr_changed"], 2),
                     _f(u["psnr_changed"], 2), _f(u["psnr_changed"] - s["psnr_changed"], 2),
                     _f(s["ssim_changed"]), _f(u["ssim_changed"]), _f(s.get("sharpness_changed"), 2),
                     _f(u.get("sharpness_changed"), 2)])
    return _table(header, rows)


def per_frame_table(per_frame: dict[str, list[dict]]) -> str:
    """Rows: frame index 1..9; columns per series (e.g. text, baseline): SSIM / PSNR chg."""
    names = list(per_frame)
    header = ["Frame"] + [f"{n} SSIM" for n in names] + [f"{n} PSNR" for n in names] + \
             [f"{n} PSNR chg" for n in names]
    rows = []
    for k in range(len(per_frame[names[0]])):
        r = [str(k + 1)]
        r += [_f(per_frame[n][k]["ssim"]) for n in names]
        r += [_f(per_frame[n][k]["psnr"], 2) for n in names]
        r += [_f(per_frame[n][k]["psnr_changed"], 2) for n in names]
        rows.append(r)
    return _table(header, rows)
