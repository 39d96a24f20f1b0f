"""Frame predictor speed: paper default (diffusers StableDiffusionInstructPix2PixPipeline, Euler-ancestral,
100 steps, s_T 7.5, s_I 1.5) vs our fast configuration, same weights and inputs, in one process.

Reports median latency, predictions/s (single and batched), peak memory and the speed-up, plus the PSNR of the
fast output against 100-step references on a fixed small set, so speed is never bought with a different result
unnoticed. ``--compile`` adds the fast path torch.compile'd, timed after the eager rows in the same process.
Prints a Markdown table for docs/BENCHMARKS.md; --json writes the numbers."""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

from frameplan_cli.bench.memory import PeakMemory

COMPILE_MODES = ["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
INSTRUCTIONS = ["strike the block with the hammer", "hand the block over to the other arm",
                "stack the red block on the blue block", "move the block to the left"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="checkpoint (folder/file/'tiny'); default: random --preset")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "tiny-clip", "sd15"],
                        help="architecture with random weights when --model is not given (timing only)")
    parser.add_argument("--resolution", type=int, default=None,
                        help="model resolution of a random --preset (default: the preset's); e.g. the GPU check's CPU "
                             "dry run uses 64 to exercise the bf16 path quickly")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of the fast configuration")
    parser.add_argument("--paper-repeats", type=int, default=3,
                        help="timed runs of the paper default (0: skip it, e.g. for a compile-only run)")
    parser.add_argument("--batch", type=int, default=4, help="batch size for the batched-throughput row")
    parser.add_argument("--psnr-images", type=int, default=4, help="size of the fixed PSNR set")
    parser.add_argument("--steps", type=int, default=None, help="fast steps (default: the model's)")
    parser.add_argument("--sampler", default=None, choices=["euler_a", "ddim", "dpmpp"])
    parser.add_argument("--samples", type=int, default=None,
                        help="also time the mean of this many samples (default: the model's, when above 1)")
    parser.add_argument("--paper-steps", type=int, default=100,
                        help="steps of the paper-default baseline and of the PSNR references (100 = the paper; "
                             "fewer only for a quick check of the code path)")
    parser.add_argument("--compile", action="store_true",
                        help="also time the fast path torch.compile'd, after the eager rows (GPU; row fast_compiled)")
    parser.add_argument("--compile-mode", default="max-autotune-no-cudagraphs", choices=COMPILE_MODES,
                        help="torch.compile mode (default: FramePredictor.compile's; 'default' compiles fastest)")
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend; 'eager' only traces with dynamo (a quick CPU check of the path)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", default=None, help="write results as JSON here")


def compile_modules(p, mode: str, backend: str) -> None:
    """``FramePredictor.compile`` (inductor), or the same modules with another dynamo backend (a cheap trace)."""
    import torch

    if backend == "inductor":
        p.compile(mode=mode)
        return
    p.unet = torch.compile(p.unet, backend=backend, mode=None if mode == "default" else mode)
    p.vae.decoder = torch.compile(p.vae.decoder, backend=backend, mode=None if mode == "default" else mode)


def test_images(n: int, seed: int = 0):
    """Deterministic 320x240 table scenes (coloured blocks on a textured table): the fixed set."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = np.full((240, 320, 3), (150, 120, 90), np.uint8)
        img = np.clip(img.astype(np.int16) + rng.integers(-12, 12, img.shape), 0, 255).astype(np.uint8)
        for _ in range(3):
            x, y = int(rng.integers(20, 260)), int(rng.integers(20, 180))
            s = int(rng.integers(20, 50))
            cv2.rectangle(img, (x, y), (x + s, y + s), tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
        out.append(img)
    return out


def timed(fn, repeats: int, device) -> tuple[list[float], object]:
    import torch

    times, out = [], None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times, out


def paper_pipeline(p):
    """diffusers' own InstructPix2Pix pipeline on our components (Euler-ancestral, as the paper)."""
    from diffusers import (
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
    )

    sched = EulerAncestralDiscreteScheduler.from_config(dict(p.scheduler.config))
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=p.vae, text_encoder=p.text_encoder.model, tokenizer=p.text_encoder.tokenizer, unet=p.unet,
        scheduler=sched, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_paper(pipe, p, image, instruction: str, seed: int, steps: int = 100):
    """Paper default: 100 Euler-ancestral steps, s_T 7.5, s_I 1.5 (prompt embeddings from our text encoder,
    so MiniLM models work too; their time is included)."""
    import numpy as np
    import torch
    from PIL import Image

    from frameplan_core.image import fit

    emb = p.encode_text([instruction])
    neg = p.uncond_embedding()
    src = Image.fromarray(fit(image, p.config.resolution, p.config.crop))
    gen = torch.Generator("cpu").manual_seed(seed)
    out = pipe(image=src, prompt_embeds=emb, negative_prompt_embeds=neg, num_inference_steps=steps,
               guidance_scale=7.5, image_guidance_scale=1.5, generator=gen, output_type="np").images[0]
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def run(args: argparse.Namespace) -> int:
    import torch

    from frameplan_core.errors import ConfigError, InputError, ModelError
    from frameplan_core.metrics import psnr
    from frameplan_core.predictor import FramePredictor, PredictorConfig

    for flag, value, low in (("--repeats", args.repeats, 1), ("--paper-repeats", args.paper_repeats, 0),
                             ("--batch", args.batch, 1), ("--psnr-images", args.psnr_images, 0),
                             ("--paper-steps", args.paper_steps, 1)):
        if value < low:
            raise InputError(f"bench predictor: {flag} {value}: must be at least {low}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        if args.resolution is not None:
            raise InputError("bench predictor: --resolution applies to a random --preset; a --model keeps its own")
        p = FramePredictor.from_pretrained(args.model, device=args.device, dtype=args.dtype)
        weights = f"`{args.model}`"
    else:
        cfg = PredictorConfig.preset(args.preset)
        if args.resolution is not None:
            cfg = dataclasses.replace(cfg, resolution=args.resolution)
            try:
                cfg.validate()
            except ConfigError as exc:
                raise InputError(f"bench predictor --resolution {args.resolution}: {str(exc).split(': ', 1)[-1]}") \
                    from None
        p = FramePredictor.from_config(cfg, seed=0, device=args.device,
                                       dtype=args.dtype if args.dtype != "auto" else "auto")
        weights = f"random init ({args.preset})"
    if p.config.target != "frame":
        raise ModelError(f"bench predictor: {weights} is a {p.config.target}-target model; the paper-default "
                         "baseline (diffusers' InstructPix2Pix pipeline) denoises frames, so it cannot run it")
    print(p.describe())
    dev = p.device
    imgs = test_images(max(args.psnr_images, args.batch, 1))
    fast_kw = {"steps": args.steps, "sampler": args.sampler, "samples": 1}  # one sample: comparable across models
    s = p.config.sampling
    n_mean = s.samples if args.samples is None else args.samples
    fast_desc = f"{args.sampler or s.sampler} {args.steps or s.steps} steps, batched CFG"
    pipe = paper_pipeline(p) if args.paper_repeats else None
    paper_steps = args.paper_steps

    # warm-up both paths (first calls allocate, tune kernels)
    p.predict(imgs[0], INSTRUCTIONS[0], **fast_kw)
    t_paper, mem_paper = [], None
    if pipe is not None:
        run_paper(pipe, p, imgs[0], INSTRUCTIONS[0], 0, paper_steps)
        with PeakMemory(dev) as mem_paper:
            t_paper, _ = timed(lambda: run_paper(pipe, p, imgs[0], INSTRUCTIONS[0], 0, paper_steps),
                               args.paper_repeats, dev)
    with PeakMemory(dev) as mem_fast:
        t_fast, _ = timed(lambda: p.predict(imgs[0], INSTRUCTIONS[0], **fast_kw), args.repeats, dev)
    batch = [imgs[i % len(imgs)] for i in range(args.batch)]
    instr = [INSTRUCTIONS[i % len(INSTRUCTIONS)] for i in range(args.batch)]
    p.predict_batch(batch, instr, **fast_kw)
    with PeakMemory(dev) as mem_batch:
        t_batch, _ = timed(lambda: p.predict_batch(batch, instr, **fast_kw), max(2, args.repeats // 2), dev)

    t_mean = []
    if n_mean > 1:
        mean_kw = {**fast_kw, "samples": n_mean}
        p.predict(imgs[0], INSTRUCTIONS[0], **mean_kw)
        with PeakMemory(dev) as mem_mean:
            t_mean, _ = timed(lambda: p.predict(imgs[0], INSTRUCTIONS[0], **mean_kw), args.repeats, dev)

    # PSNR of the fast output against 100-step references on the fixed set (same seed per image)
    ps_paper, ps_ode = [], []
    for i in range(args.psnr_images):
        img, text = imgs[i], INSTRUCTIONS[i % len(INSTRUCTIONS)]
        fast = p.predict(img, text, seed=i, **fast_kw)
        if pipe is not None:
            ps_paper.append(psnr(fast, run_paper(pipe, p, img, text, i, paper_steps)))
        ref_ode = p.predict(img, text, seed=i, sampler=args.sampler or s.sampler, steps=paper_steps, samples=1)
        ps_ode.append(psnr(fast, ref_ode))

    compiled = None
    if args.compile:  # after every eager row: compiling replaces the modules in place
        eager_out = p.predict(imgs[0], INSTRUCTIONS[0], seed=0, **fast_kw)
        t0 = time.perf_counter()
        compile_modules(p, args.compile_mode, args.compile_backend)
        for _ in range(2):  # the first calls compile (and recompile once for the guidance batch shapes)
            p.predict(imgs[0], INSTRUCTIONS[0], **fast_kw)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        warm_s = time.perf_counter() - t0
        with PeakMemory(dev) as mem_comp:
            t_comp, _ = timed(lambda: p.predict(imgs[0], INSTRUCTIONS[0], **fast_kw), args.repeats, dev)
        med_c = statistics.median(t_comp)
        compiled = {"config": f"{fast_desc}, torch.compile mode={args.compile_mode} backend={args.compile_backend}",
                    "median_s": med_c, "per_s": 1 / med_c, "peak_mem_mb": mem_comp.peak_mb, "runs": t_comp,
                    "compile_and_warmup_s": warm_s, "vs_eager": statistics.median(t_fast) / med_c}
        same = psnr(p.predict(imgs[0], INSTRUCTIONS[0], seed=0, **fast_kw), eager_out)  # inf: identical frames
        compiled.update(psnr_vs_eager_db=None if same == float("inf") else same, identical_to_eager=same == float("inf"))

    med_p = statistics.median(t_paper) if t_paper else None
    med_f, med_b = statistics.median(t_fast), statistics.median(t_batch)
    med_m = statistics.median(t_mean) if t_mean else None
    res = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(dev), "model": weights, "describe": p.describe(), "resolution": p.config.resolution,
        "dtype": str(p.dtype).replace("torch.", ""),
        "paper": ({"config": f"diffusers StableDiffusionInstructPix2PixPipeline, euler_a {paper_steps} steps, "
                             "s_T 7.5, s_I 1.5",
                   "median_s": med_p, "per_s": 1 / med_p, "peak_mem_mb": mem_paper.peak_mb, "runs": t_paper}
                  if t_paper else None),
        "fast": {"config": fast_desc, "median_s": med_f, "per_s": 1 / med_f, "peak_mem_mb": mem_fast.peak_mb,
                 "runs": t_fast},
        "fast_batched": {"batch": args.batch, "median_s": med_b, "per_s": args.batch / med_b,
                         "peak_mem_mb": mem_batch.peak_mb},
        "speedup": med_p / med_f if med_p else None,
        "fast_mean": ({"samples": n_mean, "median_s": med_m, "per_s": 1 / med_m, "peak_mem_mb": mem_mean.peak_mb,
                       "vs_one_sample": med_m / med_f, "runs": t_mean} if t_mean else None),
        "fast_compiled": compiled,
        "psnr_fast_vs_paper100_db": ps_paper, "psnr_fast_vs_same_solver100_db": ps_ode, "psnr_ref_steps": paper_steps,
        "process_peak_mb": max(mem_paper.total_mb if mem_paper else 0.0, mem_fast.total_mb, mem_batch.total_mb,
                               mem_mean.total_mb if t_mean else 0.0, mem_comp.total_mb if compiled else 0.0),
    }
    print(markdown(res))
    if args.json:
        from frameplan_core import atomic

        atomic.write_json(Path(args.json), res)
    return 0


def machine(dev) -> str:
    import torch

    if dev.type == "cuda":
        return f"{torch.cuda.get_device_name(dev)}, torch {torch.__version__}"
    load = os.getloadavg()[0]  # other work on a shared machine changes CPU timings a lot: say how busy it was
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} CPU, "
            f"{torch.get_num_threads()} threads, load average {load:.1f} at the end")


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def markdown(r: dict) -> str:
    pa, fa, fb = r["paper"], r["fast"], r["fast_batched"]
    rows = [
        "| configuration | median latency | predictions/s | peak extra memory |",
        "|---|---|---|---|",
        (f"| paper default ({pa['config']}) | {pa['median_s'] * 1000:.0f} ms | {pa['per_s']:.2f} "
         f"| {pa['peak_mem_mb']:.0f} MB |") if pa else "| paper default | not run (--paper-repeats 0) | | |",
        (f"| fast ({fa['config']}) | {fa['median_s'] * 1000:.0f} ms | {fa['per_s']:.2f} "
         f"| {fa['peak_mem_mb']:.0f} MB |"),
        (f"| fast, batch {fb['batch']} | {fb['median_s'] * 1000:.0f} ms / batch "
         f"| {fb['per_s']:.2f} | {fb['peak_mem_mb']:.0f} MB |"),
    ]
    if r.get("fast_mean"):
        fm = r["fast_mean"]
        rows.append(f"| fast, mean of {fm['samples']} samples (one batch) | {fm['median_s'] * 1000:.0f} ms "
                    f"({fm['vs_one_sample']:.2f}x one sample) | {fm['per_s']:.2f} | {fm['peak_mem_mb']:.0f} MB |")
    if r.get("fast_compiled"):
        fc = r["fast_compiled"]
        rows.append(f"| fast, {fc['config']} | {fc['median_s'] * 1000:.0f} ms ({fc['vs_eager']:.2f}x eager; compile + "
                    f"warm-up {fc['compile_and_warmup_s']:.0f} s) | {fc['per_s']:.2f} | {fc['peak_mem_mb']:.0f} MB |")
    n_ref, vs_paper, vs_ode = (r.get("psnr_ref_steps", 100), r["psnr_fast_vs_paper100_db"],
                               r["psnr_fast_vs_same_solver100_db"])
    psnr_line = (f"PSNR fast vs {n_ref}-step references on {len(vs_ode)} fixed images: "
                 + (f"vs paper default (Euler-a {n_ref}) mean {_mean(vs_paper):.1f} dB; " if vs_paper else "")
                 + f"vs the same solver at {n_ref} steps (same initial noise) mean {_mean(vs_ode):.1f} dB."
                 if vs_ode else "PSNR vs references: not measured (--psnr-images 0).")
    rows += [
        "",
        (f"Speed-up fast vs paper default: **{r['speedup']:.1f}x** (single image, same process, same weights)."
         if r["speedup"] else "Speed-up vs paper default: not measured (--paper-repeats 0)."),
        psnr_line,
        f"Machine: {r['machine']}; model: {r['model']}; {r['resolution']}², {r.get('dtype', '')}; date {r['date']}.",
    ]
    return "\n".join(rows)
