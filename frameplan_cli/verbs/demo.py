"""The end-to-end demo behind `make demo`: simulate the three tasks, turn the episodes into datasets, run the
embedded predictor and planner on a simulated frame, and run the ROS 2 nodes live on the simulated robot.

Each stage runs for real; a stage whose prerequisite is missing (no Vulkan driver, no rclpy, embedded weights
not shipped yet) is reported as skipped with the reason. The summary says what ran and where its output is."""
from __future__ import annotations

import argparse
import importlib.util
import time
import traceback
from pathlib import Path

from frameplan_core.sim.task_config import TASK_NAMES as TASKS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    p.add_argument("--episodes", type=int, default=1, help="simulated episodes per task (default 1)")
    p.add_argument("--sim-seconds", type=float, default=30.0, help="wall-clock seconds of the live ROS demo")
    p.add_argument("--skip-ros", action="store_true", help="do not run the live ROS 2 stage")


class _Skip(Exception):
    """A stage cannot run here; the message says why."""


def _cli(argv: list[str]) -> None:
    from frameplan_cli.main import main

    rc = main([str(a) for a in argv])
    if rc != 0:
        raise RuntimeError(f"`frameplan {' '.join(map(str, argv))}` exited with {rc}")


def _demo_input(sim_dir: Path, out: Path) -> tuple[Path, str]:
    """First head-camera frame of the first simulated episode, saved as a PNG, and that episode's instruction."""
    from frameplan_core.data.episode import find_episodes
    from frameplan_core.image import write_image

    episodes = find_episodes(sim_dir)
    if not episodes:
        raise _Skip("no simulated episode to take an input frame from")
    ep = episodes[0]
    path = write_image(out / "input.png", ep.rgb(0, "head_camera"))
    text = (ep.instructions or {}).get("seen", [ep.task.replace("_", " ")])[0]
    return path, text


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    sim_dir, results = out / "sim", []

    def stage(name: str, fn) -> None:
        t0 = time.perf_counter()
        print(f"\n=== demo: {name} ===", flush=True)
        try:
            where = fn()
            results.append((name, "ok", where or "", time.perf_counter() - t0))
        except _Skip as exc:
            results.append((name, "skipped", str(exc), time.perf_counter() - t0))
        except Exception as exc:  # noqa: BLE001 -- a failed stage must not hide the others; the traceback is kept for the user
            traceback.print_exc()
            results.append((name, "FAILED", f"{type(exc).__name__}: {exc}", time.perf_counter() - t0))

    def collect():
        if importlib.util.find_spec("sapien") is None:
            raise _Skip("sapien is not installed (pip install -e '.[sim]')")
        for task in TASKS:
            _cli(["collect", "--task", task, "--episodes", args.episodes, "--out", sim_dir, "--preview"])
        return f"{sim_dir} (RoboTwin 1.0 episodes + preview PNGs)"

    def convert():
        if not sim_dir.exists():
            raise _Skip("no simulated episodes")
        _cli(["convert", "robotwin", sim_dir, "--to", "ip2p", out / "ip2p", "--interval", "50", "--overwrite",
              "--skip-bad"])
        _cli(["convert", "robotwin", sim_dir, "--to", "grid", out / "grid", "--size", "128", "--overwrite",
              "--skip-bad"])
        _cli(["inspect", out / "ip2p", "--sheet", out / "ip2p_sheet.png"])
        return f"{out / 'ip2p'}, {out / 'grid'}, {out / 'ip2p_sheet.png'}"

    def predict():
        image, text = _demo_input(sim_dir, out)
        u = out / "predicted_uncertainty.png"
        u.unlink(missing_ok=True)  # written again only when the model draws several samples
        _cli(["predict", "--image", image, "--instruction", text, "--out", out / "predicted.png"])
        return (f"{out / 'predicted.png'} (instruction: {text!r})" + (f"; uncertainty heat map {u}" if u.exists()
                                                                     else ""))

    def plan():
        image, text = _demo_input(sim_dir, out)
        _cli(["plan", "--image", image, "--instruction", text, "--out", out / "plan", "--overwrite"])
        u = out / "plan" / "uncertainty.png"
        return f"{out / 'plan'} (grid, nine frames, GIF" + (f", uncertainty heat map {u})" if u.exists() else ")")

    def ros():
        if args.skip_ros:
            raise _Skip("--skip-ros given")
        if importlib.util.find_spec("rclpy") is None:
            raise _Skip("rclpy is not importable (install the 'ros' extra or source a system ROS 2)")
        _cli(["sim", "--task", "block_hammer_beat", "--duration", args.sim_seconds, "--out", out / "ros"])
        return f"{out / 'ros'} (received foresight outputs + contact sheet)"

    stage("simulate the three tasks (SAPIEN, D435 head camera)", collect)
    stage("convert episodes to InstructPix2Pix and grid datasets", convert)
    stage("predict the future frame (embedded predictor)", predict)
    stage("plan nine frames (embedded grid planner)", plan)
    stage("live ROS 2: sim bridge -> foresight node", ros)

    lines = ["| stage | result | output / reason | seconds |", "| --- | --- | --- | --- |"]
    lines += [f"| {n} | {s} | {w} | {t:.1f} |" for n, s, w, t in results]
    summary = "\n".join(lines)
    (out / "SUMMARY.md").write_text("# frameplan demo\n\n" + summary + "\n")
    print("\n" + summary + f"\n\nSummary written to {out / 'SUMMARY.md'}")
    return 1 if any(s == "FAILED" for _, s, _, _ in results) else 0
