"""``frameplan eval``: a trained predictor or planner against the copy-the-input baseline on the *held-out* split
(episodes never trained on: ``test`` when the dataset has one, else ``val``), per task, with SSIM/PSNR over the
whole frame and over the changed region and the changed-region sharpness ratio (frameplan_core.metrics), and
instruction generalisation (the dataset's seen instructions vs unseen paraphrases on the same samples).

Predictor geometries: **published** — the stored frames at their stored size (a dataset converted without
``--size`` keeps the camera's full frame) against what the foresight node publishes, ``predict(...,
output_size="input")``; **model_res** — input, target and prediction at the model's resolution (frames fitted with
the model's crop policy). Every sample also records its pair kind (``interval`` / ``segment``, from the dataset),
and the report breaks the published scores down by kind when a dataset has both; a segment pair is predicted with
its own (step) instruction and its unseen paraphrase comes from the step's table.

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
from frameplan_core.data.instructions import TEMPLATES, canonical_task, pick, step_paraphrases
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


def unseen_instruction(task: str, key: str, seed: int, meta: dict | None = None) -> str | None:
    """An unseen paraphrase of the sample's instruction: of its motion step for a segment pair (``meta.pairing``
    ``segment``), else of its task; None when there is none (a step or task the tables do not know)."""
    if meta and meta.get("pairing") == "segment":
        step = step_paraphrases(str((meta.get("segment") or {}).get("instruction", "")))
        return pick(step["unseen"], seed, f"unseen/{key}") if step and step.get("unseen") else None
    t = TEMPLATES.get(canonical_task(task))
    return pick(t["unseen"], seed, f"unseen/{key}") if t and t.get("unseen") else None


def _summaries(rows: list[dict], keys: list[str], section: str | None = None) -> dict[str, dict]:
    """Per task and for all tasks, ``metrics.summarize`` of each series in ``keys`` (found in ``row[section]`` when
    a section is given, e.g. one geometry)."""
    tasks = sorted({r["task"] for r in rows})
    out: dict[str, dict] = {}
    for task in tasks + [ALL]:
        sel = [r if section is None else r[section] for r in rows if task == ALL or r["task"] == task]
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
GEOMETRIES = ("published", "model_res")


def pairing_of(meta: dict, params: dict) -> str:
    """A sample's pair kind: ``meta.pairing`` (frameplan convert since --pairing), else ``interval`` for our older
    datasets (their params record an interval), else ``unknown`` (datasets made elsewhere)."""
    if meta.get("pairing"):
        return str(meta["pairing"])
    return "interval" if "interval" in params else "unknown"


class _TwoGeometries:
    """Each batch's predictions at model resolution and at the published geometry.

    The published frame must be exactly what the foresight node publishes: ``predict_batch(...,
    output_size="input")``. For a model whose published frame is ``preprocess.back_to_input`` of its model-resolution
    output, one sampling run gives both; the first batch runs both calls and checks that, and only then later
    batches derive the published frame. Otherwise (e.g. composition at the input geometry) every batch samples
    twice, with the same seed."""

    def __init__(self, predictor: Any) -> None:
        self.p = predictor
        self.derive: bool | None = None  # decided on the first batch

    def __call__(self, images: list[np.ndarray], texts: list[str], kw: dict) -> tuple[list, list]:
        from frameplan_core.predictor import preprocess

        at_model = self.p.predict_batch(images, texts, output_size="model", **kw)
        derived = [preprocess.back_to_input(o, im, self.p.config.crop) for o, im in zip(at_model, images)] \
            if self.derive is not False else []
        if self.derive:
            return at_model, derived
        published = self.p.predict_batch(images, texts, output_size="input", **kw)
        if self.derive is None:
            self.derive = all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(derived, published))
            log.info("published-geometry predictions: %s", "derived from the model-resolution ones (checked equal)"
                     if self.derive else "sampled separately (they differ from the mapped model-resolution ones)")
        return at_model, published

    def describe(self) -> str:
        if self.derive:
            return ("preprocess.back_to_input of the model-resolution prediction (checked identical to "
                    "predict(output_size='input') on the first batch)")
        return "predict(output_size='input') on every batch (the published frame is not a mapped model output)"


def _wh(hw: tuple[int, int] | list[int]) -> str:
    return f"{hw[1]}x{hw[0]}"


def evaluate_predictor(model: str | Path, data: str | Path, out: str | Path, split: str = "auto",
                       steps: int | None = None, text_scale: float | None = None, image_scale: float | None = None,
                       samples: int | None = None, seed: int = 0, batch_size: int = 8, max_samples: int | None = None,
                       threshold: int = metrics.DEFAULT_THRESHOLD, dilate: int = metrics.DEFAULT_DILATE,
                       device: str = "auto", predictor: Any = None,
                       progress: Callable[[int, int], None] | None = None) -> dict:
    """Scores at two geometries, each with its copy-the-input baseline: ``published`` = the stored frames as they
    are (a dataset converted without ``--size`` keeps the camera's frame, e.g. 320x240) against the frame the node
    publishes; ``model_res`` = input, target and prediction at the model's resolution (the frames fitted with the
    model's crop policy: the only numbers this report gave before the published geometry was added)."""
    from frameplan_training.datasets import PairDataset

    from frameplan_core.predictor import FramePredictor

    data, out = Path(data), Path(out)
    split = held_out_split(data, split)
    p = predictor if predictor is not None else FramePredictor.from_pretrained(model, device=device)
    res, crop = p.config.resolution, p.config.crop
    ds = PairDataset(data, split, res, res, max_bad=0)
    params = dict(ds.reader.info.get("params") or {})
    n = len(ds) if max_samples is None else min(len(ds), max_samples)
    predict = _TwoGeometries(p)
    t0 = time.perf_counter()
    rows: list[dict] = []
    examples: dict[str, tuple] = {}

    def scores(pred, target, inp) -> dict:
        return metrics.frame_metrics(pred, target, inp, threshold, dilate)

    for idx in _batches(n, batch_size):
        items = [s for _, s in (ds.sample(pos) for pos in idx)]
        inputs, targets = [s.input for s in items], [s.output for s in items]  # stored size: the published geometry
        tasks = [str(s.meta.get("task", "")) or "unknown" for s in items]
        seen = [s.edit for s in items]
        unseen = [unseen_instruction(t, s.id, seed, s.meta) for t, s in zip(tasks, items)]
        kw = {"steps": steps, "text_scale": text_scale, "image_scale": image_scale, "seed": seed, "samples": samples}
        at_model, published = predict(inputs, seen, kw)
        has_u = [k for k, u in enumerate(unseen) if u]
        u_model, u_pub = predict([inputs[k] for k in has_u], [unseen[k] for k in has_u], kw) if has_u else ([], [])
        u_model, u_pub = dict(zip(has_u, u_model)), dict(zip(has_u, u_pub))
        for k, s in enumerate(items):
            hw = at_model[k].shape[:2]
            mi, mt = fit(inputs[k], hw, crop), fit(targets[k], hw, crop)
            row = {"id": s.id, "task": tasks[k], "pairing": pairing_of(s.meta, params), "instruction": seen[k],
                   "published_hw": list(inputs[k].shape[:2]), "model_hw": list(hw),
                   "published": {"model": scores(published[k], targets[k], inputs[k]),
                                 "baseline": scores(inputs[k], targets[k], inputs[k])},
                   "model_res": {"model": scores(at_model[k], mt, mi), "baseline": scores(mi, mt, mi)}}
            if k in u_pub:
                row["unseen_instruction"] = unseen[k]
                row["published"]["unseen"] = scores(u_pub[k], targets[k], inputs[k])
                row["model_res"]["unseen"] = scores(u_model[k], mt, mi)
            rows.append(row)
            examples.setdefault(tasks[k], (inputs[k], published[k], targets[k]))
        if progress:
            progress(len(rows), n)
    if not rows:
        raise DataError(f"{data}: no samples in split {split!r}")
    seconds = time.perf_counter() - t0
    keys = ["model", "baseline", "unseen"]
    per_task = {g: _summaries(rows, keys, g) for g in GEOMETRIES}
    kinds = sorted({r["pairing"] for r in rows})
    per_pairing = {g: {kind: _summaries([r for r in rows if r["pairing"] == kind], keys, g) for kind in kinds}
                   for g in GEOMETRIES}
    sizes: dict[str, int] = {}
    for r in rows:
        sizes[_wh(r["published_hw"])] = sizes.get(_wh(r["published_hw"]), 0) + 1
    model_sizes = sorted({_wh(r["model_hw"]) for r in rows})
    geometry = {"published": {"sizes": sizes, "stored_size": params.get("size"), "from": predict.describe()},
                "model_res": {"sizes": model_sizes, "resolution": res, "crop": crop}}
    settings = {"steps": steps or p.config.sampling.steps, "sampler": p.config.sampling.sampler,
                "text_scale": text_scale if text_scale is not None else p.config.sampling.text_scale,
                "image_scale": image_scale if image_scale is not None else p.config.sampling.image_scale,
                "samples": samples if samples is not None else p.config.sampling.samples,
                "seed": seed, "resolution": res, "crop": crop, "threshold": threshold, "dilate": dilate}
    result = {"kind": "predictor", "model": str(model), "data": str(data), "split": split, "num_samples": len(rows),
              "settings": settings, "seconds": round(seconds, 2), "geometry": geometry,
              "dataset_pairing": {k: params[k] for k in ("pairing", "interval", "stride", "min_segment_frames")
                                  if k in params},
              "pairings": {kind: sum(r["pairing"] == kind for r in rows) for kind in kinds},
              "per_task": per_task, "per_pairing": per_pairing, "samples": rows}
    _write_outputs(result, out, examples, _predictor_report(result))
    return result


def _samples_words(n: int) -> str:
    return "one sample" if n == 1 else f"per-pixel mean of {n} samples"


PAIRING_WORDS = {"interval": "interval pairs (frame t → t + interval, task-level instructions)",
                 "segment": "segment pairs (motion segment start → end, step instructions)",
                 "unknown": "pairs of unknown kind (dataset made elsewhere)"}


def _predictor_report(r: dict) -> str:
    s = r["settings"]
    g = r["geometry"]
    pub_sizes = ", ".join(f"{wh} ({k} samples)" for wh, k in g["published"]["sizes"].items())
    stored = g["published"].get("stored_size")
    lines = [
        "# Frame predictor evaluation", "",
        f"- model: `{r['model']}`", (f"- data: `{r['data']}`, held-out split **{r['split']}** "
        f"({r['num_samples']} samples, episodes never used for training)"),
        (f"- sampling: {s['sampler']}, {s['steps']} steps, s_T {s['text_scale']}, s_I {s['image_scale']}, "
        f"{_samples_words(s.get('samples', 1))}, seed {s['seed']}, {s['resolution']}² model resolution "
        f"({s.get('crop', 'center')} crop)"),
        "- pairs: " + ", ".join(f"{k} {PAIRING_WORDS.get(kind, kind)}" for kind, k in r["pairings"].items())
        + (f" (dataset converted with `--pairing {r['dataset_pairing']['pairing']}`)"
           if r.get("dataset_pairing", {}).get("pairing") else ""),
        f"- published geometry (width x height): {pub_sizes}; the prediction there is {g['published']['from']}",
        f"- time: {r['seconds']} s", "",
    ]
    if stored:
        lines += [(f"**Note:** this dataset stores {stored}x{stored} centre crops (`frameplan convert --size "
                   f"{stored}`), so the published geometry scored here is that stored crop, not the camera's full "
                   "frame the node publishes. Convert without `--size` to score the full frame."), ""]
    lines += [
        ("SSIM (Wang et al.: 11x11 gaussian window, sigma 1.5) and PSNR (dB, MAX 255) over the **changed region** "
         f"(pixels whose input→target difference exceeds {s['threshold']}/255, dilated by {s['dilate']} px) and over "
         "the whole frame; **sharpness** = mean Sobel gradient magnitude of the prediction in the changed region ÷ "
         "the ground truth's (1 = as sharp as the real frame; mean of per-sample ratios). *copy* = the input frame "
         "returned unchanged; Δ = model − copy."), "",
        "## Published geometry (the frame the node publishes, `output_size: input`), per task", "",
        report.main_table(r["per_task"]["published"]), "",
        (f"## Model resolution ({s['resolution']}²: input and target fitted with the model's {s.get('crop', 'center')} "
         "crop), per task"), "",
        report.main_table(r["per_task"]["model_res"]), "",
    ]
    if len(r["pairings"]) > 1:
        lines += ["## By pairing kind (published geometry)", ""]
        for kind in r["pairings"]:
            lines += [f"### {PAIRING_WORDS.get(kind, kind)}", "",
                      report.main_table(r["per_pairing"]["published"][kind]), ""]
    lines += [("## Instruction generalisation (published geometry, same samples): seen instructions vs unseen "
               "paraphrases"), "",
              ("Unseen paraphrases: of the task for interval pairs, of the step for segment pairs "
               "(`frameplan_core/data/instructions.py`)."), "",
              report.generalisation_table(r["per_task"]["published"]), ""]
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
                     progress: Callable[[int, int], None] | None = None, compose: int | None = None) -> dict:
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
                          samples=samples, compose=compose)
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
                "compose": compose if compose is not None else g.config.compose,
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
         f"seed {s['seed']}, {s['cell_size']} px cells"
         + (f", change-mask composition {s['compose']}" if s.get("compose") else "")),
        f"- time: {r['seconds']} s", "",
        ("Metrics are the means over frames 2–9 of each plan (frame 1 is the observed input). Changed region: "
        f"pixels of frame k that differ from frame 1 by more than {s['threshold']}/255 in the ground truth, dilated "
        f"by {s['dilate']} px. *copy* = frame 1 repeated nine times. Sharpness = mean Sobel gradient magnitude in "
        "the changed region, plan frame ÷ ground-truth frame. Geometry: the planner publishes its frames as they "
        f"come out, {s['cell_size']} px cells, so its published geometry and its model resolution are the same; the "
        f"ground-truth frames are fitted to {s['cell_size']} px cells (centre crop)."), "",
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



# ---------------------------------------------------------------- uncertainty calibration
def _resolved_samples(samples: int | None, default: int, kind: str) -> int:
    from frameplan_core.errors import ConfigError

    k = default if samples is None else samples
    if k < 2:
        raise ConfigError(f"eval {kind} --uncertainty: samples={k}; the uncertainty is the spread of the samples, so "
                          "it needs --samples >= 2")
    return k


def _uncertainty_panel(inp: np.ndarray, pred: np.ndarray, truth: np.ndarray, u: np.ndarray) -> list[np.ndarray]:
    """input, prediction, ground truth, |error| and uncertainty heat maps (the same colour scale)."""
    from frameplan_core import calibration, uncertainty

    err = calibration.error_map(pred, truth)
    return [inp, pred, truth, uncertainty.heatmap(err), uncertainty.heatmap(u)]


def _calibration_outputs(result: dict, out: Path, panels: dict[str, list[np.ndarray]]) -> None:
    from frameplan_core import uncertainty

    out.mkdir(parents=True, exist_ok=True)
    images, labels = [], []
    for task, row in sorted(panels.items())[:3]:
        images += row
        labels += [f"{task}: input", "prediction", "ground truth", "|error|", "uncertainty"]
    if images:
        cell = max(128, max(im.shape[0] for im in images))
        sheet = contact_sheet(images, cols=5, cell=cell, labels=labels)
        # the colour bar explains the last two columns (|error| and uncertainty share its scale)
        fig = write_image(out / "uncertainty.png", uncertainty.with_legend(sheet, uncertainty.HEATMAP_MAX))
        result["figure"] = str(fig)
    atomic.write_text(out / "uncertainty.md", _uncertainty_report(result) +
                      ("\n![examples](uncertainty.png)\n" if images else ""))
    atomic.write_json(out / "uncertainty.json", _clean(result))
    log.info("uncertainty calibration written to %s (uncertainty.md, uncertainty.json, uncertainty.png)", out)


def _calibration_summaries(rows: list[dict]) -> dict[str, dict]:
    from frameplan_core import calibration

    tasks = sorted({r["task"] for r in rows})
    return {t: calibration.summarize([r for r in rows if t == ALL or r["task"] == t]) for t in tasks + [ALL]}


def evaluate_predictor_uncertainty(model: str | Path, data: str | Path, out: str | Path, split: str = "auto",
                                   steps: int | None = None, text_scale: float | None = None,
                                   image_scale: float | None = None, samples: int | None = None, seed: int = 0,
                                   batch_size: int = 8, max_samples: int | None = None, device: str = "auto",
                                   predictor: Any = None, progress: Callable[[int, int], None] | None = None) -> dict:
    """How well the predictor's uncertainty map and confidence track its real error on the held-out split, at the
    published geometry (the frame and map the node publishes), against the oracle and trivial maps
    (frameplan_core/calibration.py). Writes uncertainty.md, uncertainty.json and uncertainty.png into ``out``."""
    from frameplan_training.datasets import PairDataset

    from frameplan_core import calibration
    from frameplan_core.predictor import FramePredictor

    data, out = Path(data), Path(out)
    split = held_out_split(data, split)
    p = predictor if predictor is not None else FramePredictor.from_pretrained(model, device=device)
    k = _resolved_samples(samples, p.config.sampling.samples, "predictor")
    res = p.config.resolution
    ds = PairDataset(data, split, res, res, max_bad=0)
    n = len(ds) if max_samples is None else min(len(ds), max_samples)
    t0 = time.perf_counter()
    rows: list[dict] = []
    panels: dict[str, list[np.ndarray]] = {}
    for idx in _batches(n, batch_size):
        items = [s for _, s in (ds.sample(pos) for pos in idx)]
        preds = p.predict_batch([s.input for s in items], [s.edit for s in items], steps=steps,
                                text_scale=text_scale, image_scale=image_scale, seed=seed, samples=k,
                                output_size="input", return_uncertainty=True)
        for s, pr in zip(items, preds):
            task = str(s.meta.get("task", "")) or "unknown"
            row = calibration.score(pr.uncertainty, pr.image, s.output, s.input)
            row.update({"id": s.id, "task": task, "confidence": pr.confidence})
            rows.append(row)
            panels.setdefault(task, _uncertainty_panel(s.input, pr.image, s.output, pr.uncertainty))
        if progress:
            progress(len(rows), n)
    if not rows:
        raise DataError(f"{data}: no samples in split {split!r}")
    s = p.config.sampling
    settings = {"steps": steps or s.steps, "sampler": s.sampler, "samples": k, "seed": seed,
                "text_scale": text_scale if text_scale is not None else s.text_scale,
                "image_scale": image_scale if image_scale is not None else s.image_scale, "compose": s.compose,
                "resolution": res, "crop": p.config.crop}
    result = {"kind": "predictor", "model": str(model), "data": str(data), "split": split, "num_samples": len(rows),
              "unit": "prediction", "settings": settings, "seconds": round(time.perf_counter() - t0, 2),
              "fractions": calibration.FRACTIONS.tolist(), "per_task": _calibration_summaries(rows), "samples": rows}
    _calibration_outputs(result, out, panels)
    return result


def evaluate_planner_uncertainty(model: str | Path, data: str | Path, out: str | Path, split: str = "auto",
                                 steps: int | None = None, guidance: float | None = None, samples: int | None = None,
                                 seed: int = 0, max_samples: int | None = None, device: str = "auto",
                                 planner: Any = None, progress: Callable[[int, int], None] | None = None) -> dict:
    """The planner's per-frame uncertainty maps and confidences against its real error, frames 2-9 of each
    held-out plan (text and trajectory when the data has tracks, else text), scored like the predictor's."""
    from frameplan_training.datasets import GridSampleDataset, grid_example

    from frameplan_core import calibration
    from frameplan_core.planner import GridPlanner
    from frameplan_core.trajectory import Trajectory

    data, out = Path(data), Path(out)
    split = held_out_split(data, split)
    g = planner if planner is not None else GridPlanner.from_pretrained(model, device=device)
    k = _resolved_samples(samples, g.config.samples, "planner")
    cell = g.config.cell_size
    ds = GridSampleDataset(data, split, cell, thickness=g.config.thickness, max_bad=0)
    n = len(ds) if max_samples is None else min(len(ds), max_samples)
    t0 = time.perf_counter()
    rows: list[dict] = []
    panels: dict[str, list[np.ndarray]] = {}
    for pos in range(n):
        ex = grid_example(ds, pos)
        task, gt = ex["task"] or "unknown", ex["frames"]
        traj = Trajectory(ex["trajectory"], (cell, cell)) if ex["trajectory"] is not None else None
        plan = g.plan(gt[0], instruction=ex["text"], trajectory=traj, steps=steps, guidance=guidance, seed=seed,
                      samples=k)
        for f in range(1, 9):
            row = calibration.score(plan.uncertainty[f], plan.frames[f], gt[f], gt[0])
            row.update({"id": f"{ex['index']}/frame{f + 1}", "task": task, "frame": f + 1,
                        "confidence": plan.frame_confidence[f]})
            rows.append(row)
        panels.setdefault(task, _uncertainty_panel(gt[0], plan.frames[8], gt[8], plan.uncertainty[8]))
        if progress:
            progress(pos + 1, n)
    if not rows:
        raise DataError(f"{data}: no samples in split {split!r}")
    settings = {"steps": steps or g.config.steps, "guidance": guidance if guidance is not None else g.config.guidance,
                "samples": k, "seed": seed, "cell_size": cell}
    result = {"kind": "planner", "model": str(model), "data": str(data), "split": split, "num_samples": n,
              "unit": "plan frame (2-9)", "settings": settings, "seconds": round(time.perf_counter() - t0, 2),
              "fractions": calibration.FRACTIONS.tolist(), "per_task": _calibration_summaries(rows), "samples": rows}
    _calibration_outputs(result, out, panels)
    return result


def _uncertainty_report(r: dict) -> str:
    from frameplan_core import calibration

    s = r["settings"]
    per_task = r["per_task"]
    f = report._f
    where = (f"the published geometry (`output_size: input`, {s['resolution']}² model, {s['crop']} crop; pixels "
             "outside the model's view have no estimate and are left out)") if r["kind"] == "predictor" else \
        f"{s['cell_size']} px plan cells, frames 2–9 (frame 1 is the observed input)"
    lines = [
        f"# Uncertainty calibration: {r['kind']}", "",
        f"- model: `{r['model']}`",
        f"- data: `{r['data']}`, held-out split **{r['split']}** ({r['num_samples']} samples; one row per "
        f"{r['unit']})",
        "- settings: " + ", ".join(f"{k} {v}" for k, v in s.items()),
        f"- scored at {where}",
        f"- time: {r['seconds']} s", "",
        ("Uncertainty = the samples' RMS distance from the published pixel (frameplan_core/uncertainty.py). "
         "ρ = Spearman correlation of a map with the per-pixel error (mean over predictions). AUC = mean over "
         "f = 0, 0.05 … 0.95 of the RMS error of the pixels left after dropping the fraction f the map is least "
         "sure of, ÷ the RMS error of all of them (lower is better; uniform/random order = 1; *oracle* = ordered by "
         "the true error). AUSE = AUC − oracle AUC. Trivial maps: *edges* = |input − blurred input|, *mask* = the "
         "binary changed-pixel mask (prediction vs input > 25/255, dilated 3 px), *change* = |prediction − input| "
         "as a magnitude, dilated. Confidence ranking = Spearman of −confidence with each prediction's RMS "
         "error across predictions, beside the same for the mean predicted change. error/spread: RMS error ÷ RMS "
         "uncertainty (a calibrated mean of K samples: √((K+1)/(K−1))). Method: frameplan_core/calibration.py."), "",
        "## Per task", "",
        "| Task | n | ρ model ↑ | ρ edges | ρ mask | ρ change | AUC model ↓ | AUC oracle | AUC edges | AUC mask "
        "| AUC change | AUC uniform | AUSE model | error/spread | confidence ranking ↑ | change ranking |",
        "|" + "---|" * 16,
    ]
    for task, d in per_task.items():
        m, e, k, c, u = d["model"], d["edges"], d["changed_mask"], d["predicted_change"], d["uniform"]
        lines.append("| " + " | ".join([task, str(d["n"]), f(m["spearman"]), f(e["spearman"]), f(k["spearman"]),
                                         f(c["spearman"]), f(m["auc"]), f(d["oracle_auc"]), f(e["auc"]), f(k["auc"]),
                                         f(c["auc"]), f(u["auc"]), f(m["ause"]), f(d["error_to_spread"], 2),
                                         f(d["confidence_ranking"]), f(d["predicted_change_ranking"])]) + " |")
    allt = per_task[ALL]
    fr = r["fractions"]
    show = [i for i, x in enumerate(fr) if round(x * 100) % 25 == 0 or i == len(fr) - 1]
    lines += ["", "## Sparsification curve (all tasks): relative RMS error of the kept pixels", "",
              "| dropped fraction | " + " | ".join(f"{fr[i]:.2f}" for i in show) + " |",
              "|---|" + "---|" * len(show)]
    for name in ("model", "oracle", "edges", "changed_mask", "predicted_change", "uniform"):
        lines.append(f"| {name} | " + " | ".join(f(allt['curves'][name][i]) for i in show) + " |")
    beats = [t for t, d in per_task.items() if t != ALL and all(
        d["model"]["auc"] < d[b]["auc"] for b in calibration.BASELINES)]
    tasks = [t for t in per_task if t != ALL]
    lines += ["", (f"**The uncertainty map orders pixels by error better than every trivial map (lower AUC) on "
                   f"{len(beats)} of {len(tasks)} tasks**" + (f" ({', '.join(beats)})" if beats else "") + "; "
                   f"all tasks: AUC {f(allt['model']['auc'])} vs edges {f(allt['edges']['auc'])}, mask "
                   f"{f(allt['changed_mask']['auc'])}, change "
                   f"{f(allt['predicted_change']['auc'])}, uniform {f(allt['uniform']['auc'])}, oracle "
                   f"{f(allt['oracle_auc'])}."), ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- policy: does it use its goal?
def evaluate_policy(model: str | Path, data: str | Path, out: str | Path, baseline: str | Path | None = "tiny-nogoal",
                    split: str = "auto", stride: int = 3, seed: int = 0, device: str = "cpu",
                    progress: Callable[[int, int], None] | None = None) -> dict:
    """Open-loop goal probe (frameplan_core.policy.probe) on episodes or a policy frame cache.

    ``data``: a folder of RoboTwin episodes (a cache at the policy's geometry is built in ``out/cache``; every
    episode is used, so pass episodes never trained on) or a frame cache (``split`` auto = its held-out split)."""
    from frameplan_core.policy import GoalPolicy
    from frameplan_core.policy.data import PolicySamples, build_cache, check_geometry, is_cache
    from frameplan_core.policy.probe import ALL as PALL
    from frameplan_core.policy.probe import check_pair, first_arm_probe, goal_probe

    t0 = time.time()
    out = Path(out)
    policy = GoalPolicy.from_pretrained(model, device=device)
    base = GoalPolicy.from_pretrained(baseline, device=device) if baseline else None
    cfg = policy.config
    check_pair(policy, base)
    if base is not None and (base.config.chunk, base.config.action) != (cfg.chunk, cfg.action):
        raise DataError(f"--baseline {baseline}: predicts {base.config.chunk} {base.config.action} commands, the "
                        f"policy {cfg.chunk} {cfg.action}; train both with the same config")
    data = Path(data)
    if is_cache(data):
        check_geometry(data, cfg.image_size, cfg.crop, cfg.camera, "the policy reads",
                       remedy="pass the episodes folder instead")
        use_split = held_out_split(data, split)
        root = data
    else:
        if split != "auto":
            raise DataError(f"--split {split}: an episodes folder has no splits; every episode in it is used "
                            "(pass episodes never trained on, or a frame cache with val/test splits)")
        root = out / "cache"
        build_cache(data, root, image_size=cfg.image_size, crop=cfg.crop, camera=cfg.camera, val_fraction=0.0)
        use_split = None
    samples = PolicySamples(root, use_split, chunk=cfg.chunk, interval=cfg.interval, action=cfg.action)
    r = goal_probe(policy, samples, baseline=base, stride=stride, seed=seed, progress=progress)
    r["first_arm"] = first_arm_probe(policy, samples, baseline=base)
    r.update({"model": str(policy.source or model), "baseline_model": str(base.source) if base else None,
              "data": str(data), "split": use_split or "all episodes", "interval": cfg.interval, "stride": stride,
              "episodes": len(samples.episodes), "seconds": round(time.time() - t0, 1)})
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / "metrics.json", _clean(r))
    atomic.write_text(out / "report.md", _policy_report(r, PALL))
    return r


def _policy_report(r: dict, all_key: str) -> str:
    from frameplan_core.policy.probe import NO_GOAL as PROBE_NO_GOAL
    from frameplan_core.policy.probe import WRONG as PROBE_WRONG
    def f(v):
        return "–" if v is None else f"{1000 * v:.2f}"

    cols = [*r["goals"], *(["baseline"] if r["baseline"] else [])]
    lines = ["# Does the policy use its goal? (open loop)", "",
             f"Policy `{r['model']}`" + (f", no-foresight baseline `{r['baseline_model']}`" if r["baseline"] else "")
             + f"; data `{r['data']}` ({r['split']}, {r['episodes']} episodes, every {r['stride']}. frame); goal "
             f"{r['interval']} saved frames ahead. Mean absolute joint error of the predicted chunk against the "
             "recorded commands, **mrad** (lower is better). A policy that uses its goal is clearly worse with a "
             "wrong one (current frame, another episode, the episode's other end) than with the true one.", "",
             "| task | n | " + " | ".join(cols) + " |", "| --- | --- | " + " | ".join("---" for _ in cols) + " |"]
    for task, d in r["per_task"].items():
        name = f"**{task}**" if task == all_key else task
        lines.append(f"| {name} | {d['n']} | " + " | ".join(f(d[c]) for c in cols) + " |")
    a = r["per_task"][all_key]
    wrong = [a[g] for g in r["goals"] if g in PROBE_WRONG and a[g] is not None]
    if a["true"] and wrong:
        lines += ["", f"Wrong goals raise the error by {100 * (min(wrong) / a['true'] - 1):+.0f} % to "
                      f"{100 * (max(wrong) / a['true'] - 1):+.0f} % over the true goal"
                  + (f"; the baseline is {100 * (a['baseline'] / a['true'] - 1):+.0f} % against the true goal"
                     if r["baseline"] else "")
                  + (f"; the same network without a goal (its no-goal token) "
                     f"{100 * (a[PROBE_NO_GOAL] / a['true'] - 1):+.0f} %." if a.get(PROBE_NO_GOAL) else ".")]
    fa = r.get("first_arm")
    if fa:
        lines += ["", "## Which arm moves first?", "",
                  "At each episode's first frame: the share of episodes whose first predicted chunk moves the arm the "
                  "expert moved (its recorded commands). Where the frame does not show the choice (data collected "
                  "with `expert_strategy: varied`), only a policy that reads its goal scores 1 with the true goal.", "",
                  "| task | episodes | expert: left arm | " + " | ".join(fa["goals"]) + " |",
                  "| --- | --- | --- | " + " | ".join("---" for _ in fa["goals"]) + " |"]
        for task, d in fa["per_task"].items():
            name = f"**{task}**" if task == all_key else task
            lines.append(f"| {name} | {d['n']} | {d['expert_left']} | "
                         + " | ".join(f"{d[k]:.2f}" for k in fa["goals"]) + " |")
    return "\n".join(lines) + "\n"
