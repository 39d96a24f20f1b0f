"""Joint commands of the simulated robot without DDS: joint names and limits from the Panda URDF, forward kinematics
against the simulator's own TCP poses, trajectory checks (malformed, unknown joints, out of limits: refused with a
reason) and following in simulated time (interpolation, late points, replacement, hold)."""
import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python (rclpy) not installed: pip install -e .[ros]")
pytestmark = pytest.mark.ros

from frameplan_core.errors import ConfigError
from frameplan_ros import convert
from frameplan_ros.joint_command import CommandRefused, TrajectoryFollower, check_trajectory
from frameplan_ros.robot_model import JOINT_NAMES

REST = np.array([0.0, -0.25, 0.0, -2.3, 0.0, 2.05, np.pi / 4, 1.0] * 2)


@pytest.fixture(scope="module")
def panda():
    from frameplan_ros.robot_model import panda_model

    try:
        return panda_model()
    except ConfigError as exc:
        pytest.skip(f"no Panda assets here: {exc}")


def test_joint_names_and_limits_follow_the_simulator_layout(panda):
    assert len(JOINT_NAMES) == 16 and len(set(JOINT_NAMES)) == 16
    assert JOINT_NAMES[0] == "left_panda_joint1" and JOINT_NAMES[7] == "left_gripper"
    assert JOINT_NAMES[8] == "right_panda_joint1" and JOINT_NAMES[15] == "right_gripper"
    lim = panda.limits
    assert lim.shape == (16, 2)
    np.testing.assert_allclose(lim[3], [-3.0718, -0.0698])  # Franka joint 4 (the URDF's values)
    np.testing.assert_allclose(lim[[7, 15]], [[0, 1], [0, 1]])  # gripper opening
    assert ((lim[:, 0] <= REST) & (REST <= lim[:, 1])).all()


def test_urdf_without_the_arm_chain_is_a_config_error(tmp_path):
    from frameplan_ros.robot_model import PandaModel

    bad = tmp_path / "x.urdf"
    bad.write_text("<robot name='x'><link name='a'/></robot>")
    with pytest.raises(ConfigError, match="panda_joint1..7"):
        PandaModel(bad)
    bad.write_text("<robot")
    with pytest.raises(ConfigError, match="x.urdf"):
        PandaModel(bad)


def _pts(*rows, dt=0.06):
    return [(list(r), (k + 1) * dt) for k, r in enumerate(rows)]


def test_a_valid_trajectory_is_accepted_and_fills_unnamed_joints(panda):
    names = ["right_panda_joint2", "left_gripper"]
    cmd = check_trajectory(names, _pts([-0.2, 0.5], [-0.1, 0.0]), panda.limits)
    assert cmd.indices.tolist() == [9, 7] and cmd.times.tolist() == [0.06, 0.12]
    full = cmd.full(REST)
    assert full.shape == (2, 16) and full[1, 9] == -0.1 and full[1, 7] == 0.0
    np.testing.assert_array_equal(full[:, 0], REST[0])  # unnamed joints keep the current command


@pytest.mark.parametrize("names,points,kind,text", [
    ([], _pts([0.0]), "command_malformed", "no joint_names"),
    (["left_panda_joint1", "left_panda_joint1"], _pts([0, 0]), "command_malformed", "repeated"),
    (["left_panda_joint1"], [], "command_malformed", "no points"),
    (["left_panda_joint1"], [([0.0, 1.0], 0.1)], "command_malformed", "2 positions for 1"),
    (["left_panda_joint1"], [([float("nan")], 0.1)], "command_malformed", "not finite"),
    (["left_panda_joint1"], [([0.0], 0.2), ([0.1], 0.1)], "command_malformed", "strictly increasing"),
    (["left_panda_joint1"], [([0.0], -0.1)], "command_malformed", ">= 0"),
    (["left_panda_joint9", "panda_joint1"], _pts([0, 0]), "command_unknown_joint", "left_panda_joint9"),
    (["left_panda_joint4"], _pts([0.5]), "command_out_of_limits", "left_panda_joint4 = 0.5000"),
    (["right_gripper"], _pts([1.5]), "command_out_of_limits", "right_gripper"),
])
def test_bad_trajectories_are_refused_with_kind_and_reason(panda, names, points, kind, text):
    with pytest.raises(CommandRefused) as exc:
        check_trajectory(names, points, panda.limits, "/cmd")
    assert exc.value.kind == kind and text in str(exc.value) and str(exc.value).startswith("/cmd: ")


def test_a_huge_joint_name_is_echoed_bounded(panda):
    with pytest.raises(CommandRefused) as exc:
        check_trajectory(["x" * 100_000], _pts([0.0]), panda.limits)
    assert len(str(exc.value)) < 400 and "\n" not in str(exc.value)


def test_follower_interpolates_skips_late_points_replaces_and_holds(panda):
    f = TrajectoryFollower(REST)
    assert f.state == "waiting"
    np.testing.assert_array_equal(f.target(5.0), REST)
    goal = REST.copy()
    goal[0] = 0.6
    cmd = check_trajectory(JOINT_NAMES, _pts(REST + (goal - REST) / 2, goal, dt=0.3), panda.limits)
    assert f.start(cmd, start=10.0, now=10.0, current=REST) == 0 and f.state == "following"
    assert f.target(10.15)[0] == pytest.approx(0.15)  # halfway to the first point (0.3 at 10.3)
    assert f.target(10.45)[0] == pytest.approx(0.45)
    assert f.target(11.0)[0] == pytest.approx(0.6) and f.state == "done"  # holds the last point
    # stamped with a frame 0.35 s ago: the first point (t=0.3) is already past, so the command moves from the
    # current one straight to the second
    f.start(cmd, start=20.0, now=20.35, current=REST)
    assert f.target(20.6)[0] == pytest.approx(0.6)
    assert f.target(20.475)[0] == pytest.approx(0.3)
    # every point late: go to the last one
    assert f.start(cmd, start=0.0, now=30.0, current=REST) == 2
    assert f.target(30.0)[0] == pytest.approx(0.6)
    f.hold(REST, "stopped")
    assert f.state == "stopped" and f.target(99.0)[0] == 0.0


def test_trajectory_message_round_trip():
    from builtin_interfaces.msg import Time

    cmds = np.tile(REST, (3, 1))
    cmds[:, 0] = [0.1, 0.2, 0.3]
    msg = convert.joint_trajectory_msg(cmds, JOINT_NAMES, 0.06, Time(sec=5, nanosec=7))
    names, points = convert.joint_trajectory_points(msg)
    assert names == list(JOINT_NAMES) and [round(t, 9) for _, t in points] == [0.06, 0.12, 0.18]
    assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (5, 7)
    np.testing.assert_allclose([p[0] for p, _ in points], [0.1, 0.2, 0.3])
    js = convert.joint_state_msg(REST, JOINT_NAMES, Time(sec=1))
    js.name = list(reversed(js.name)) + ["head_pan"]  # another order and an extra joint: read by name
    js.position = list(reversed(js.position)) + [9.0]
    np.testing.assert_allclose(convert.joint_state_vector(js, JOINT_NAMES), REST)


@pytest.mark.sim
def test_forward_kinematics_matches_the_simulators_tcp(panda):
    from frameplan_core.errors import SimError
    from frameplan_core.sim.env import SimEnv

    env = SimEnv(cameras=(), render_every=0)
    try:
        try:
            obs = env.reset("blocks_stack_easy", seed=1)
        except (SimError, ImportError) as exc:
            pytest.skip(f"SAPIEN cannot run here: {exc}")
        cmd = obs.command.copy()
        cmd[[0, 1, 9, 13]] += [0.4, 0.2, -0.3, 0.5]
        obs = env.step(cmd, ticks=200)
        tcp = panda.tcp_positions(obs.joint_state)[0]
        np.testing.assert_allclose(tcp[0], obs.endpose[0:3], atol=1e-4)
        np.testing.assert_allclose(tcp[1], obs.endpose[7:10], atol=1e-4)
    finally:
        env.close()
