"""Run the simulated robot with live foresight in one process, for machines without ``ros2 launch``.

The sim bridge (live SAPIEN task, or --episode to replay a recording) and the foresight node run in one
MultiThreadedExecutor with the same parameters as launch/sim.launch.py (config/sim_bridge.yaml and
config/foresight.yaml, then the options below). The topics are real ROS topics: rviz2 or ``frameplan record``
on the same ROS_DOMAIN_ID see them. Every foresight output received is written to --out as PNGs, plus
contact_sheet.png (input | prediction per instruction) and summary.json (diagnostics, counts)."""
from __future__ import annotations

import argparse
from pathlib import Path

TASKS = ("block_hammer_beat", "block_handover", "blocks_stack_easy")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default=None, choices=TASKS, help="SAPIEN task (default: config/sim_bridge.yaml)")
    parser.add_argument("--episode", default=None, help="replay this RoboTwin episode (folder or .hdf5) "
                        "instead of running the simulator")
    parser.add_argument("--mode", default=None, choices=("predictor", "planner"))
    parser.add_argument("--trigger", default=None, choices=("on_instruction", "continuous"))
    parser.add_argument("--model", default=None, help="checkpoint folder (default: the embedded model)")
    parser.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--seed", type=int, default=None, help="first episode's seed")
    parser.add_argument("--rate", type=float, default=None, help="camera rate in Hz")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds to run (default %(default)s)")
    parser.add_argument("--max-outputs", type=int, default=0,
                        help="stop after this many predictions/plans (0 = run for --duration)")
    parser.add_argument("--out", default="out/sim", help="output folder (default %(default)s)")
    parser.add_argument("--foresight-config", default=None, help="default: config/foresight.yaml")
    parser.add_argument("--bridge-config", default=None, help="default: config/sim_bridge.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.PARAM=VALUE",
                        help="any other parameter, e.g. --set foresight.seed=3 --set bridge.camera_type=Large_D435")
    parser.add_argument("--no-shm", action="store_true", help="do not set the Fast DDS shared-memory profile")


def _overrides(args: argparse.Namespace) -> tuple[dict, dict]:
    import yaml

    from frameplan_core.errors import ConfigError

    bridge, fore = {}, {}
    if args.task:
        bridge["task"] = args.task
    if args.episode:
        bridge.update(source="replay", episode=str(Path(args.episode).resolve()), loop=False)
    if args.seed is not None:
        bridge["seed"] = args.seed
    if args.rate is not None:
        bridge["rate" if not args.episode else "replay_rate"] = float(args.rate)
    for key in ("mode", "trigger", "model", "device", "steps"):
        if getattr(args, key) is not None:
            fore[key] = getattr(args, key)
    for item in args.overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set {item!r}: expected NODE.PARAM=VALUE with NODE 'foresight' or 'bridge'")
        key, raw = item.split("=", 1)
        target, name = key.split(".", 1)
        if target not in ("foresight", "bridge"):
            raise ConfigError(f"--set {item!r}: NODE must be 'foresight' or 'bridge', got {target!r}")
        (fore if target == "foresight" else bridge)[name] = yaml.safe_load(raw) if raw else ""
    return bridge, fore


class OutputCollector:
    """Subscribes to the foresight outputs and writes each as a PNG as it arrives."""

    def __init__(self, node, out: Path, prefix: str = "/frameplan", foresight=None) -> None:
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        self.out = out
        self.foresight = foresight  # in-process node: tells which instruction produced an output (by stamp)
        self.index: list[dict] = []
        self.instruction = None
        self.counts = {"predicted_image": 0, "comparison": 0, "plan/grid": 0, "plan/frames": 0}
        self.comparisons: list = []
        self.labels: list[str] = []
        qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        for name in self.counts:
            node.create_subscription(Image, f"{prefix}/{name}", self._writer(name), qos)
        node.create_subscription(String, f"{prefix}/instruction", self._on_instruction, qos)

    def _on_instruction(self, msg) -> None:
        self.instruction = msg.data

    def _instruction_for(self, stamp) -> str | None:
        key = (stamp.sec, stamp.nanosec)
        if self.foresight is not None:
            step = max(1, round(self.foresight.p.plan_frame_stamp_step * 1e9))
            total = stamp.sec * 10**9 + stamp.nanosec
            for (sec, nsec), text in reversed(list(self.foresight.recent_instructions)):
                t0 = sec * 10**9 + nsec
                if (sec, nsec) == key or (0 <= total - t0 < 64 * step and (total - t0) % step == 0):
                    return text
        return self.instruction

    @property
    def outputs(self) -> int:
        return self.counts["predicted_image"] + self.counts["plan/grid"]

    def _writer(self, name: str):
        from frameplan_core.image import write_image
        from frameplan_ros.convert import image_to_rgb

        def cb(msg) -> None:
            k = self.counts[name]
            self.counts[name] += 1
            rgb = image_to_rgb(msg, name).copy()
            path = self.out / f"{name.replace('/', '_')}_{k:04d}.png"
            write_image(path, rgb)
            stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
            instruction = self._instruction_for(msg.header.stamp)
            self.index.append({"topic": name, "file": path.name, "stamp": stamp, "instruction": instruction})
            if name == "comparison":
                self.comparisons.append(rgb)
                self.labels.append(instruction or "")

        return cb


def run(args: argparse.Namespace) -> int:
    import os
    import sys
    import time

    from frameplan_core import atomic
    from frameplan_core.errors import ConfigError, ModelError
    from frameplan_core.image import contact_sheet, write_image
    from frameplan_ros.testing import config_path

    bridge_yaml = Path(args.bridge_config) if args.bridge_config else config_path("sim_bridge.yaml")
    fore_yaml = Path(args.foresight_config) if args.foresight_config else config_path("foresight.yaml")
    if not args.no_shm:
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(config_path("fastdds_shm.xml")))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.duration <= 0:
        raise ConfigError(f"--duration {args.duration}: must be > 0")

    import rclpy
    from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor

    from frameplan_ros.foresight_node import ForesightNode
    from frameplan_ros.foresight_params import ForesightParams
    from frameplan_ros.params import check_names, check_yaml_against, overrides
    from frameplan_ros.sim_bridge_node import SimBridgeNode, SimBridgeParams

    bridge_over, fore_over = _overrides(args)
    check_names(SimBridgeParams, bridge_over, "--set bridge")  # a misspelt --set would silently do nothing
    check_names(ForesightParams, fore_over, "--set foresight")
    bridge_params = {**check_yaml_against(SimBridgeParams, bridge_yaml, "sim_bridge"), **bridge_over}
    fore_params = {**check_yaml_against(ForesightParams, fore_yaml, "foresight_node"), **fore_over}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # The simulator thread is CPU-bound Python; with the default 5 ms GIL switch interval the inference thread
    # waits up to 5 ms for every torch op it launches. A short interval keeps inference close to its solo speed.
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    rclpy.init()
    nodes = []
    summary: dict = {}
    try:
        foresight = ForesightNode(parameter_overrides=overrides(fore_params))
        nodes.append(foresight)
        collector_node = rclpy.create_node("frameplan_sim_collector")
        nodes.append(collector_node)
        collector = OutputCollector(collector_node, out, foresight.p.output_prefix.rstrip("/"), foresight)
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(foresight)
        executor.add_node(collector_node)
        # The camera starts once the model is loaded, so the first instruction is not spent on a loading node.
        t0 = time.monotonic()
        while foresight.model is None and time.monotonic() - t0 < args.duration:
            if "model_load" in foresight.health.errors:
                raise ModelError(foresight.health.errors["model_load"].message)
            executor.spin_once(timeout_sec=0.1)
        if foresight.model is None:
            raise ModelError(f"model not loaded after {args.duration:.0f} s (--duration)")
        print(f"model: {foresight.model_info}")
        bridge = SimBridgeNode(parameter_overrides=overrides(bridge_params))
        nodes.append(bridge)
        executor.add_node(bridge)
        print(f"running {args.duration:.0f} s; outputs -> {out}/ (Ctrl-C to stop early)")
        t_end = time.monotonic() + args.duration
        idle_since = None
        try:
            while rclpy.ok() and time.monotonic() < t_end:
                executor.spin_once(timeout_sec=0.1)
                if args.max_outputs and collector.outputs >= args.max_outputs:
                    # let the trailing messages of this output (comparison, plan frames) arrive
                    for _ in range(10):
                        executor.spin_once(timeout_sec=0.05)
                    break
                # a finished source (replay without loop, --set bridge.max_episodes=N) and an idle worker: done
                if bridge.finished.is_set() and not foresight.worker.busy and not foresight.worker.slot.pending:
                    idle_since = idle_since or time.monotonic()
                    if time.monotonic() - idle_since > 2.0:
                        break
                else:
                    idle_since = None
        except (KeyboardInterrupt, ExternalShutdownException):
            print("interrupted")
        level, message, values = foresight.diagnostics_values()
        summary = {"foresight": {"level": level, "message": message, **{k: v for k, v in values.items()}},
                   "bridge": {"frames_published": bridge.published, "episode": bridge.episode,
                              "errors": {k: r.message for k, r in bridge.health.errors.items()}},
                   "outputs": collector.counts, "files": collector.index,
                   "parameters": {"foresight": fore_params, "bridge": bridge_params}}
        bridge._stop.set()  # no new frames while the executor winds down
        executor.shutdown(timeout_sec=2.0)
    finally:
        for n in reversed(nodes):
            n.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
        sys.setswitchinterval(switch_interval)
    if collector.comparisons:
        sheet = contact_sheet(collector.comparisons[-12:], cols=2, cell=240, labels=collector.labels[-12:])
        write_image(out / "contact_sheet.png", sheet)
        summary["contact_sheet"] = "contact_sheet.png"
    atomic.write_json(out / "summary.json", summary)
    print(f"bridge published {summary['bridge']['frames_published']} frame(s); foresight outputs {collector.counts}")
    if summary["bridge"]["errors"]:
        print(f"bridge errors: {summary['bridge']['errors']}")
    if not collector.outputs:
        print("no foresight output was received (see summary.json: diagnostics)")
        return 1
    print(f"wrote {out}/ ({len(collector.index)} PNGs{', contact_sheet.png' if collector.comparisons else ''}, "
          "summary.json)")
    return 0
