"""The sim bridge: a SAPIEN task scene (or a recorded RoboTwin episode) published as a RealSense D435 would be.

Topics follow realsense2_camera (``<camera_namespace>/color/image_raw`` rgb8, ``color/camera_info``,
``aligned_depth_to_color/image_raw`` 16UC1 in millimetres, ``aligned_depth_to_color/camera_info``), all four with
the same stamp and the colour optical frame id. The task's instruction goes to ``/frameplan/instruction`` right
after the first frame of each motion segment. Frames are produced and published by one thread paced at
``rate`` (rendering can be slower than the rate: then it publishes as fast as it renders).

The live simulator (``source: sim``, frameplan_ros/sim_robot.py) is a simulated robot: ``/joint_states`` and the
task's success go out with every frame, and with ``control: command`` the arms follow
trajectory_msgs/JointTrajectory commands (frameplan_ros/joint_command.py) instead of the scripted expert.
Parameters: sim_bridge_params.py; messages are built by convert.py.
"""
from __future__ import annotations

import dataclasses
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import (
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, JointState
from std_msgs.msg import Bool, String
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import MarkerArray

from frameplan_core.errors import ConfigError, DataError, FrameplanError
from frameplan_ros import convert
from frameplan_ros import params as paramlib
from frameplan_ros.diagnostics import ERROR, OK, WARN, Health, set_period, status_message, window_for
from frameplan_ros.joint_command import CommandRefused, check_trajectory
from frameplan_ros.robot_model import JOINT_NAMES
from frameplan_ros.sim_bridge_params import SimBridgeParams, recorded_rate
from frameplan_ros.sim_robot import CameraFrame, SimRobot

def replay_frames(p: SimBridgeParams, stop: threading.Event, reader: Any) -> Iterator[CameraFrame]:
    """A recorded episode's frames as they are stored (bit-exact rgb; depth rounded to whole mm)."""
    instr = None
    try:
        seen = (reader.instructions or {}).get("seen") or []
        instr = seen[0] if seen else None
    except (DataError, NotImplementedError, AttributeError):
        instr = None
    episode = 0
    while not stop.is_set():
        for i in range(len(reader)):
            if stop.is_set():
                return
            obs = reader.frame(i)["observation"]
            if p.camera not in obs:
                raise DataError(f"{reader.path}: frame {i} has no camera {p.camera!r} (have {sorted(obs)})")
            cam = obs[p.camera]
            yield CameraFrame(np.asarray(cam["rgb"]), cam.get("depth"), np.asarray(cam["intrinsic_cv"]),
                              instr if i == 0 else None, episode, i)
        episode += 1
        if not p.loop or (p.max_episodes and episode >= p.max_episodes):
            return


class SimBridgeNode(Node):
    def __init__(self, node_name: str = "sim_bridge", **kwargs: Any) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        super().__init__(node_name, **kwargs)
        self.p: SimBridgeParams = paramlib.declare(self, SimBridgeParams)
        self.health = Health(window_s=window_for(self.p.diagnostics_period), log=self.get_logger().error,
                             warn_log=self.get_logger().warning)
        self._reader = None
        if self.p.source == "replay":
            if not self.p.episode:
                raise ConfigError(f"node {node_name}: source=replay needs the 'episode' parameter (a RoboTwin "
                                  "episode folder or .hdf5)")
            from frameplan_core.data.episode import open_episode

            self._reader = open_episode(self.p.episode)  # DataError with the path if unusable
            self.rate = self.p.replay_rate or recorded_rate(self._reader)
        else:
            self.rate = self.p.rate
        qos = qos_profile_sensor_data if self.p.camera_qos == "sensor_data" else QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        ns = self.p.camera_namespace.rstrip("/")
        self.pub_rgb = self.create_publisher(Image, f"{ns}/color/image_raw", qos)
        self.pub_info = self.create_publisher(CameraInfo, f"{ns}/color/camera_info", qos)
        self.pub_compressed = None
        if self.p.publish_compressed:
            self.pub_compressed = self.create_publisher(CompressedImage, f"{ns}/color/image_raw/compressed", qos)
        # each group counts as subscribed when one of its publishers is (raw or compressed colour)
        self.camera_publishers = [[p for p in (self.pub_rgb, self.pub_compressed) if p is not None], [self.pub_info]]
        if self.p.publish_depth:
            self.pub_depth = self.create_publisher(Image, f"{ns}/aligned_depth_to_color/image_raw", qos)
            self.pub_depth_info = self.create_publisher(CameraInfo, f"{ns}/aligned_depth_to_color/camera_info", qos)
            self.camera_publishers += [[self.pub_depth], [self.pub_depth_info]]
        self.pub_instr = self.create_publisher(String, self.p.instruction_topic, reliable)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.robot: SimRobot | None = None
        if self._reader is None:
            self.robot = SimRobot(self.p.task, self.p.seed, self.p.control, self.p.camera, self.p.camera_type,
                                  self.p.publish_depth, self.p.loop, self.p.max_episodes, self.p.max_ticks,
                                  self.p.command_timeout, on_failure=lambda seed, exc: self.health.error(
                                      "episode_failed", f"{self.p.task} seed {seed}: {exc}; continuing with the "
                                      "next seed", WARN))
            self.pub_joints = self.create_publisher(JointState, self.p.joint_states_topic, reliable)
            self.pub_success = self.create_publisher(Bool, self.p.success_topic, reliable)
            if self.p.clock == "sim":
                from rosgraph_msgs.msg import Clock

                self.pub_clock = self.create_publisher(Clock, "/clock", 10)
            if self.p.control == "command":
                from frameplan_ros.robot_model import panda_model

                self._panda = panda_model()  # ConfigError (one line) when the robot assets are missing
                self._limits = self._panda.limits
                self._last_frame: CameraFrame | None = None
                self.pub_markers = self.create_publisher(MarkerArray, self.p.command_markers_topic, reliable)
                self.create_subscription(JointTrajectory, self.p.command_topic, self._on_command, reliable)
        self.published = 0
        self.episode = 0
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"{node_name}-publisher", daemon=True)
        self._thread.start()
        self._diag_timer = self.create_timer(self.p.diagnostics_period, self._publish_diagnostics)
        self.add_post_set_parameters_callback(self._apply_parameters)
        what = f"episode {self.p.episode}" if self._reader is not None else (
            f"task {self.p.task} seed {self.p.seed}, control: {self.p.control}"
            + (f" (commands on {self.p.command_topic})" if self.p.control == "command" else ""))
        self.get_logger().info(f"{self.p.source}: {what} -> {ns}/color/image_raw at {self.rate:.1f} Hz")

    def _frames(self) -> Iterator[CameraFrame]:
        if self._reader is not None:
            return replay_frames(self.p, self._stop, self._reader)
        return self.robot.frames(self._stop)

    def _on_command(self, msg: Any) -> None:
        """Check a JointTrajectory (names, points, limits) and hand it to the simulator; refused ones are counted
        by kind and never executed."""
        robot = self.robot
        robot.stats.received += 1
        try:
            names, points = convert.joint_trajectory_points(msg)
            cmd = check_trajectory(names, points, self._limits, self.p.command_topic)
        except CommandRefused as exc:
            robot.stats.refused += 1
            self.health.error(exc.kind, str(exc), WARN)
            return
        key = convert.stamp_key(msg.header.stamp)
        start = robot.sim_time_of(key) if key != (0, 0) else None  # a frame of ours: the time it showed
        robot.command(cmd, start)
        self._publish_command_markers(cmd, msg.header.stamp)

    def _publish_command_markers(self, cmd: Any, stamp: Any) -> None:
        """The tool paths of a trajectory (from where the arms are) in the camera optical frame: rviz shows them
        over the camera image without a tf tree (the camera pose is the simulator's)."""
        f = self._last_frame
        if f is None or f.extrinsic is None:
            return
        knots = np.concatenate([f.joint_state[None], cmd.full(f.command)])
        world = self._panda.tcp_positions(knots)  # (P, 2, 3)
        E = np.asarray(f.extrinsic, dtype=np.float64)
        cam = world @ E[:, :3].T + E[:, 3]
        try:
            self.pub_markers.publish(convert.tcp_path_markers(cam, self.p.frame_id, stamp))
        except Exception as exc:  # noqa: BLE001 - context shutting down
            self.get_logger().debug(f"markers not published: {exc}")

    def _wait_for_subscribers(self) -> None:
        while self.p.wait_for_subscribers and not self._stop.is_set():
            if all(any(pub.get_subscription_count() >= self.p.wait_for_subscribers for pub in group)
                   for group in self.camera_publishers):
                time.sleep(0.2)  # let the readers' matching finish on their side too
                return
            time.sleep(0.05)

    def _run(self) -> None:
        try:
            self._wait_for_subscribers()
            next_t = time.monotonic()
            for frame in self._frames():
                delay = next_t - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                period = 1.0 / self.rate  # read each frame: rate/replay_rate can change at run time
                next_t = max(next_t + period, time.monotonic() - period)
                self.publish_frame(frame)
        except FrameplanError as exc:
            self.health.error("source", str(exc), ERROR)
        except Exception as exc:  # noqa: BLE001 - report, do not kill the process silently
            if not self._stop.is_set():
                self.health.error("source", f"{type(exc).__name__}: {exc}", ERROR)
        finally:
            self.finished.set()

    def publish_frame(self, f: CameraFrame) -> None:
        if self._stop.is_set() or not rclpy.ok(context=self.context):
            return
        sim_clock = self.p.clock == "sim" and f.sim_time is not None
        stamp = convert.seconds_to_time(f.sim_time) if sim_clock else self.get_clock().now().to_msg()
        if self.robot is not None and f.sim_time is not None:
            self.robot.remember_stamp(convert.stamp_key(stamp), f.sim_time)  # commands stamped with it start there
            self._last_frame = f
        fid = self.p.frame_id
        h, w = f.rgb.shape[:2]
        info = convert.K_to_camera_info(f.K, w, h, stamp=stamp, frame_id=fid)
        rgb = np.ascontiguousarray(f.rgb, np.uint8)
        msgs = []
        if sim_clock:
            from rosgraph_msgs.msg import Clock

            msgs.append((self.pub_clock, Clock(clock=stamp)))
        if f.joint_state is not None:  # before the image: a subscriber pairing by stamp has the state first
            msgs.append((self.pub_joints, convert.joint_state_msg(f.joint_state, JOINT_NAMES, stamp)))
        msgs += [(self.pub_rgb, convert.numpy_to_image(rgb, "rgb8", stamp=stamp, frame_id=fid)), (self.pub_info, info)]
        if self.pub_compressed is not None:
            msgs.append((self.pub_compressed, convert.compressed_image_msg(
                rgb, self.p.compressed_format, self.p.jpeg_quality, stamp=stamp, frame_id=fid)))
        if self.p.publish_depth:
            if f.depth_mm is None:
                self.health.error("no_depth", "source frame has no depth; depth topics not published", WARN)
            else:
                msgs.append((self.pub_depth, convert.numpy_to_image(convert.depth_to_16uc1(f.depth_mm), "16UC1",
                                                                    stamp=stamp, frame_id=fid)))
                msgs.append((self.pub_depth_info, info))
        if f.success is not None:
            msgs.append((self.pub_success, Bool(data=bool(f.success))))
        try:
            for pub, msg in msgs:
                pub.publish(msg)
            if f.instruction:
                self.pub_instr.publish(String(data=f.instruction))
        except Exception:
            if rclpy.ok(context=self.context) and not self._stop.is_set():
                raise
            return
        self.published += 1
        self.episode = f.episode
        self.health.output(0.0)

    def _apply_parameters(self, changed: list) -> None:
        # in place: the frame generators of the publisher thread hold this object (loop, max_episodes)
        new = paramlib.with_changes(self.p, changed)
        for f in dataclasses.fields(new):
            setattr(self.p, f.name, getattr(new, f.name))
        if any(prm.name == "diagnostics_period" for prm in changed):
            set_period(self._diag_timer, self.health, self.p.diagnostics_period)
        if self._reader is not None:
            self.rate = self.p.replay_rate or recorded_rate(self._reader)
        else:
            self.rate = self.p.rate
            robot = self.robot
            robot.loop, robot.max_episodes, robot.command_timeout = (self.p.loop, self.p.max_episodes,
                                                                     self.p.command_timeout)

    def _publish_diagnostics(self) -> None:
        snap = self.health.snapshot()
        recent = snap.pop("recent_errors")
        level, message = self.health.level(recent)
        if self.finished.is_set() and level == OK:
            message = "source finished"
        values = {"source": self.p.source, "task": self.p.task, "episode": self.episode,
                  "frames_published": self.published, "publish_rate_hz": snap["output_rate_hz"],
                  "target_rate_hz": self.rate, "errors": snap["errors"], "last_error": snap["last_error"],
                  **{k: v for k, v in snap.items() if k.startswith("error.")}}  # e.g. error.episode_failed
        if self.robot is not None:
            values.update(self.robot_values())
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [status_message(f"{self.get_name()}: sim bridge", self.p.camera_type, level, message, values)]
        try:
            self.pub_diag.publish(arr)
        except Exception as exc:  # noqa: BLE001 - context shutting down between timer and publish
            self.get_logger().debug(f"diagnostics not published: {exc}")

    def robot_values(self) -> dict:
        """The simulated robot's part of /diagnostics (and of `frameplan sim`'s summary)."""
        r = self.robot
        values = {"control": self.p.control, "control_state": r.state, "success": r.success,
                  "episodes_succeeded": r.episodes_succeeded, "sim_time_s": round(r.sim_time, 3)}
        if self.p.control == "command":
            st = r.stats
            values.update(commands_received=st.received, commands_accepted=st.accepted, commands_refused=st.refused,
                          command_points_late=st.late_points, command_stream_stops=st.stream_stops)
        return values

    def destroy_node(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    from frameplan_ros.spin import run_node

    return run_node(SimBridgeNode, "sim_bridge_node", argv)


if __name__ == "__main__":
    sys.exit(main())
