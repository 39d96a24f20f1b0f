"""Simulated collection speed: frames per second with each camera alone and with all four (RoboTwin's D435,
320x240), on whatever Vulkan device SAPIEN picks, and the time to collect and convert the seed paper's dataset
(hammer 100, handover 204, stack 298 InstructPix2Pix pairs at interval 50) end to end.

Episode lengths come from running each scripted expert without rendering; the dataset estimate is
episodes x (frames / head-camera fps + scene setup) + the measured conversion time per pair.

The rollout API section (``--api-only`` runs just it) times SimEnv against the direct path in the same process,
repetitions interleaved, medians quoted: physics ticks per second replaying a recorded expert episode's commands
with and without a head-camera render every 15 ticks, and per task the episode time of the scripted expert
(collector's ``stream`` vs ``SimEnv.step`` per tick) and of an open-loop replay (direct ``set_arm_target`` +
physics tick vs ``SimEnv.step`` interpolated). Prints Markdown tables for docs/BENCHMARKS.md; --json writes the
numbers."""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

SEED_PAIRS = {"block_hammer_beat": 100, "block_handover": 204, "blocks_stack_easy": 298}
CAMERA_SETS = {"head_camera": ("head_camera",), "front_camera": ("front_camera",), "left_camera": ("left_camera",),
               "right_camera": ("right_camera",), "all four": ("head_camera", "front_camera", "left_camera",
                                                             "right_camera")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default="block_handover", help="task used for the fps rows (default block_handover)")
    parser.add_argument("--frames", type=int, default=30, help="frames timed per camera set (after one warm-up)")
    parser.add_argument("--camera-type", default="D435")
    parser.add_argument("--save-freq", type=int, default=15, help="sim steps between frames (RoboTwin 1.0: 15)")
    parser.add_argument("--interval", type=int, default=50, help="frames between pair input and target")
    parser.add_argument("--no-shadows", action="store_true", help="directional light without shadows")
    parser.add_argument("--skip-convert", action="store_true", help="do not time the conversion step")
    parser.add_argument("--json", default=None, help="write results as JSON here")
    parser.add_argument("--api-only", action="store_true",
                        help="only the rollout API section (SimEnv vs the direct path), not the collection rates")
    parser.add_argument("--api-reps", type=int, default=3, help="interleaved repetitions per API variant (median)")
    parser.add_argument("--api-tasks", nargs="+", default=list(SEED_PAIRS), choices=list(SEED_PAIRS),
                        help="tasks timed per episode in the rollout API section (default: all three)")
    parser.add_argument("--api-render-ticks", type=int, default=600,
                        help="physics ticks timed with a head-camera render every 15 ticks (default 600)")


def _config(task: str, args, cameras):
    from frameplan_core.sim.task_config import load_task_config

    over = [f"head_camera_type={args.camera_type}", f"save_freq={args.save_freq}",
            f"cameras=[{', '.join(cameras) or 'head_camera'}]", f"shadows={'false' if args.no_shadows else 'true'}"]
    return load_task_config(task, None, over)


def _episode_length(task: str, args) -> dict:
    """Frames per episode and simulation-only seconds (physics + planning), from a run without rendering."""
    from frameplan_core.sim import make_task
    from frameplan_core.sim.collect import episode_seed

    cfg = _config(task, args, ["head_camera"])
    for attempt in range(cfg.max_attempts):
        t0 = time.perf_counter()
        t = make_task(task, seed=episode_seed(cfg, 0, attempt), camera_type=args.camera_type, cameras=(), config=cfg)
        setup = time.perf_counter() - t0
        try:
            n = sum(1 for _ in t.stream(args.save_freq))
            ok = t.success()
        except Exception as exc:  # a failed plan: the collector retries the next seed, so do we
            from frameplan_core.sim.robots import PlanningError

            if not isinstance(exc, PlanningError):
                raise
            ok = False
        sim_s = time.perf_counter() - t0 - setup
        t.close()
        if ok:
            return {"frames": n, "sim_s": sim_s, "setup_s": setup, "attempts": attempt + 1}
    raise RuntimeError(f"{task}: no successful expert run in {cfg.max_attempts} seeds")


def _fps(task: str, args, cameras) -> dict:
    from frameplan_core.sim import make_task

    cfg = _config(task, args, list(cameras))
    t = make_task(task, seed=0, camera_type=args.camera_type, cameras=cameras, config=cfg)
    it = t.stream(args.save_freq)
    next(it)  # warm-up: first upload of the scene to the renderer
    n, t0 = 0, time.perf_counter()
    for _ in it:
        n += 1
        if n >= args.frames:
            break
    dt = time.perf_counter() - t0
    t.close()
    return {"frames": n, "seconds": dt, "fps": n / dt, "ms_per_frame": 1000 * dt / n}


def _convert_time(args) -> dict:
    """Collect one short head-camera episode per task at the real save_freq and convert it; seconds per pair."""
    from frameplan_cli.main import main
    from frameplan_core.sim.collect import collect

    tmp = Path(tempfile.mkdtemp(prefix="frameplan-bench-sim-"))
    try:
        for task in SEED_PAIRS:
            cfg = _config(task, args, ["head_camera"])
            cfg.episode_num = 1
            collect(cfg, tmp / "data", workers=1, progress=False)
        t0 = time.perf_counter()
        rc = main(["convert", "robotwin", str(tmp / "data"), str(tmp / "ip2p"), "--to", "ip2p",
                   "--interval", str(args.interval)])
        dt = time.perf_counter() - t0
        if rc != 0:
            raise RuntimeError(f"frameplan convert failed with code {rc}")
        seeds = json.loads((tmp / "ip2p" / "seeds.json").read_text())
        pairs = sum(len(v) for _, v in seeds)
        return {"pairs": pairs, "seconds": dt, "s_per_pair": dt / max(1, pairs)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- rollout API

def _expert_run(task: str, seed: int, via_env: bool) -> dict:
    """The scripted expert without rendering: the collector's ``stream`` (direct) or ``SimEnv.step`` per tick;
    returns seconds, ticks, success and the per-15-tick commands (what an episode records)."""
    from frameplan_core.sim import make_task
    from frameplan_core.sim.env import SimEnv

    if via_env:
        env = SimEnv(cameras=(), render_every=0)
        env.reset(task, seed)
        t0, c0 = time.perf_counter(), time.process_time()
        cmds = []
        for cmd in env.expert():
            if env.tick % 15 == 0:
                cmds.append(cmd.targets)
            env.step(cmd, ticks=1)
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        out = {"seconds": dt, "cpu_s": cpu, "ticks": env.tick, "success": env.success(),
               "plan_s": env.task.timings["plan_s"]}
        env.close()
    else:
        t = make_task(task, seed=seed, cameras=())
        t0, c0 = time.perf_counter(), time.process_time()
        cmds = [f.joint_command_full for f in t.stream(15)]
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        out = {"seconds": dt, "cpu_s": cpu, "ticks": t.step_count, "success": t.success(),
               "plan_s": t.timings["plan_s"]}
        t.close()
    out["commands"] = cmds
    return out


def _replay_run(task: str, seed: int, commands, ticks: int, via_env: bool, render_every: int = 0,
                camera_type: str = "D435") -> dict:
    """Replay per-15-tick commands open loop, interpolated, for ``ticks`` ticks: SimEnv, or the direct path (both
    arms' targets set every tick with Arm.set_arm_target/set_gripper, then one physics tick). ``render_every``
    renders the head camera every that many 15-tick steps."""
    import numpy as np

    from frameplan_core.sim import make_task
    from frameplan_core.sim.env import SimEnv

    cams = ("head_camera",) if render_every else ()
    steps = min(len(commands) - 1, ticks // 15)
    if via_env:
        env = SimEnv(cameras=cams, camera_type=camera_type, render_every=render_every, interpolate=True,
                     ticks_per_step=15)
        env.reset(task, seed)
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(1, steps + 1):
            env.step(commands[i])
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        out = {"seconds": dt, "cpu_s": cpu, "ticks": env.tick, "success": env.success()}
        env.close()
        return out
    t = make_task(task, seed=seed, camera_type=camera_type, cameras=cams)
    from frameplan_core.sim.scene import TIMESTEP

    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(1, steps + 1):
        prev, cur = np.asarray(commands[i - 1]), np.asarray(commands[i])
        d = cur - prev
        vel = (d[0:7] / (15 * TIMESTEP), d[8:15] / (15 * TIMESTEP))  # the ramp's velocity, as SimEnv sends it
        for k in range(1, 16):
            c = prev + d * (k / 15)
            for side, o, v in (("left", 0, vel[0]), ("right", 8, vel[1])):
                arm = t.arms[side]
                arm.set_arm_target(c[o:o + 7], v)
                arm.set_gripper(c[o + 7])
            t._physics_step()
        if render_every and i % render_every == 0:
            t.cameras.capture(cams, depth=False)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {"seconds": dt, "cpu_s": cpu, "ticks": t.step_count, "success": t.success()}
    t.close()
    return out


def _median(xs) -> float:
    import statistics

    return float(statistics.median(xs))


def _api(args) -> dict:
    """SimEnv against the direct path, same process, repetitions interleaved; medians."""
    from frameplan_core.sim import render

    reps = max(1, args.api_reps)
    per_task = {}
    for task in args.api_tasks:
        runs = {k: [] for k in ("expert_direct", "expert_env", "replay_direct", "replay_env")}
        _expert_run(task, 0, False)  # warm-up (first scene of the process)
        commands = ticks = None
        for _ in range(reps):
            for key, env in (("expert_direct", False), ("expert_env", True)):
                r = _expert_run(task, 0, env)
                runs[key].append(r)
                commands, ticks = r["commands"], r["ticks"]
            for key, env in (("replay_direct", False), ("replay_env", True)):
                runs[key].append(_replay_run(task, 0, commands, ticks, env))
        per_task[task] = {k: {"median_s": _median([r["seconds"] for r in v]),
                              "median_cpu_s": _median([r["cpu_s"] for r in v]), "ticks": v[0]["ticks"],
                              "success": all(r["success"] for r in v),
                              "plan_s": _median([r.get("plan_s", 0.0) for r in v])} for k, v in runs.items()}
        print(f"  {task}: expert {per_task[task]['expert_direct']['median_s']:.2f} s direct, "
              f"{per_task[task]['expert_env']['median_s']:.2f} s SimEnv; replay "
              f"{per_task[task]['replay_direct']['median_s']:.2f} s direct, "
              f"{per_task[task]['replay_env']['median_s']:.2f} s SimEnv", flush=True)
    # stepping rate on the fps task: its recorded commands replayed, without and with a head-camera render
    commands = _expert_run(args.task, 0, False)["commands"]
    rates = {}
    variants = [("no render, direct", False, 0, 10**9), ("no render, SimEnv", True, 0, 10**9),
                ("head camera every 15 ticks, direct", False, 1, args.api_render_ticks),
                ("head camera every 15 ticks, SimEnv", True, 1, args.api_render_ticks)]
    _replay_run(args.task, 0, commands, 30, False, 1, args.camera_type)  # warm-up: shader compilation
    samples = {name: [] for name, *_ in variants}
    for _ in range(reps):
        for name, env, every, ticks in variants:
            r = _replay_run(args.task, 0, commands, ticks, env, every, args.camera_type)
            samples[name].append((r["ticks"] / r["seconds"], r["ticks"] / r["cpu_s"]))
    for name, v in samples.items():
        rates[name] = {"median_steps_per_s": _median([x for x, _ in v]),
                       "median_steps_per_cpu_s": _median([y for _, y in v]), "samples": v}
    return {"reps": reps, "device": render.device_summary(), "per_task": per_task, "steps_per_s": rates,
            "fps_task": args.task, "camera_type": args.camera_type}


def _print_api(api: dict) -> None:
    r = api["steps_per_s"]
    print(f"\nRollout API, {api['fps_task']} (recorded commands replayed, interpolated, 15 ticks a step; median of "
          f"{api['reps']}; wall clock, and per CPU second of this process):\n")
    print("| stepping | direct (set_arm_target + physics tick) | SimEnv.step | SimEnv / direct (wall, CPU) |")
    print("|---|---|---|---|")
    for label in ("no render", "head camera every 15 ticks"):
        d, e = r[f"{label}, direct"], r[f"{label}, SimEnv"]
        print(f"| {label} ({api['camera_type']}) | {d['median_steps_per_s']:,.0f} steps/s "
              f"({d['median_steps_per_cpu_s']:,.0f}/CPU s) | {e['median_steps_per_s']:,.0f} steps/s "
              f"({e['median_steps_per_cpu_s']:,.0f}/CPU s) | {e['median_steps_per_s'] / d['median_steps_per_s']:.2f}, "
              f"{e['median_steps_per_cpu_s'] / d['median_steps_per_cpu_s']:.2f} |")
    print("\n| task | ticks | expert: stream (collector) | expert: SimEnv.step per tick | ratio (wall, CPU) "
          "| replay: direct | replay: SimEnv.step | ratio (wall, CPU) |")
    print("|---|---|---|---|---|---|---|---|")
    for task, v in api["per_task"].items():
        cells = []
        for a, b in (("expert_direct", "expert_env"), ("replay_direct", "replay_env")):
            x, y = v[a], v[b]
            cells.append(f"{x['median_s']:.2f} s ({x['median_cpu_s']:.2f} CPU) | {y['median_s']:.2f} s "
                         f"({y['median_cpu_s']:.2f} CPU) | {y['median_s'] / x['median_s']:.2f}, "
                         f"{y['median_cpu_s'] / x['median_cpu_s']:.2f}")
        print(f"| {task} | {v['expert_direct']['ticks']} | {cells[0]} | {cells[1]} |")


def run(args: argparse.Namespace) -> int:
    from frameplan_core.sim import render

    render.configure()
    if args.api_only:
        api = _api(args)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        result = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
                  "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, render device: {api['device']}",
                  "load_average_1min": load, "rollout_api": api}
        print(f"\n{result['date']} — {result['machine']} (1-min load average {load:.1f})")
        _print_api(api)
        if args.json:
            from frameplan_core import atomic

            atomic.write_json(args.json, result)
        return 0
    rows = {}
    for label, cams in CAMERA_SETS.items():
        rows[label] = _fps(args.task, args, cams)
        print(f"  {label}: {rows[label]['fps']:.2f} frames/s", flush=True)
    device = render.device_summary()
    lengths = {task: _episode_length(task, args) for task in SEED_PAIRS}
    conv = None if args.skip_convert else _convert_time(args)
    api = _api(args)
    estimate = {}
    total = {"head": 0.0, "all": 0.0}
    for task, pairs in SEED_PAIRS.items():
        n = lengths[task]["frames"]
        per_ep = len(range(0, n - args.interval, args.interval))
        episodes = math.ceil(pairs / per_ep) if per_ep else None
        if episodes is None:
            raise RuntimeError(f"{task}: {n} frames per episode give no pair at interval {args.interval}")
        setup = lengths[task]["setup_s"]
        head_s = episodes * (n / rows["head_camera"]["fps"] + setup)
        all_s = episodes * (n / rows["all four"]["fps"] + setup)
        estimate[task] = {"pairs": pairs, "frames_per_episode": n, "pairs_per_episode": per_ep, "episodes": episodes,
                          "frames": episodes * n, "head_only_s": head_s, "all_cameras_s": all_s}
        total["head"] += head_s
        total["all"] += all_s
    conv_s = conv["s_per_pair"] * sum(SEED_PAIRS.values()) if conv else 0.0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    result = {"date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, render device: {device}",
              "load_average_1min": load, "camera_type": args.camera_type, "shadows": not args.no_shadows,
              "save_freq": args.save_freq, "fps_task": args.task, "fps": rows, "episodes": lengths,
              "conversion": conv, "dataset_estimate": estimate,
              "dataset_total_s": {"head_camera_only": total["head"] + conv_s, "all_four_cameras": total["all"] + conv_s},
              "rollout_api": api}
    print(f"\n{result['date']} — {result['machine']} (1-min load average {load:.1f}); {args.camera_type}, "
          f"shadows {'on' if not args.no_shadows else 'off'}, save_freq {args.save_freq}, task {args.task}\n")
    print("| cameras rendered | frames/s | ms/frame (render + physics + planning) |")
    print("|---|---|---|")
    for label, r in rows.items():
        print(f"| {label} | {r['fps']:.2f} | {r['ms_per_frame']:.0f} |")
    print(f"\n| task | frames/episode | pairs/episode @{args.interval} | episodes for seed pairs | frames | head only "
          "| all four cameras |")
    print("|---|---|---|---|---|---|---|")
    for task, e in estimate.items():
        print(f"| {task} ({e['pairs']} pairs) | {e['frames_per_episode']} | {e['pairs_per_episode']} | {e['episodes']} "
              f"| {e['frames']} | {e['head_only_s'] / 60:.1f} min | {e['all_cameras_s'] / 60:.1f} min |")
    if conv:
        print(f"\nconversion: {conv['pairs']} pairs in {conv['seconds']:.2f} s ({conv['s_per_pair'] * 1000:.0f} ms/pair) "
              f"-> {conv_s / 60:.2f} min for 602 pairs")
    print(f"\n602-pair dataset end to end (collection + conversion, 1 worker): head camera only "
          f"{result['dataset_total_s']['head_camera_only'] / 60:.1f} min; all four cameras "
          f"{result['dataset_total_s']['all_four_cameras'] / 60:.1f} min")
    _print_api(api)
    if args.json:
        from frameplan_core import atomic

        atomic.write_json(args.json, result)
    return 0
