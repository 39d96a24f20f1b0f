"""Grid planner speed: median latency and peak memory of one 9-frame plan (256-px cells -> 768x768 grid).

Rows: ``tiny`` on the available device (the trained checkpoint when shipped, else the same architecture with
random weights: speed does not depend on the weights); with CUDA also a FLUX.1-dev-sized transformer with random
bf16 weights (architecture from frameplan_core/presets/planner_flux_dev_transformer.json, never fetched), timed
for the planner's shape (2304 target + 2304 condition tokens + 512 text tokens) and for the published anchor
shape (1024x1024 text-to-image: 4096 tokens, 28 steps; ~4.5 s on an H100). ``--flux-config`` times another FLUX
layout on any device (scripts/gpu_check.sh's CPU run uses a tiny one); ``--compile`` adds rows with the repeated
transformer blocks torch.compile'd, each beside its eager row."""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

from frameplan_cli.bench.memory import PeakMemory


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default="tiny",
                        help="planner to time ('tiny': shipped weights, or random init if not trained yet)")
    parser.add_argument("--cell-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's, 20)")
    parser.add_argument("--samples", type=int, default=None,
                        help="also time the mean of this many plans (default: the model's, when above 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="weights dtype (auto: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--no-flux", action="store_true", help="skip the FLUX.1-dev-sized rows on CUDA")
    parser.add_argument("--flux-config", default=None,
                        help="FLUX transformer architecture JSON for those rows (default: FLUX.1-dev's); given, the "
                             "rows run on any device, e.g. a tiny one to check the code path on the CPU")
    parser.add_argument("--no-anchor", action="store_true", help="skip the FLUX 1024² text-to-image anchor row")
    parser.add_argument("--compile", action="store_true",
                        help="also time one plan and the FLUX planner shape with the transformer blocks "
                             "torch.compile'd (regional compilation), after the eager rows")
    parser.add_argument("--compile-mode", default="default",
                        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
    parser.add_argument("--compile-backend", default="inductor",
                        help="torch.compile backend; 'eager' only traces with dynamo (a quick CPU check of the path)")
    parser.add_argument("--json", default=None, help="also write the results here")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _timed(fn, repeats: int, warmup: int, cuda: bool) -> tuple[float, list[float], float]:
    """(median s, all runs, peak MiB) — peak is CUDA max allocated or process RSS."""
    import torch

    for _ in range(warmup):
        fn()
    times = []
    with PeakMemory(torch.device("cuda" if cuda else "cpu")) as mem:
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            if cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    return statistics.median(times), times, mem.total_mb


def compile_transformer(model, args) -> None:
    """Regional compilation: each repeated block class compiled once (diffusers' ``compile_repeated_blocks``), which
    compiles a 57-block FLUX transformer in a fraction of the whole-model time; whole-model torch.compile otherwise."""
    kw = {"backend": args.compile_backend}
    if args.compile_mode != "default":
        kw["mode"] = args.compile_mode
    if getattr(model, "_repeated_blocks", None):
        model.compile_repeated_blocks(**kw)
    else:
        model.compile(**kw)


def _compiled_row(args, row: dict, fn, cuda: bool, model) -> dict:
    """Compile ``model`` in place, warm up (the compile time is reported), then time ``fn`` like the eager row."""
    import torch

    t0 = time.perf_counter()
    compile_transformer(model, args)
    fn()
    if cuda:
        torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    med, times, peak = _timed(fn, args.repeats, max(0, args.warmup - 1), cuda)
    return {**row, "median_s": med, "runs_s": times, "peak_mib": peak, "compile_and_warmup_s": warm,
            "vs_eager": row["median_s"] / med,
            "what": f"{row['what']}; torch.compile {args.compile_mode}/{args.compile_backend} (regional)"}


def bench_tiny(args, device) -> list[dict]:
    import numpy as np

    from frameplan_core.errors import ModelError
    from frameplan_core.planner import GridPlanner, PlannerConfig

    try:
        pl = GridPlanner.from_pretrained(args.checkpoint, device=device, dtype=args.dtype, cell_size=args.cell_size)
        weights = str(args.checkpoint)
    except ModelError:
        if args.checkpoint != "tiny":
            raise
        pl = GridPlanner.from_config(PlannerConfig.preset("tiny", cell_size=args.cell_size), seed=0, device=device,
                                     dtype=args.dtype)
        weights = "tiny (random init: no trained weights shipped yet)"
    img = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    steps = args.steps or pl.config.steps
    n_mean = pl.config.samples if args.samples is None else args.samples
    n_t = sum(p.numel() for p in pl.transformer.parameters())
    rows = []
    for samples in [1] + ([n_mean] if n_mean > 1 else []):  # one plan first: comparable across models
        def run(samples=samples):
            pl.text_cache.clear()  # time the text encoder too
            pl.plan(img, "strike the block with the hammer", trajectory=[[100, 300], [320, 200], [500, 260]],
                    steps=steps, seed=0, samples=samples)

        med, times, peak = _timed(run, args.repeats, args.warmup, pl.device.type == "cuda")
        what = "full plan(): text encode + VAE encode + sampling + VAE decode"
        if samples > 1:
            what += f"; mean of {samples} plans (one batch), {med / rows[0]['median_s']:.2f}x one plan"
        rows.append({"model": "tiny", "weights": weights, "device": str(pl.device),
                     "dtype": str(pl.dtype).replace("torch.", ""), "grid": f"{3 * args.cell_size}x{3 * args.cell_size}",
                     "steps": steps, "samples": samples, "median_s": med, "runs_s": times, "peak_mib": peak,
                     "transformer_params_m": n_t / 1e6, "what": what})
    if args.compile:
        def one_plan():
            pl.text_cache.clear()
            pl.plan(img, "strike the block with the hammer", trajectory=[[100, 300], [320, 200], [500, 260]],
                    steps=steps, seed=0, samples=1)

        rows.append(_compiled_row(args, rows[0], one_plan, pl.device.type == "cuda", pl.transformer))
    return rows


def _flux_config(path: str) -> dict:
    """A FluxTransformer2DModel config from a JSON file (keys starting with '_' are notes, as in our presets)."""
    import json

    from frameplan_core.errors import InputError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"--flux-config {path}: cannot read a JSON object ({exc})") from None
    if not isinstance(data, dict) or "axes_dims_rope" not in data:
        raise InputError(f"--flux-config {path}: expected a FluxTransformer2DModel config object with axes_dims_rope")
    return {k: v for k, v in data.items() if not k.startswith("_")}


def bench_flux(args, device, planner_tokens: int, planner_steps: int, cfg: dict | None = None) -> list[dict]:
    """FLUX.1-dev-sized transformer with random weights (bf16 on CUDA): the denoising loop only (no VAE/text), at
    the planner's shape and at the published 1024² text-to-image anchor shape, built once."""
    import torch
    from diffusers import FluxTransformer2DModel

    from frameplan_core.device import resolve_dtype
    from frameplan_core.planner import sampling
    from frameplan_core.planner.config import (
        FLUX_DEV_TRANSFORMER_JSON,
        flow_scheduler_config,
        load_preset_json,
    )

    cfg = dict(cfg or load_preset_json(FLUX_DEV_TRANSFORMER_JSON))
    cfg["axes_dims_rope"] = tuple(cfg["axes_dims_rope"])
    dev, dt = device, resolve_dtype(args.dtype, device)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dt)
    try:
        with torch.device(dev):
            model = FluxTransformer2DModel(**cfg).eval().requires_grad_(False)
    finally:
        torch.set_default_dtype(prev)
    sched = sampling.make_scheduler(flow_scheduler_config())
    text = torch.randn(1, 512, cfg["joint_attention_dim"], device=dev, dtype=dt)
    pooled = torch.randn(1, cfg["pooled_projection_dim"], device=dev, dtype=dt)
    gen = torch.Generator(device=dev)
    cuda = dev.type == "cuda"
    label = "FLUX.1-dev-sized" if args.flux_config is None else f"FLUX-layout ({Path(args.flux_config).name})"
    weights = "random (FLUX.1-dev architecture)" if args.flux_config is None else f"random ({args.flux_config})"
    n_params = sum(p.numel() for p in model.parameters()) / 1e6

    def runner(tokens: int, cond: bool, steps: int):
        side = round(tokens ** 0.5) * 2  # latent side
        c = torch.randn(1, tokens, cfg["in_channels"], device=dev, dtype=dt)

        def run():
            gen.manual_seed(0)
            if cond:
                sampling.sample(model, sched, c, (side, side), text, pooled, steps, 3.5, gen)
            else:  # plain text-to-image shape: no condition tokens
                ids = sampling.image_ids(side, side, device=dev, dtype=dt)
                x = torch.randn(1, tokens, cfg["in_channels"], device=dev, dtype=dt)
                txt_ids = torch.zeros(512, 3, device=dev, dtype=dt)
                with torch.no_grad():
                    for i in range(steps):
                        t = torch.full((1,), 1 - i / steps, device=dev, dtype=dt)
                        v = model(hidden_states=x, encoder_hidden_states=text, pooled_projections=pooled, timestep=t,
                                  img_ids=ids, txt_ids=txt_ids, guidance=torch.full((1,), 3.5, device=dev, dtype=dt),
                                  return_dict=False)[0]
                        x = x - v / steps
        return run

    def row(name: str, tokens: int, cond: bool, steps: int, run) -> dict:
        med, times, peak = _timed(run, args.repeats, args.warmup, cuda)
        return {"model": name, "weights": weights, "device": str(dev), "dtype": str(dt).replace("torch.", ""),
                "tokens": tokens * (2 if cond else 1) + 512, "steps": steps, "median_s": med, "runs_s": times,
                "peak_mib": peak, "transformer_params_m": n_params,
                "what": "transformer denoising loop only (no VAE, no text encoders)"}

    plan_run = runner(planner_tokens, True, planner_steps)
    rows = [row(f"{label} planner", planner_tokens, True, planner_steps, plan_run)]
    if not args.no_anchor:
        rows.append(row(f"{label} anchor 1024², 28 steps", 64 * 64, False, 28, runner(64 * 64, False, 28)))
    if args.compile:  # the planner shape only: each new shape would compile again
        rows.append(_compiled_row(args, rows[0], plan_run, cuda, model))
    return rows  # the model is freed with this frame


def run(args: argparse.Namespace) -> int:
    import torch

    from frameplan_core import atomic
    from frameplan_core.device import resolve_device
    from frameplan_core.errors import InputError

    if args.repeats < 1 or args.warmup < 0:
        raise InputError(f"--repeats {args.repeats} / --warmup {args.warmup}: need repeats >= 1, warmup >= 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    flux_cfg = _flux_config(args.flux_config) if args.flux_config else None  # a bad file fails before any timing
    rows = bench_tiny(args, device)
    if (device.type == "cuda" or flux_cfg) and not args.no_flux:
        rows += bench_flux(args, device, (3 * args.cell_size // 16) ** 2, args.steps or 20, flux_cfg)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    machine = (torch.cuda.get_device_name(0) if device.type == "cuda"
               else f"{_cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads")
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")  # noqa: UP017 (python 3.10 on ROS Humble)
    print("| model | device | grid/tokens | steps | median s | peak MiB | notes |\n|---|---|---|---|---|---|---|")
    for r in rows:
        size = r.get("grid") or f"{r['tokens']} tokens"
        extra = (f"; {r['vs_eager']:.2f}x eager, compile + warm-up {r['compile_and_warmup_s']:.0f} s"
                 if "vs_eager" in r else "")
        print(f"| {r['model']} | {r['device']} {r['dtype']} | {size} | {r['steps']} | {r['median_s']:.3f} | "
              f"{r['peak_mib']:.0f} | {r['what']}{extra}; {r['weights']} |")
    print(f"\nmachine: {machine}; date: {date}; command: frameplan bench planner "
          f"--cell-size {args.cell_size} --repeats {args.repeats}{' --compile' if args.compile else ''}")
    if args.json:
        atomic.write_json(Path(args.json), {"machine": machine, "date": date, "rows": rows})
    return 0
