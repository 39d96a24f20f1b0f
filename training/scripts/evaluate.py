"""Evaluate a model against the copy-the-input baseline on the held-out split.

  frameplan eval predictor --model runs/predictor/model --data DATA --out eval/
  frameplan eval planner   --model runs/planner/model   --data GRIDS --out eval/

Writes eval/report.md (per-task tables, model and copy-the-input baseline side by side: changed-region and
whole-frame PSNR/SSIM and the changed-region sharpness ratio; for the predictor at the published geometry — the
stored frame, what the node publishes — then at model resolution, and by pair kind (interval/segment); seen vs
unseen instructions; per-frame-index table for the planner), eval/metrics.json (both geometries, per sample too)
and eval/comparison.png (rows: tasks; columns: input, generated, ground truth).

  frameplan eval predictor --uncertainty --data DATA --out eval/unc

instead scores the uncertainty maps and confidences (needs --samples >= 2; the embedded models' default is 4)
against the real error: uncertainty.md, uncertainty.json, uncertainty.png (docs/eval/uncertainty.md).

  frameplan eval policy --data EPISODES --out eval/policy

probes whether the goal-conditioned policy uses its goal: open-loop joint error with the true hindsight goal vs
wrong goals and vs the no-foresight baseline (--baseline), on episodes never trained on (or a frame cache's held-out
split): report.md, metrics.json (docs/eval/closed_loop.md)."""
from __future__ import annotations

import argparse

KINDS = ("predictor", "planner", "policy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", choices=KINDS, help="model family to evaluate")
    parser.add_argument("--model", default="tiny", help="model folder (default: the embedded tiny model)")
    parser.add_argument("--data", required=True, help="dataset folder with a splits.json (ip2p or grid)")
    parser.add_argument("--out", default="eval", help="output folder (default: eval/)")
    parser.add_argument("--split", default="auto", choices=("auto", "val", "test"),
                        help="held-out split (auto: test if present, else val)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--text-scale", type=float, default=None, help="predictor: text guidance s_T")
    parser.add_argument("--image-scale", type=float, default=None, help="predictor: image guidance s_I")
    parser.add_argument("--samples", type=int, default=None,
                        help="samples averaged per prediction / plan (the expected frames; default: the model's)")
    parser.add_argument("--guidance", type=float, default=None, help="planner: guidance value")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8, help="predictor: images per batch")
    parser.add_argument("--compose", type=int, default=None,
                        help="planner: change-mask threshold, unchanged pixels kept from the observation (0 = off; "
                             "default: the model's)")
    parser.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N held-out samples")
    parser.add_argument("--threshold", type=int, default=25, help="changed-region threshold (0..254)")
    parser.add_argument("--dilate", type=int, default=3, help="changed-region dilation in pixels")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--baseline", default="tiny-nogoal",
                        help="policy: the no-foresight baseline folder or preset ('none' to leave it out)")
    parser.add_argument("--stride", type=int, default=3, help="policy: probe every STRIDE-th saved frame")
    parser.add_argument("--uncertainty", action="store_true",
                        help="score the uncertainty maps and confidence against the real error instead "
                             "(frameplan_core/calibration.py; writes uncertainty.md/.json/.png into --out)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from frameplan_training import evaluation

    from frameplan_core.errors import ConfigError

    if args.steps is not None and args.steps < 1:
        raise ConfigError(f"--steps {args.steps}: must be >= 1")
    if not 0 <= args.threshold < 255 or args.dilate < 0:
        raise ConfigError("--threshold must be in 0..254 and --dilate >= 0")

    def progress(done: int, total: int) -> None:
        print(f"\r  {done}/{total} samples", end="" if done < total else "\n", flush=True)

    if args.kind == "policy":
        return _run_policy(args, evaluation, progress)
    if args.uncertainty:
        return _run_uncertainty(args, evaluation, progress)
    common = {"split": args.split, "steps": args.steps, "seed": args.seed, "max_samples": args.max_samples,
                  "threshold": args.threshold, "dilate": args.dilate, "device": args.device, "progress": progress}
    if args.kind == "predictor":
        r = evaluation.evaluate_predictor(args.model, args.data, args.out, text_scale=args.text_scale,
                                          image_scale=args.image_scale, samples=args.samples,
                                          batch_size=args.batch_size, **common)
        geo = r["geometry"]
        sections = [(f"published {'/'.join(geo['published']['sizes'])}", r["per_task"]["published"][evaluation.ALL],
                     "model"),
                    (f"model res {'/'.join(geo['model_res']['sizes'])}", r["per_task"]["model_res"][evaluation.ALL],
                     "model")]
    else:
        r = evaluation.evaluate_planner(args.model, args.data, args.out, guidance=args.guidance, samples=args.samples,
                                        compose=args.compose, **common)
        sections = [(k, r["per_task"][evaluation.ALL], k) for k in r["modes"] if k != "unseen"]
    print(f"{args.kind} on {r['num_samples']} held-out samples ({r['split']} split):")
    for label, allt, k in sections:
        m, b = allt[k], allt["baseline"]
        print(f"  {label}: changed region PSNR {m['psnr_changed']:.2f} dB (copy-input {b['psnr_changed']:.2f}), "
              f"SSIM {m['ssim_changed']:.3f} (copy-input {b['ssim_changed']:.3f}); whole frame PSNR {m['psnr']:.2f} "
              f"dB (copy-input {b['psnr']:.2f}); sharpness {m['sharpness_changed']:.2f} "
              f"(copy-input {b['sharpness_changed']:.2f})")
    out = Path(args.out)
    print(f"report: {out / 'report.md'}\nmetrics: {out / 'metrics.json'}\nfigure: {out / 'comparison.png'}")
    return 0


def _run_uncertainty(args: argparse.Namespace, evaluation, progress) -> int:
    common = {"split": args.split, "steps": args.steps, "seed": args.seed, "max_samples": args.max_samples,
              "samples": args.samples, "device": args.device, "progress": progress}
    if args.kind == "predictor":
        r = evaluation.evaluate_predictor_uncertainty(args.model, args.data, args.out, text_scale=args.text_scale,
                                                      image_scale=args.image_scale, batch_size=args.batch_size,
                                                      **common)
    else:
        r = evaluation.evaluate_planner_uncertainty(args.model, args.data, args.out, guidance=args.guidance, **common)
    d = r["per_task"][evaluation.ALL]
    print(f"{args.kind} uncertainty on {r['num_samples']} held-out samples ({r['split']} split): pixel rank "
          f"correlation with the error {d['model']['spearman']:.3f} (edges {d['edges']['spearman']:.3f}, predicted "
          f"change {d['predicted_change']['spearman']:.3f}); sparsification AUC {d['model']['auc']:.3f} (oracle "
          f"{d['oracle_auc']:.3f}, uniform {d['uniform']['auc']:.3f}, edges {d['edges']['auc']:.3f}, changed mask "
          f"{d['changed_mask']['auc']:.3f}, predicted change {d['predicted_change']['auc']:.3f}); confidence ranking "
          f"{d['confidence_ranking']:.3f} (predicted change {d['predicted_change_ranking']:.3f})")
    print(f"report: {args.out}/uncertainty.md")
    return 0


def _run_policy(args: argparse.Namespace, evaluation, progress) -> int:
    from frameplan_core.errors import ConfigError
    from frameplan_core.policy.probe import ALL

    if args.uncertainty:
        raise ConfigError("--uncertainty is for the predictor and the planner, not the policy")
    device = "cpu" if args.device == "auto" else args.device
    r = evaluation.evaluate_policy(args.model, args.data, args.out,
                                   baseline=None if args.baseline == "none" else args.baseline, split=args.split,
                                   stride=args.stride, seed=args.seed, device=device, progress=progress)
    a = r["per_task"][ALL]
    parts = ", ".join(f"{g} {1000 * a[g]:.2f}" for g in r["goals"] if a[g] is not None)
    base = f"; baseline {1000 * a['baseline']:.2f}" if r["baseline"] else ""
    print(f"policy goal probe on {a['n']} samples of {r['episodes']} episodes: joint error (mrad) with goal "
          f"{parts}{base}")
    fa = r["first_arm"]["per_task"][ALL]
    print(f"first frame of {fa['n']} episodes, share moving the expert's arm: "
          + ", ".join(f"{g} {fa[g]:.2f}" for g in r["first_arm"]["goals"]))
    print(f"report: {args.out}/report.md")
    return 0
