"""``frameplan eval``: a trained predictor or planner against the copy-the-input baseline on the *held-out* split
(episodes never trained on: ``test`` when the dataset has one, else ``val``), per task, with SSIM/PSNR over the
whole frame and over the changed region (frameplan_core.metrics), and instruction generalisation (the dataset's
seen-template instructions vs the tasks' unseen paraphrases on the same samples).

Planner extras: per-frame-index metrics over the 9 frames (frame 1 is the observed input, so it is listed but
left out of the means), one evaluation per modality (text, trajectory, both when the data has end-effector
tracks), and the *motion-centroid error*: for frames 2..9, the distance in pixels between the centroid of the
pixels that changed from frame 1 (largest channel difference > threshold) in the generated frame and in the
ground-truth frame. It measures whether the moving arm/object ends up where it should; it is a proxy for the
end-effector position (the arm is the largest moving part), since the generated frames carry no pose labels.

Outputs in ``out``: ``report.md``, ``metrics.json`` and ``comparison.png`` (rows: tasks; columns: input,
generated, ground truth)."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from frameplan_training import report
from frameplan_training.datamodule import available_splits

from frameplan_core import atomic, grid, metrics
from frameplan_core.data.instructions import TEMPLATES, canonical_task, pick
from frameplan_core.errors import DataError
from frameplan_core.image import contact_sheet, fit, write_image

log = logging.getLogger(__name__)

ALL = "all tasks"


def held_out_split(data: str | Path, split: str = "auto") -> str:
    """``test`` if non-empty else ``val``; an explicit split must be held out (never ``train``)."""
    counts = available_splits(data)
    if split == "auto":
        for s in ("test", "val"):
            if counts.get(s):
                return s
        raise DataError(f"{data}: no held-out episodes (val and test splits are empty: {counts}); convert with a "
                        "val/test fraction so that evaluation uses episodes never seen in training")
    if split == "train":
        raise DataError("evaluation runs on held-out episodes only; --split must be val, test or auto")
    if not counts.get(split):
        raise DataError(f"{data}: split {split!r} is empty or missing ({counts})")
    return split


def unseen_instruction(task: str, key: str, seed: int) -> str | None:
    """An unseen paraphrase for ``task`` (None for tasks without templates)."""
    t = TEMPLATES.get(canonical_task(task))
    return pick(t["unseen"], seed, f"unseen/{key}") if t and t.get("unseen") else None


def _summaries(rows: list[dict], keys: list[str]) -> dict[str, dict]:
    tasks = sorted({r["task"] for r in rows})
    out: dict[str, dict] = {}
    for task in tasks + [ALL]:
        sel = [r for r in rows if task == ALL or r["task"] == task]
        out[task] = {k: metrics.summarize([r[k] for r in sel if k in r]) for k in keys
                     if any(k in r for r in sel)}
    return out


def _figure(examples: dict[str, tuple], out: Path, name: str = "comparison.png") -> Path:
    """Rows: tasks; columns: input, generated, ground truth."""
    images, labels = [], []
    for task, (a, g, t) in examples.items():
        images += [a, g, t]
        labels += [f"{task}: input", "generated", "ground truth"]
    height = max(128, max(a.shape[0] for a, _, _ in examples.values()))  # small models: upscale for viewing
    sheet = contact_sheet(images, cols=3, cell=height, labels=labels)
    return write_image(out / name, sheet)


def _clean(obj: Any) -> Any:
    """JSON-safe: inf/nan -> None, numpy scalars -> float."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _batches(n: int, size: int):
    for k in range(0, n, size):
        yield list(range(k, min(n, k + size)))


# ---------------------------------------------------------------- predictor
def evaluate_predictor(model: str | Path, data: str | Path, out: str | Path, split: str = "auto",
                       steps: int | None = None, text_scale: float | None = None, image_scale: float | None = None,
                       samples: int | None = None, seed: int = 0, batch_size: int = 8, max_samples: int | None = None,
                       threshold: int = metrics.DEFAULT_THRESHOLD, dilate: int = metrics.DEFAULT_DILATE,
                       device: str = "auto", predictor: Any = None,
                       progress: Callable[[int, int], None] | None = None) -> dict:
    from frameplan_training.datasets import PairDataset

    from frameplan_core.predictor import FramePredictor

    data, out = Path(data), Path(out)
    split = held_out_split(data, split)
    p = predictor if predictor is not None else FramePredictor.from_pretrained(model, device=device)
    res = p.config.resolution
    ds = PairDataset(data, split, res, res, max_bad=0)
    n = len(ds) if max_samples is None else min(len(ds), max_samples)
    t0 = time.perf_counter()
    rows: list[dict] = []
    examples: dict[str, tuple] = {}
    for idx in _batches(n, batch_size):
        items = [ds.sample(pos) for pos in idx]
        inputs = [fit(s.input, res, p.config.crop) for _, s in items]
        targets = [fit(s.output, res, p.config.crop) for _, s in items]
        tasks = [str(s.meta.get("task", "")) or "unknown" for _, s in items]
        seen = [s.edit for _, s in items]
        unseen = [unseen_instruction(t, s.id, seed) for t, (_, s) in zip(tasks, items)]
        kw = {"steps": steps, "text_scale": text_scale, "image_scale": image_scale, "seed": seed, "samples": samples}
        preds = p.predict_batch(inputs, seen, **kw)
        has_u = [k for k, u in enumerate(unseen) if u]
        preds_u = dict(zip(has_u, p.predict_batch([inputs[k] for k in has_u], [unseen[k] for k in has_u], **kw))) \
            if has_u else {}
        for k, (_, s) in enumerate(items):
            row = {"id": s.id, "task": tasks[k], "instruction": seen[k],
                   "model": metrics.frame_metrics(preds[k], targets[k], inputs[k], threshold, dilate),
                   "baseline": metrics.frame_metrics(inputs[k], targets[k], inputs[k], threshold, dilate)}
            if k in preds_u:
                row["unseen_instruction"] = unseen[k]
                row["unseen"] = metrics.frame_metrics(preds_u[k], targets[k], inputs[k], threshold, dilate)
            rows.append(row)
            examples.setdefault(tasks[k], (inputs[k], preds[k], targets[k]))
        if progress:
            progress(len(rows), n)
    if not rows:
        raise DataError(f"{data}: no samples in split {split!r}")
    seconds = time.perf_counter() - t0
    per_task = _summaries(rows, ["model", "baseline", "unseen"])
    settings = {"steps": steps or p.config.sampling.steps, "sampler": p.config.sampling.sampler,
                "text_scale": text_scale if text_scale is not None else p.config.sampling.text_scale,
                "image_scale": image_scale if image_scale is not None else p.config.sampling.image_scale,
                "samples": samples if samples is not None else p.config.sampling.samples,
                "seed": seed, "resolution": res, "threshold": threshold, "dilate": dilate}
    result = {"kind": "predictor", "model": str(model), "data": str(data), "split": split, "num_samples": len(rows),
              "settings": settings, "seconds": round(seconds, 2), "per_task": per_task, "samples": rows}
    _write_outputs(result, out, examples, _predictor_report(result))
    return result


def _samples_words(n: int) -> str:
    return "one sample" if n == 1 else f"per-pixel mean of {n} samples"


def _predictor_report(r: dict) -> str:
    s = r["settings"]
    per_task = r["per_task"]
    lines = [
        "# Frame predictor evaluation", "",
        f"- model: `{r['model']}`", (f"- data: `{r['data']}`, held-out split **{r['split']}** "
        f"({r['num_samples']} samples, episodes never used for training)"),
        (f"- sampling: {s['sampler']}, {s['steps']} steps, s_T {s['text_scale']}, s_I {s['image_scale']}, "
        f"{_samples_words(s.get('samples', 1))}, seed {s['seed']}, {s['resolution']}² model resolution"),
        f"- time: {r['seconds']} s", "",
        "## Table 2 (per task): model vs copy-the-input baseline", "",
        ("SSIM (Wang et al.: 11x11 gaussian window, sigma 1.5) and PSNR (dB, MAX 255) over the whole frame and over the "
        f"**changed region** (pixels whose input→target difference exceeds {s['threshold']}/255, dilated by "
        f"{s['dilate']} px). *copy* = the input frame returned unchanged; Δ = model − copy in the changed region."), "",
        report.main_table(per_task), "",
        "## Instruction generalisation (same samples): seen templates vs unseen paraphrases", "",
        report.generalisation_table(per_task), "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- planner
def motion_centroid(frame: np.ndarray, first: np.ndarray, threshold: int) -> np.ndarray | None:
    """Centroid (x, y) of the pixels that changed from ``first``; None when nothing changed."""
    ys, xs = np.nonzero(np.abs(frame.astype(np.int16) - first.astype(np.int16)).max(axis=-1) > threshold)
    return np.array([xs.mean(), ys.mean()]) if len(xs) else None


def _plan_metrics(frames: list[np.ndarray], gt: list[np.ndarray], threshold: int, dilate: int,
                  with_centroid: bool) -> dict[str, Any]:
    first = gt[0]
    per = [metrics.frame_metrics(f, g, first, threshold, dilate) for f, g in zip(frames, gt)]
    mean = {k: float(np.nanmean([min(p[k], metrics.PSNR_CAP) if k.startswith("psnr") else p[k] for p in per[1:]]))
            if any(not math.isnan(p[k]) for p in per[1:]) else math.nan for k in per[1]}
    out: dict[str, Any] = {"mean": mean, "per_frame": per}
    if with_centroid:
        d = []
        for f, g in zip(frames[1:], gt[1:]):
            a, b = motion_centroid(f, first, threshold), motion_centroid(g, first, threshold)
            if a is not None and b is not None:
                d.append(float(np.linalg.norm(a - b)))
        out["centroid_error_px"] = float(np.mean(d)) if d else math.nan
    return out


def evaluate_planner(model: str | Path, data: str | Path, out: str | Path, split: str = "auto",
                     steps: int | None = None, guidance: float | None = None, samples: int | None = None, seed: int = 0,
                     max_samples: int | None = None, threshold: int = metrics.DEFAULT_THRESHOLD,
                     dilate: int = metrics.DEFAULT_DILATE, device: str = "auto", planner: Any = None,
                     progress: Callable[[int, int], None] | None = None) -> dict:
    from frameplan_training.datasets import GridSampleDataset, grid_example

    from frameplan_core.planner import GridPlanner
    from frameplan_core.trajectory import Trajectory

    data, out = Path(data), Path(out)
    split = held_out_split(data, split)
    g = planner if planner is not None else GridPlanner.from_pretrained(model, device=device)
    cell = g.config.cell_size
    ds = GridSampleDataset(data, split, cell, thickness=g.config.thickness, max_bad=0)
    n = len(ds) if max_samples is None else min(len(ds), max_samples)
    t0 = time.perf_counter()
    rows: list[dict] = []
    examples: dict[str, tuple] = {}
    per_frame_rows: dict[str, list[list[dict]]] = {}
    for pos in range(n):
        ex = grid_example(ds, pos)
        task = ex["task"] or "unknown"
        gt = ex["frames"]
        traj = Trajectory(ex["trajectory"], (cell, cell)) if ex["trajectory"] is not None else None
        modes = {"text": (ex["text"], None)}
        if traj is not None:
            modes.update({"trajectory": (None, traj), "both": (ex["text"], traj)})
        u = unseen_instruction(task, f"{pos}/{ex['index']}", seed)
        if u:
            modes["unseen"] = (u, None)
        row: dict[str, Any] = {"id": ex["index"], "task": task, "instruction": ex["text"]}
        base = _plan_metrics([gt[0]] * 9, gt, threshold, dilate, False)
        row["baseline"] = base["mean"]
        per_frame_rows.setdefault("copy", []).append(base["per_frame"])
        for mode, (text, tr) in modes.items():
            plan = g.plan(gt[0], instruction=text, trajectory=tr, steps=steps, guidance=guidance, seed=seed,
                          samples=samples)
            m = _plan_metrics(plan.frames[:9], gt, threshold, dilate, tr is not None)
            row[mode] = m["mean"]
            if "centroid_error_px" in m:
                row[f"{mode}_centroid_error_px"] = m["centroid_error_px"]
            per_frame_rows.setdefault(mode, []).append(m["per_frame"])
            if mode == ("both" if traj is not None else "text"):
                examples.setdefault(task, (plan.conditioning, plan.grid, grid.compose(gt)))
        rows.append(row)
        if progress:
            progress(len(rows), n)
    if not rows:
        raise DataError(f"{data}: no samples in split {split!r}")
    seconds = time.perf_counter() - t0
    modes_present = [m for m in ("text", "trajectory", "both", "unseen") if any(m in r for r in rows)]
    per_task = _summaries(rows, modes_present + ["baseline"])
    for task, d in per_task.items():
        for mode in ("trajectory", "both"):
            vals = [r[f"{mode}_centroid_error_px"] for r in rows if f"{mode}_centroid_error_px" in r
                    and (task == ALL or r["task"] == task) and not math.isnan(r[f"{mode}_centroid_error_px"])]
            if vals:
                d[f"{mode}_centroid_error_px"] = float(np.mean(vals))
    per_frame = {mode: [metrics.summarize([s[k] for s in mode_rows]) for k in range(9)]
                 for mode, mode_rows in per_frame_rows.items()}
    settings = {"steps": steps or g.config.steps, "guidance": guidance if guidance is not None else g.config.guidance,
                "samples": samples if samples is not None else g.config.samples,
                "seed": seed, "cell_size": cell, "threshold": threshold, "dilate": dilate}
    result = {"kind": "planner", "model": str(model), "data": str(data), "split": split, "num_samples": len(rows),
              "settings": settings, "seconds": round(seconds, 2), "modes": modes_present, "per_task": per_task,
              "per_frame": per_frame, "samples": rows}
    _write_outputs(result, out, examples, _planner_report(result))
    return result


def _planner_report(r: dict) -> str:
    s = r["settings"]
    per_task = r["per_task"]
    lines = [
        "# Grid planner evaluation", "",
        f"- model: `{r['model']}`", (f"- data: `{r['data']}`, held-out split **{r['split']}** "
        f"({r['num_samples']} samples)"),
        (f"- sampling: {s['steps']} steps, guidance {s['guidance']}, {_samples_words(s.get('samples', 1))}, "
         f"seed {s['seed']}, {s['cell_size']} px cells"),
        f"- time: {r['seconds']} s", "",
        ("Metrics are the means over frames 2–9 of each plan (frame 1 is the observed input). Changed region: "
        f"pixels of frame k that differ from frame 1 by more than {s['threshold']}/255 in the ground truth, dilated "
        f"by {s['dilate']} px. *copy* = frame 1 repeated nine times."), "",
    ]
    for mode in r["modes"]:
        if mode == "unseen":
            continue
        lines += [f"## Table 2 (per task), conditioning: {mode}", "", report.main_table(per_task, mode), ""]
        cents = {t: d.get(f"{mode}_centroid_error_px") for t, d in per_task.items()}
        if any(v is not None for v in cents.values()):
            lines += ["Motion-centroid error (end-effector proxy; px at "
                      f"{s['cell_size']} px cells): " + ", ".join(f"{t} {v:.1f}" for t, v in cents.items()
                                                                   if v is not None), ""]
    if "unseen" in r["modes"]:
        lines += ["## Instruction generalisation (text conditioning): seen templates vs unseen paraphrases", "",
                  report.generalisation_table(per_task, "text", "unseen"), ""]
    order = [m for m in ("text", "trajectory", "both", "copy") if m in r["per_frame"]]
    lines += ["## Per frame index (all tasks)", "", report.per_frame_table({m: r["per_frame"][m] for m in order}), ""]
    return "\n".join(lines)


def _write_outputs(result: dict, out: Path, examples: dict[str, tuple], text: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    fig = _figure(dict(sorted(examples.items())[:3]), out)
    result["figure"] = str(fig)
    atomic.write_text(out / "report.md", text + f"\n![comparison]({fig.name})\n")
    atomic.write_json(out / "metrics.json", _clean(result))
    log.info("evaluation written to %s (report.md, metrics.json, %s)", out, fig.name)

