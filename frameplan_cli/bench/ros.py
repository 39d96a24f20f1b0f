"""ROS 2 overhead of the foresight node: camera publish -> predicted image receive, against bare predict().

For each transport (default Fast DDS transports, and config/fastdds_shm.xml) and each input size, a foresight
node runs in its own process (continuous trigger) and this process publishes frames one at a time, waiting for
each prediction: end-to-end latency = receive time - publish time (same machine clock). The node's own
inference time per frame (from /diagnostics) gives the ROS overhead = end-to-end - inference; bare predict() on
the same input in this process is the baseline. Then a 30 Hz camera stream measures the sustained output rate
and the fraction of frames dropped by the latest-frame-wins buffer. Each transport runs in a fresh child
process, because Fast DDS reads its profile once per process."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = {"320x240": (240, 320), "640x480": (480, 640)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="predictor checkpoint folder (default: the embedded model)")
    parser.add_argument("--random-weights", action="store_true",
                        help="use a random-weight tiny predictor (overhead numbers do not depend on weights)")
    parser.add_argument("--resolution", type=int, default=64, help="model resolution with --random-weights")
    parser.add_argument("--steps", type=int, default=1, help="sampling steps (small: the overhead is the subject)")
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--transports", nargs="+", default=["default", "shm"], choices=["default", "shm"])
    parser.add_argument("--frames", type=int, default=12, help="sequential frames per size for latency")
    parser.add_argument("--stream-seconds", type=float, default=10.0, help="30 Hz stream duration per size")
    parser.add_argument("--frame-timeout", type=float, default=60.0, help="seconds to wait for one prediction")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the results as JSON here")
    parser.add_argument("--_child", default=None, help=argparse.SUPPRESS)


def _pct(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) if values else float("nan")


def measure(args: argparse.Namespace, model_dir: str, transport: str, log_dir: str) -> list[dict]:
    """Runs in a child process whose Fast DDS profile is already chosen through the environment."""
    import numpy as np
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from frameplan_core.predictor import FramePredictor
    from frameplan_ros import convert
    from frameplan_ros.testing import NodeProcess, Probe, config_path, diagnostic_values

    model = FramePredictor.from_pretrained(model_dir, device=args.device)
    inputs = {size: np.random.default_rng(0).integers(0, 255, SIZES[size] + (3,), dtype=np.uint8)
              for size in args.sizes}
    bare: dict[str, list[float]] = {}
    for size, rgb in inputs.items():  # baseline first, so the node process does not compete with it
        bare[size] = []
        for i in range(max(3, args.frames // 2) + 1):
            t0 = time.perf_counter()
            model.predict(rgb, "stack the blocks", steps=args.steps, seed=0, output_size="input")
            if i:
                bare[size].append((time.perf_counter() - t0) * 1e3)
    del model
    node = NodeProcess("frameplan_ros.foresight_node", config_path("foresight.yaml"),
                       {"model": model_dir, "device": args.device, "steps": args.steps, "trigger": "continuous",
                        "default_instruction": "stack the blocks", "diagnostics_period": 0.2,
                        "publish_comparison": False}, log_path=Path(log_dir) / f"node_{transport}.log")
    probe = Probe("bench_probe")
    arrivals: dict[int, float] = {}

    def on_pred(msg):
        arrivals[msg.header.stamp.nanosec + 10**9 * msg.header.stamp.sec] = time.perf_counter()

    probe.listen(Image, "/frameplan/predicted_image", on_message=on_pred)
    probe.listen(DiagnosticArray, "/diagnostics")
    pub = probe.publisher(Image, "/camera/camera/color/image_raw", qos_profile_sensor_data)

    def diag():
        for arr in reversed(probe.messages("/diagnostics")):
            vals = diagnostic_values(arr, "foresight")
            if vals:
                return vals[0][2]
        return {}

    results = []
    try:
        if not probe.wait_for(lambda: diag().get("model", "not loaded") != "not loaded", 300):
            raise RuntimeError(f"foresight node did not load its model in 300 s:\n{node.log_text()[-2000:]}")
        probe.wait_matched([pub])
        for s_index, (size, rgb) in enumerate(inputs.items()):
            msg = convert.numpy_to_image(rgb, "rgb8", frame_id="camera_color_optical_frame")
            e2e, overhead, infer, lost = [], [], [], 0
            for i in range(args.frames + 2):
                stamp_ns = 10**9 * (100 + 100 * s_index) + i
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
                n_out = int(diag().get("outputs", 0))
                t_pub = time.perf_counter()
                pub.publish(msg)
                if not probe.wait_for(lambda s=stamp_ns: s in arrivals, args.frame_timeout):
                    lost += 1  # best-effort input lost on the way (or a very slow inference)
                    if lost >= 3 and not e2e:
                        break  # this transport does not deliver this size: reported as lost, not waited for
                    continue
                # one frame in flight: the next diagnostics with one more output carries this frame's inference time
                probe.wait_for(lambda n=n_out: int(diag().get("outputs", 0)) > n, 10)
                if i >= 2:  # first two: warm-up
                    ms = (arrivals[stamp_ns] - t_pub) * 1e3
                    inf = float(diag().get("last_inference_ms", "nan"))
                    e2e.append(ms)
                    infer.append(inf)
                    overhead.append(ms - inf)
                time.sleep(0.05)
            time.sleep(0.5)
            d = diag()
            inputs0, outputs0, dropped0 = int(d["inputs"]), int(d["outputs"]), int(d["frames_dropped"])
            t_end = time.monotonic() + args.stream_seconds  # sustained 30 Hz camera
            sent, t_next = 0, time.monotonic()
            while time.monotonic() < t_end:
                msg.header.stamp = probe.now()
                pub.publish(msg)
                sent += 1
                t_next += 1 / 30
                time.sleep(max(0.0, t_next - time.monotonic()))
            time.sleep(1.0)
            d = diag()
            received = int(d["inputs"]) - inputs0
            outputs = int(d["outputs"]) - outputs0
            dropped = int(d["frames_dropped"]) - dropped0
            results.append({
                "transport": transport, "size": size, "frames": len(e2e), "lost_sequential": lost,
                "bare_predict_p50_ms": _pct(bare[size], 50), "node_inference_p50_ms": _pct(infer, 50),
                "e2e_p50_ms": _pct(e2e, 50), "e2e_p95_ms": _pct(e2e, 95),
                "ros_overhead_p50_ms": _pct(overhead, 50), "ros_overhead_p95_ms": _pct(overhead, 95),
                "ros_overhead_min_ms": min(overhead) if overhead else float("nan"),
                "overhead_vs_bare_p50_ms": _pct(e2e, 50) - _pct(bare[size], 50),
                "stream_sent": sent, "stream_received": received, "stream_outputs": outputs,
                "stream_output_hz": outputs / args.stream_seconds, "stream_dropped": dropped,
                "stream_drop_rate": dropped / received if received else float("nan"),
                "stream_input_loss": 1 - received / sent if sent else float("nan"),
            })
    finally:
        probe.close()
        node.interrupt(timeout=30)
    return results


def _table(rows: list[dict]) -> str:
    head = ("| transport | input | e2e p50 / p95 (ms) | node inference p50 (ms) | ROS overhead p50 / p95 (ms) | "
            "bare predict() p50 (ms) | 30 Hz: received / output Hz / dropped |")
    lines = [head, "|" + "---|" * 7]
    for r in rows:
        lines.append(f"| {r['transport']} | {r['size']} | {r['e2e_p50_ms']:.1f} / {r['e2e_p95_ms']:.1f} | "
                     f"{r['node_inference_p50_ms']:.1f} ({r['frames']} ok, {r['lost_sequential']} lost) | "
                     f"{r['ros_overhead_p50_ms']:.1f} / {r['ros_overhead_p95_ms']:.1f} | "
                     f"{r['bare_predict_p50_ms']:.1f} | {r['stream_received']}/{r['stream_sent']} / "
                     f"{r['stream_output_hz']:.2f} / {100 * r['stream_drop_rate']:.0f}% |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from frameplan_core.errors import ModelError

    if args._child:
        transport, model_dir, out = args._child.split("|")
        rows = measure(args, model_dir, transport, str(Path(out).parent))
        Path(out).write_text(json.dumps(rows))
        return 0
    from frameplan_core.paths import config_path

    with tempfile.TemporaryDirectory(prefix="frameplan_bench_ros_") as tmp:
        if args.random_weights:
            from frameplan_core.predictor import FramePredictor, PredictorConfig

            cfg = PredictorConfig.preset("tiny")
            cfg.resolution = args.resolution
            model_dir = str(Path(tmp) / "model")
            FramePredictor.from_config(cfg, seed=0, device="cpu").save_pretrained(model_dir)
            what = f"random-weight tiny predictor at {args.resolution}px"
        else:
            model_dir = args.model or "tiny"
            from frameplan_core.predictor import FramePredictor

            try:
                FramePredictor.from_pretrained(model_dir, device="cpu")
            except ModelError as exc:
                raise ModelError(f"{exc} (or run with --random-weights: the overhead does not depend on weights)") from None
            what = f"model {model_dir}"
        rows = []
        for transport in args.transports:
            env = {k: v for k, v in os.environ.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}
            if transport == "shm":
                env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(config_path("fastdds_shm.xml"))
            env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
            out = Path(tmp) / f"{transport}.json"
            cmd = [sys.executable, "-m", "frameplan_cli", "bench", "ros", "--_child",
                   f"{transport}|{model_dir}|{out}", "--steps", str(args.steps), "--frames", str(args.frames),
                   "--stream-seconds", str(args.stream_seconds), "--device", args.device,
                   "--frame-timeout", str(args.frame_timeout), "--sizes", *args.sizes]
            print(f"[{transport}] measuring {', '.join(args.sizes)} ...", flush=True)
            r = subprocess.run(cmd, env=env, check=False)
            if r.returncode != 0:
                print(f"[{transport}] failed (exit {r.returncode})", file=sys.stderr)
                return 1
            rows += json.loads(out.read_text())
    print(f"\nmodel: {what}, {args.steps} step(s), device {args.device}; medians over {args.frames} frames\n")
    print(_table(rows))
    if args.json:
        from frameplan_core import atomic

        atomic.write_json(args.json, {"model": what, "steps": args.steps, "rows": rows})
    return 0
