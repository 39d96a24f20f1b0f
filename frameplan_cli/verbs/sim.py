"""Run the simulated robot with live foresight in one process, for machines without ``ros2 launch``.

The sim bridge (live SAPIEN task, or --episode to replay a recording) and the foresight node run in one
MultiThreadedExecutor with the same parameters as launch/sim.launch.py (config/sim_bridge.yaml and
config/foresight.yaml, then the options below). The topics are real ROS topics: rviz2 or ``frameplan record``
on the same ROS_DOMAIN_ID see them. Every foresight output received is written to --out as PNGs, plus
contact_sheet.png (input | prediction per instruction) and summary.json (diagnostics, counts).

``--mode policy`` closes the loop over DDS: the sim bridge becomes a simulated robot (``control: command``, stamped
with simulated time) and the foresight node's policy mode commands it (goal frame -> GoalPolicy -> JointTrajectory).
One episode runs until the task succeeds, ``--max-steps`` policy steps (frames) pass, or ``--duration`` seconds;
summary.json then holds ``closed_loop``: success, steps, command counts, latencies and how far the joints moved."""
from __future__ import annotations

import argparse
from pathlib import Path

from frameplan_core.sim.task_config import TASK_NAMES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", default=None, choices=TASK_NAMES,
                        help="SAPIEN task (default: config/sim_bridge.yaml)")
    parser.add_argument("--episode", default=None, help="replay this RoboTwin episode (folder or .hdf5) "
                        "instead of running the simulator")
    parser.add_argument("--mode", default=None, choices=("predictor", "planner", "policy"),
                        help="policy: one closed-loop episode (the policy's JointTrajectory drives the simulated robot)")
    parser.add_argument("--policy", default=None, help="policy mode: GoalPolicy folder (default: the embedded tiny)")
    parser.add_argument("--policy-goal", default=None, choices=("predictor", "planner"),
                        help="policy mode: goal frames from the predictor (default) or the planner (--model names it)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="policy mode: end the episode after this many policy steps (60 ms frames; default: the "
                        "bridge's max_ticks, 6000 ticks = 400 steps)")
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
    for key in ("mode", "trigger", "model", "device", "steps", "policy", "policy_goal"):
        if getattr(args, key) is not None:
            fore[key] = getattr(args, key)
    if args.mode == "policy":
        if args.episode:
            raise ConfigError("--mode policy drives the simulator; it cannot replay --episode")
        # one episode of the simulated robot, stamped with simulated time so that one frame is one policy step
        bridge.update(source="sim", control="command", clock="sim", loop=False, max_episodes=1)
        if args.max_steps is not None:
            if args.max_steps < 1:
                raise ConfigError(f"--max-steps {args.max_steps}: must be >= 1")
    elif args.max_steps is not None or args.policy is not None or args.policy_goal is not None:
        raise ConfigError("--max-steps, --policy and --policy-goal need --mode policy")
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


class JointRecorder:
    """The first and the last /joint_states the simulated robot published (did the commands move it?)."""

    def __init__(self, node, topic: str) -> None:
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import JointState

        self.first = self.last = None
        node.create_subscription(JointState, topic, self._on_state, qos_profile_sensor_data)

    def _on_state(self, msg) -> None:
        import numpy as np

        q = np.asarray(msg.position, dtype=np.float64)
        if self.first is None:
            self.first = q
        self.last = q

    def motion(self) -> float | None:
        """Largest change of an arm joint (rad) from the first state to the last; grippers left out."""
        import numpy as np

        from frameplan_ros.robot_model import GRIPPER_INDICES

        if self.first is None or len(self.first) != len(self.last):
            return None
        arm = np.delete(np.abs(self.last - self.first), list(GRIPPER_INDICES))
        return round(float(arm.max()), 5)


def closed_loop_summary(bridge, foresight, joints: JointRecorder, stopped_by: str) -> dict:
    """summary.json's ``closed_loop`` of ``--mode policy``: the episode's outcome and what it took."""
    robot = bridge.robot_values()
    _, _, values = foresight.diagnostics_values()
    stage = foresight.policy_stage

    def ms(key: str):
        v = values.get(key)
        return None if v is None or v != v else round(float(v), 2)  # NaN (none measured) -> null

    return {"success": bool(robot["success"]), "stopped_by": stopped_by,
            "steps": max(0, bridge.published - 1), "sim_time_s": robot["sim_time_s"],
            "commands": {"published": stage.trajectories if stage is not None else 0,
                         "received": robot.get("commands_received", 0), "accepted": robot.get("commands_accepted", 0),
                         "refused": robot.get("commands_refused", 0),
                         "points_late": robot.get("command_points_late", 0),
                         "stream_stops": robot.get("command_stream_stops", 0)},
            "goals": stage.goals if stage is not None else 0,
            "latency_ms": {"frame_to_command_p50": ms("latency_p50_ms"), "frame_to_command_p95": ms("latency_p95_ms"),
                           "goal_p50": ms("goal_p50_ms"), "policy_p50": ms("policy_p50_ms")},
            "joint_motion_rad": joints.motion(),
            "joints_first": None if joints.first is None else [round(float(v), 5) for v in joints.first],
            "joints_last": None if joints.last is None else [round(float(v), 5) for v in joints.last]}


def run(args: argparse.Namespace) -> int:
    import os
    import sys
    import time

    from frameplan_core import atomic
    from frameplan_core.errors import ConfigError, ModelError
    from frameplan_core.image import contact_sheet, write_image
    from frameplan_core.paths import config_path

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
    from frameplan_ros.sim_bridge_node import SimBridgeNode
    from frameplan_ros.sim_bridge_params import SimBridgeParams

    bridge_over, fore_over = _overrides(args)
    check_names(SimBridgeParams, bridge_over, "--set bridge")  # a misspelt --set would silently do nothing
    check_names(ForesightParams, fore_over, "--set foresight")
    bridge_params = {**check_yaml_against(SimBridgeParams, bridge_yaml, "sim_bridge"), **bridge_over}
    fore_params = {**check_yaml_against(ForesightParams, fore_yaml, "foresight_node"), **fore_over}
    policy_mode = fore_params.get("mode") == "policy"
    if policy_mode and args.max_steps:
        from frameplan_core.sim.task_config import load_task_config

        bridge_params["max_ticks"] = args.max_steps * load_task_config(bridge_params["task"]).save_freq
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
        joints = JointRecorder(collector_node, bridge_params["joint_states_topic"]) if policy_mode else None
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
        stopped_by = "duration"
        try:
            while rclpy.ok() and time.monotonic() < t_end:
                executor.spin_once(timeout_sec=0.1)
                if args.max_outputs and collector.outputs >= args.max_outputs:
                    # let the trailing messages of this output (comparison, plan frames) arrive
                    for _ in range(10):
                        executor.spin_once(timeout_sec=0.05)
                    break
                if policy_mode and bridge.finished.is_set():  # the episode ended: success or --max-steps
                    t_idle = time.monotonic() + 10.0  # a decision in progress still counts (its command is late)
                    while (foresight.worker.busy or foresight.worker.slot.pending) and time.monotonic() < t_idle:
                        executor.spin_once(timeout_sec=0.05)
                    for _ in range(5):  # let the last messages (joint states, commands) arrive
                        executor.spin_once(timeout_sec=0.05)
                    stopped_by = "success" if bridge.robot.success else "max_steps"
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
            stopped_by = "interrupted"
        level, message, values = foresight.diagnostics_values()
        summary = {"foresight": {"level": level, "message": message, **{k: v for k, v in values.items()}},
                   "bridge": {"frames_published": bridge.published, "episode": bridge.episode,
                              "errors": {k: r.message for k, r in bridge.health.errors.items()}},
                   "outputs": collector.counts, "files": collector.index,
                   "parameters": {"foresight": fore_params, "bridge": bridge_params}}
        if policy_mode:
            summary["closed_loop"] = closed_loop_summary(bridge, foresight, joints, stopped_by)
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
    if policy_mode:
        loop = summary["closed_loop"]
        c = loop["commands"]
        print(f"closed loop: {'SUCCESS' if loop['success'] else 'no success'} after {loop['steps']} steps "
              f"({loop['stopped_by']}); {c['published']} trajectories published, {c['accepted']} accepted, "
              f"{c['refused']} refused; joints moved up to {loop['joint_motion_rad']} rad; {out}/summary.json")
        return 0 if c["accepted"] else 1
    if not collector.outputs:
        print("no foresight output was received (see summary.json: diagnostics)")
        return 1
    print(f"wrote {out}/ ({len(collector.index)} PNGs{', contact_sheet.png' if collector.comparisons else ''}, "
          "summary.json)")
    return 0
