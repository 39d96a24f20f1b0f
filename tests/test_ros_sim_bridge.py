"""The sim bridge in its own process over real DDS: live SAPIEN frames as a D435 (consistent camera_info, 16UC1
depth in mm, instruction at segment start) and bit-exact replay of recorded RoboTwin 1.0 and 2.0 episodes."""

import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python (rclpy) not installed: pip install -e .[ros]")
pytestmark = pytest.mark.ros

from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import String

from frameplan_ros import convert
from frameplan_ros.convert import depth_to_16uc1
from frameplan_ros.sim_bridge_params import recorded_rate
from frameplan_ros.testing import NodeProcess, Probe, config_path, diagnostic_values

NS = "/camera/camera"
TOPICS = {"rgb": f"{NS}/color/image_raw", "info": f"{NS}/color/camera_info",
          "depth": f"{NS}/aligned_depth_to_color/image_raw", "depth_info": f"{NS}/aligned_depth_to_color/camera_info"}


def _listen_all(probe):
    probe.listen(Image, TOPICS["rgb"])
    probe.listen(CameraInfo, TOPICS["info"])
    probe.listen(Image, TOPICS["depth"])
    probe.listen(CameraInfo, TOPICS["depth_info"])
    probe.listen(String, "/frameplan/instruction")


def _stamp(m):
    return (m.header.stamp.sec, m.header.stamp.nanosec)


def test_depth_conversion_matches_realsense_convention():
    d = np.array([[0.0, 0.4, 1234.5, np.nan], [-3.0, np.inf, 70000.0, 999.49]])
    np.testing.assert_array_equal(depth_to_16uc1(d), [[0, 0, 1234, 0], [0, 0, 65535, 999]])  # rint: 1234.5 -> 1234


def _episode_frames(n=6, h=240, w=320):
    rng = np.random.default_rng(7)
    K = np.array([[358.6, 0, 160.0], [0, 358.6, 120.0], [0, 0, 1]])
    frames = []
    for _ in range(n):
        obs = {"head_camera": {"rgb": rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
                               "depth": rng.integers(300, 2000, (h, w)).astype(np.float64),
                               "intrinsic_cv": K, "extrinsic_cv": np.eye(4)[:3], "cam2world_gl": np.eye(4)}}
        frames.append({"observation": obs, "pointcloud": [], "joint_action": np.zeros(14), "endpose": np.zeros(14)})
    return frames


def _write_episode(fmt, root):
    frames = _episode_frames()
    instructions = {"seen": ["stack the green block on the red one"], "unseen": ["put green on red"]}
    if fmt == "pkl":
        from frameplan_core.data.robotwin import EpisodeWriter

        with EpisodeWriter(root, "blocks_stack_easy", "D435", 0) as ep:
            for f in frames:
                ep.add_frame(f)
            ep.instructions = instructions
            ep.scene_info = {"seed": 0, "fps": 25.0}
        return ep.path
    from frameplan_core.data.robotwin2 import write_episode

    path = write_episode(root, "blocks_stack_easy", "demo_clean", 0, frames, instructions=instructions)
    return path


@pytest.mark.parametrize("fmt", ["pkl", "hdf5"])
def test_replay_reproduces_episode_frames_bit_exactly(fmt, tmp_path):
    from frameplan_core.data.episode import open_episode

    path = _write_episode(fmt, tmp_path / "data")
    reader = open_episode(path)
    n = len(reader)
    node = NodeProcess("frameplan_ros.sim_bridge_node", config_path("sim_bridge.yaml"),
                       {"source": "replay", "episode": str(path), "loop": False, "camera_qos": "reliable",
                        "wait_for_subscribers": 1, "replay_rate": 20.0}, log_path=tmp_path / "bridge.log")
    probe = Probe("replay_probe")
    try:
        _listen_all(probe)
        # each topic has its own subscription: wait for all four, not only the one published last
        assert probe.wait_for(lambda: all(len(probe.messages(TOPICS[k])) >= n for k in ("rgb", "info", "depth",
                                                                                          "depth_info")),
                              90), node.log_text()[-3000:]
        rgbs, depths = probe.messages(TOPICS["rgb"]), probe.messages(TOPICS["depth"])
        infos = probe.messages(TOPICS["info"])
        assert len(rgbs) == len(depths) == len(infos) == n
        for i in range(n):
            np.testing.assert_array_equal(convert.image_to_rgb(rgbs[i]), reader.rgb(i))
            assert depths[i].encoding == "16UC1"
            np.testing.assert_array_equal(convert.image_to_numpy(depths[i]), depth_to_16uc1(reader.depth(i)))
            assert _stamp(rgbs[i]) == _stamp(depths[i]) == _stamp(infos[i])
            np.testing.assert_allclose(convert.camera_info_to_K(infos[i]),
                                       reader.frame(i)["observation"]["head_camera"]["intrinsic_cv"])
        assert probe.wait_for(lambda: probe.messages("/frameplan/instruction"), 5)
        assert probe.messages("/frameplan/instruction")[0].data == reader.instructions["seen"][0]
        assert node.interrupt(timeout=30) == 0
    finally:
        probe.close()
        node.kill()


def test_recorded_rate_from_scene_info(tmp_path):
    from frameplan_core.data.episode import open_episode

    assert recorded_rate(open_episode(_write_episode("pkl", tmp_path))) == 25.0
    assert abs(recorded_rate(object()) - 250 / 15) < 1e-9  # RoboTwin 1.0 default: every 15th 1/250 s step


def test_replay_of_a_missing_episode_fails_clearly(tmp_path):
    node = NodeProcess("frameplan_ros.sim_bridge_node", config_path("sim_bridge.yaml"),
                       {"source": "replay", "episode": str(tmp_path / "nope" / "episode3")},
                       log_path=tmp_path / "bridge.log")
    assert node.proc.wait(60) == 1
    node.close()
    assert "nope/episode3" in node.log_text() and "Traceback" not in node.log_text()


@pytest.mark.sim
@pytest.mark.slow
def test_live_sim_publishes_a_d435_with_consistent_info_and_depth_units(tmp_path):
    from frameplan_core.errors import SimError

    try:
        from frameplan_core.sim import make_task

        task = make_task("blocks_stack_easy", seed=3, camera_type="D435", cameras=("head_camera",))
    except (SimError, ImportError) as exc:
        pytest.skip(f"SAPIEN cannot render here: {exc}")
    first = next(iter(task.stream()))
    expected = first.observation["head_camera"]
    task.close()

    node = NodeProcess("frameplan_ros.sim_bridge_node", config_path("sim_bridge.yaml"),
                       {"source": "sim", "task": "blocks_stack_easy", "seed": 3, "camera_qos": "reliable",
                        "wait_for_subscribers": 1, "rate": 30.0}, log_path=tmp_path / "bridge.log")
    probe = Probe("sim_probe")
    try:
        _listen_all(probe)
        assert probe.wait_for(lambda: all(len(probe.messages(t)) >= 2 for t in TOPICS.values()), 120), \
            node.log_text()[-3000:]
        rgb, depth = probe.messages(TOPICS["rgb"])[0], probe.messages(TOPICS["depth"])[0]
        info, dinfo = probe.messages(TOPICS["info"])[0], probe.messages(TOPICS["depth_info"])[0]
        assert (rgb.encoding, rgb.width, rgb.height) == ("rgb8", 320, 240)
        assert (depth.encoding, depth.width, depth.height) == ("16UC1", 320, 240)
        assert (info.width, info.height) == (320, 240) and list(info.k) == list(dinfo.k)
        assert _stamp(rgb) == _stamp(depth) == _stamp(info) == _stamp(dinfo)
        assert rgb.header.frame_id == depth.header.frame_id == info.header.frame_id == "camera_color_optical_frame"
        K = convert.camera_info_to_K(info)
        np.testing.assert_allclose(K, expected["intrinsic_cv"])
        assert abs(K[0, 0] - 358.6) < 1.0  # D435 as RoboTwin simulates it: fovy 37 deg at 240 px
        # same seed, same scene: the published frame is the simulator's, depth as whole millimetres
        np.testing.assert_array_equal(convert.image_to_rgb(rgb), expected["rgb"])
        d = convert.image_to_numpy(depth)
        np.testing.assert_array_equal(d, depth_to_16uc1(expected["depth"]))
        valid = d[d > 0]
        assert 400 < np.median(valid) < 2500  # a head camera ~0.6-1.3 m above the table, in mm
        assert probe.wait_for(lambda: probe.messages("/frameplan/instruction"), 10)
        assert probe.messages("/frameplan/instruction")[0].data.strip()
        assert node.interrupt(timeout=30) == 0
    finally:
        probe.close()
        node.kill()


def _bridge_diag(probe):
    for arr in reversed(probe.messages("/diagnostics")):
        vals = diagnostic_values(arr, "sim bridge")
        if vals:
            return vals[0][2]
    return {}


@pytest.mark.sim
@pytest.mark.slow
def test_command_mode_follows_trajectories_refuses_bad_ones_and_holds_when_the_stream_stops(tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool
    from trajectory_msgs.msg import JointTrajectory
    from visualization_msgs.msg import MarkerArray

    from frameplan_ros.robot_model import JOINT_NAMES

    node = NodeProcess("frameplan_ros.sim_bridge_node", config_path("sim_bridge.yaml"),
                       {"control": "command", "clock": "sim", "task": "blocks_stack_easy", "seed": 2,
                        "command_timeout": 0.5, "rate": 20.0, "loop": False, "publish_depth": False,
                        "diagnostics_period": 0.2}, log_path=tmp_path / "bridge.log")
    probe = Probe("command_probe")
    try:
        probe.listen(JointState, "/joint_states")
        probe.listen(Bool, "/frameplan/task_success")
        probe.listen(DiagnosticArray, "/diagnostics")
        probe.listen(MarkerArray, "/frameplan/command_markers")
        probe.listen(Image, TOPICS["rgb"], qos=qos_profile_sensor_data)
        cmd = probe.publisher(JointTrajectory, "/frameplan/joint_trajectory")
        assert probe.wait_for(lambda: len(probe.messages("/joint_states")) >= 3, 120), node.log_text()[-3000:]
        assert probe.wait_matched([cmd])
        js = probe.messages("/joint_states")[-1]
        assert list(js.name) == list(JOINT_NAMES) and js.header.stamp.sec < 100  # simulated time
        q0 = np.array(js.position)
        assert probe.messages("/frameplan/task_success")[-1].data is False
        js_stamps = {_stamp(m) for m in probe.messages("/joint_states")}
        assert js_stamps & {_stamp(m) for m in probe.messages(TOPICS["rgb"])}, "one stamp for state and frame"

        # a valid trajectory for one joint, stamped with a frame: followed to its end, then held
        goal = q0.copy()
        goal[0] += 0.3
        pts = np.linspace(q0, goal, 6)[1:][:, [0]]
        cmd.publish(convert.joint_trajectory_msg(pts, ["left_panda_joint1"], 0.06, js.header.stamp))

        def joint(i=0):
            return probe.messages("/joint_states")[-1].position[i]

        assert probe.wait_for(lambda: abs(joint() - goal[0]) < 0.01, 30), (joint(), node.log_text()[-2000:])
        # rviz: the commanded tool paths in the camera frame (from where the arms were, then the 5 points)
        assert probe.wait_for(lambda: probe.messages("/frameplan/command_markers"), 5)
        line = probe.messages("/frameplan/command_markers")[0].markers[0]
        pts = np.array([[p.x, p.y, p.z] for p in line.points])
        assert line.header.frame_id == "camera_color_optical_frame" and len(pts) == 6
        assert (0.3 < pts[:, 2]).all() and (pts[:, 2] < 2.0).all()  # in front of the head camera
        assert np.linalg.norm(pts[-1] - pts[0]) > 0.02  # the left tool moves with joint 1
        assert probe.wait_for(lambda: _bridge_diag(probe).get("control_state") == "done", 10)
        assert abs(joint(9) - q0[9]) < 1e-3  # joints it did not name kept their command

        # refused: out of limits, unknown joint, malformed (positions/names mismatch); nothing of them moves
        bad = [convert.joint_trajectory_msg(np.array([[0.5]]), ["left_panda_joint4"], 0.06, js.header.stamp),
               convert.joint_trajectory_msg(np.array([[0.1]]), ["elbow"], 0.06, js.header.stamp),
               convert.joint_trajectory_msg(np.array([[0.1, 0.2]]), ["left_panda_joint1"], 0.06, js.header.stamp)]
        bad[2].joint_names = ["left_panda_joint1"]
        for m in bad:
            cmd.publish(m)

        def refused():
            d = _bridge_diag(probe)
            return d.get("commands_refused") == "3" and all(f"error.{k}" in d for k in (
                "command_out_of_limits", "command_unknown_joint", "command_malformed"))

        assert probe.wait_for(refused, 10), _bridge_diag(probe)
        d = _bridge_diag(probe)
        assert "left_panda_joint4 = 0.5000 is outside its limits" in d["error.command_out_of_limits"]
        assert "'elbow'" in d["error.command_unknown_joint"] and d["commands_accepted"] == "1"

        # a slow trajectory (0.6 rad over 60 s), then silence: after command_timeout the arm stops where it is
        far = goal.copy()
        far[0] += 0.6
        cmd.publish(convert.joint_trajectory_msg(far[None, [0]], ["left_panda_joint1"], 60.0,
                                                 probe.messages("/joint_states")[-1].header.stamp))
        assert probe.wait_for(lambda: _bridge_diag(probe).get("control_state") == "stopped", 20), _bridge_diag(probe)
        assert _bridge_diag(probe)["command_stream_stops"] == "1"
        time.sleep(0.5)
        held = joint()
        time.sleep(1.0)
        assert abs(joint() - held) < 2e-3 and goal[0] < held < far[0]  # it had started, and now holds
        assert node.interrupt(timeout=30) == 0
        assert "Traceback" not in node.log_text()
    finally:
        probe.close()
        node.kill()
