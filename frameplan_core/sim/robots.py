"""The two Franka Panda arms: loading from the offline asset cache, PD joint drives with passive-force (gravity)
compensation, gripper open/close, and one mplib planner per arm (screw motions: deterministic, no sampling)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from frameplan_core.errors import SimError
from frameplan_core.sim import assets
from frameplan_core.sim.scene import TABLE_HEIGHT, TIMESTEP, pose, quat_from_matrix

ARM_DOF = 7
GRIPPER_MAX = 0.04  # each finger travels 0..0.04 m, so the hand opens up to 8 cm
# Elbow up, hand pointing down, about 0.4 m in front of the base.
REST_QPOS = np.array([0.0, -0.25, 0.0, -2.3, 0.0, 2.05, np.pi / 4])
# Arm bases on the far edge of the table, facing the head camera (yaw -90 deg: the Panda's x axis points to -y).
BASE_XY = {"left": (-0.32, 0.40), "right": (0.32, 0.40)}
BASE_YAW = -np.pi / 2
# Slower than the URDF limits so that a motion spans many saved frames (RoboTwin-like pacing).
JOINT_VEL_LIMIT = 1.0
JOINT_ACC_LIMIT = 1.5
_ZERO_VEL = np.zeros(ARM_DOF)
_ZERO_VEL_BYTES = _ZERO_VEL.tobytes()


class PlanningError(SimError):
    """The scripted expert could not plan a motion (the episode is discarded and retried with the next seed)."""


def top_down_quat(finger_yaw: float) -> np.ndarray:
    """TCP orientation for a grasp from above with the fingers closing along the horizontal direction ``finger_yaw``."""
    z = np.array([0.0, 0.0, -1.0])
    y = np.array([np.cos(finger_yaw), np.sin(finger_yaw), 0.0])
    x = np.cross(y, z)
    return quat_from_matrix(np.stack([x, y, z], axis=1))


def quat_to_matrix(q: Sequence[float]) -> np.ndarray:
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_to_euler_xyz(R: np.ndarray) -> np.ndarray:
    """Roll, pitch, yaw (R = Rz(yaw) Ry(pitch) Rx(roll)), the convention of RoboTwin's endpose."""
    pitch = np.arcsin(-np.clip(R[2, 0], -1.0, 1.0))
    if abs(np.cos(pitch)) > 1e-6:
        roll = np.arctan2(R[2, 1], R[2, 2])
        yaw = np.arctan2(R[1, 0], R[0, 0])
    else:
        roll = 0.0
        yaw = np.arctan2(-R[0, 1], R[1, 1])
    return np.array([roll, pitch, yaw])


def joint_state_of(qpos: np.ndarray) -> np.ndarray:
    """One arm's 9 simulator joints -> 7 arm joints (rad) and the gripper opening in [0, 1] (1 = open)."""
    q = np.asarray(qpos, dtype=np.float64)
    return np.concatenate([q[:ARM_DOF], [np.clip((q[ARM_DOF] + q[ARM_DOF + 1]) / (2 * GRIPPER_MAX), 0.0, 1.0)]])


def endpose_of(tcp_pose, opening: float) -> np.ndarray:
    """TCP position (world, m), orientation as roll/pitch/yaw (rad), gripper opening in [0, 1]: 7 numbers."""
    R = quat_to_matrix(tcp_pose.q)
    return np.concatenate([np.asarray(tcp_pose.p, dtype=np.float64), matrix_to_euler_xyz(R), [opening]])


@dataclass
class Trajectory:
    """Joint positions and velocities at every physics step (mplib + TOPP-RA at the 1/250 s timestep)."""

    position: np.ndarray
    velocity: np.ndarray


class Arm:
    """One Panda with gripper, driven by joint PD targets; ``tick`` applies gravity compensation each step."""

    def __init__(self, scene, side: str, visual: str = "lowpoly"):
        import mplib

        self.side = side
        d = assets.panda_dir()
        urdf, srdf = str(d / assets.URDF_NAME), str(d / assets.SRDF_NAME)
        loader = scene.create_urdf_loader()
        loader.fix_root_link = True
        loader.set_material(1.0, 1.0, 0.0)
        try:
            self.robot = loader.load(urdf)
        except (RuntimeError, ValueError, OSError) as exc:  # sapien's errors for broken files
            raise SimError(f"{urdf}: cannot load the Panda URDF ({exc}); delete {d} and run scripts/fetch_assets.sh") from None
        if self.robot is None:
            raise SimError(f"{urdf}: SAPIEN loaded no articulation; delete {d} and run scripts/fetch_assets.sh")
        self.robot.set_name(f"{side}_arm")
        if visual == "lowpoly":
            from frameplan_core.sim.lowpoly import lowpoly_robot

            lowpoly_robot(self.robot)
        x, y = BASE_XY[side]
        self.base_pose = pose([x, y, TABLE_HEIGHT], [np.cos(BASE_YAW / 2), 0, 0, np.sin(BASE_YAW / 2)])
        self.robot.set_root_pose(self.base_pose)
        self.joints = self.robot.get_active_joints()
        for j in self.joints[:ARM_DOF]:
            j.set_drive_property(stiffness=2000.0, damping=200.0, force_limit=500.0)
        for j in self.joints[ARM_DOF:]:
            j.set_drive_property(stiffness=2000.0, damping=100.0, force_limit=60.0)
        self.tcp = self.robot.find_link_by_name("panda_hand_tcp")
        self.hand = self.robot.find_link_by_name("panda_hand")
        self.finger_links = [self.robot.find_link_by_name(n) for n in ("panda_leftfinger", "panda_rightfinger")]
        self.planner = mplib.Planner(urdf=urdf, srdf=srdf, move_group="panda_hand_tcp",
                                     joint_vel_limits=np.full(ARM_DOF, JOINT_VEL_LIMIT),
                                     joint_acc_limits=np.full(ARM_DOF, JOINT_ACC_LIMIT))
        self.planner.set_base_pose(mplib.Pose(self.base_pose.p, self.base_pose.q))
        self.arm_target = REST_QPOS.copy()
        self.arm_velocity = np.zeros(ARM_DOF)
        self._sent = (self.arm_target.tobytes(), self.arm_velocity.tobytes())  # what the drives hold (see command)
        self.gripper_opening = 1.0  # the command in [0, 1], kept exactly so that a recorded command re-applies as is
        self.gripper_target = GRIPPER_MAX

    # ----------------------------------------------------------------------------------------- state
    def reset(self, qpos: Sequence[float] = REST_QPOS, gripper: float = 1.0) -> None:
        q = np.concatenate([np.asarray(qpos, dtype=np.float64), [gripper * GRIPPER_MAX] * 2])
        self.robot.set_qpos(q)
        self.robot.set_qvel(np.zeros_like(q))
        self.arm_target = np.asarray(qpos, dtype=np.float64).copy()
        self.arm_velocity = np.zeros(ARM_DOF)
        self.gripper_opening = float(gripper)
        self.gripper_target = gripper * GRIPPER_MAX
        self._sent = (self.arm_target.tobytes(), self.arm_velocity.tobytes())
        self._apply_targets(self.arm_velocity)

    @property
    def qpos(self) -> np.ndarray:
        return np.asarray(self.robot.get_qpos(), dtype=np.float64)

    def joint_state(self) -> np.ndarray:
        """7 arm joints (rad) and the gripper opening in [0, 1] (1 = open)."""
        return joint_state_of(self.qpos)

    def tcp_pose(self):
        return self.tcp.entity_pose

    def endpose(self) -> np.ndarray:
        """TCP position (world, m), orientation as roll/pitch/yaw (rad), gripper opening in [0, 1]: 7 numbers."""
        return endpose_of(self.tcp_pose(), self.joint_state()[-1])

    def grasp_quat(self, finger_yaw: float) -> np.ndarray:
        """Top-down TCP orientation closing along ``finger_yaw``, choosing the yaw (mod pi) nearest the current hand's
        so the wrist does not spin half a turn (the gripper is symmetric)."""
        R = quat_to_matrix(self.tcp_pose().q)
        cur = np.arctan2(R[1, 1], R[0, 1])
        best = min((finger_yaw, finger_yaw + np.pi), key=lambda a: abs(np.angle(np.exp(1j * (a - cur)))))
        return top_down_quat(best)

    # ----------------------------------------------------------------------------------------- control
    def _apply_targets(self, velocity: np.ndarray) -> None:
        for j, t, v in zip(self.joints[:ARM_DOF], self.arm_target, velocity):
            j.set_drive_target(float(t))
            j.set_drive_velocity_target(float(v))
        for j in self.joints[ARM_DOF:]:
            j.set_drive_target(float(self.gripper_target))

    def set_arm_target(self, q: np.ndarray, qd: np.ndarray | None = None) -> None:
        self.arm_target = np.array(q, dtype=np.float64)
        self.arm_velocity = np.zeros(ARM_DOF) if qd is None else np.array(qd, dtype=np.float64)
        self._sent = (self.arm_target.tobytes(), self.arm_velocity.tobytes())
        self._apply_targets(self.arm_velocity)

    def set_gripper(self, opening: float) -> None:
        """Opening in [0, 1]; closing on an object stops at its width and keeps squeezing through the PD drive."""
        self.gripper_opening = min(1.0, max(0.0, float(opening)))
        self.gripper_target = self.gripper_opening * GRIPPER_MAX
        for j in self.joints[ARM_DOF:]:
            j.set_drive_target(self.gripper_target)

    def command(self, q: np.ndarray, opening: float, qd: np.ndarray | None = None) -> None:
        """Joint targets (7), gripper command in [0, 1] and optional joint velocity feed-forward (7) for the next
        ticks. Only what changed reaches the drives: re-sending a held command costs a comparison, not 18 calls."""
        # byte comparison: a fraction of a microsecond, where numpy's elementwise compare costs several
        if q.tobytes() != self._sent[0] or (_ZERO_VEL_BYTES if qd is None else qd.tobytes()) != self._sent[1]:
            self.set_arm_target(q, qd)
        if opening != self.gripper_opening:
            self.set_gripper(opening)

    def compensate(self) -> None:
        """Passive-force compensation (gravity + Coriolis), applied before every physics step."""
        self.robot.set_qf(self.robot.compute_passive_force(gravity=True, coriolis_and_centrifugal=True))

    # ----------------------------------------------------------------------------------------- planning
    def plan(self, target_p: Sequence[float], target_q: Sequence[float], what: str = "motion",
             start: np.ndarray | None = None) -> Trajectory:
        """TCP motion from ``start`` (9 planner joints: 7 arm + 2 fingers in m; default the current joint targets)
        to a world pose: a screw motion (mplib), or when that fails a straight Cartesian line solved by IK waypoint
        by waypoint. Both are deterministic (no sampling). PlanningError when the pose cannot be reached."""
        import mplib

        if start is None:
            start = np.concatenate([self.arm_target, [self.gripper_target] * 2])
        start = np.asarray(start, dtype=np.float64)
        p = np.asarray(target_p, dtype=np.float64)
        q = np.asarray(target_q, dtype=np.float64)
        goal = mplib.Pose(p, q)
        status = "not tried"
        for qpos_step in (0.05, 0.1, 0.02):
            result = self.planner.plan_screw(goal, start.copy(), time_step=TIMESTEP, qpos_step=qpos_step)
            status = result.get("status")
            if status == "Success" and len(result.get("position", [])) > 0:
                return Trajectory(np.asarray(result["position"], dtype=np.float64),
                                  np.asarray(result["velocity"], dtype=np.float64))
        path = self._cartesian_path(start, p, q)
        if path is None:
            raise PlanningError(f"{self.side} arm: no motion for {what} to p={np.round(p, 3).tolist()} "
                                f"(screw: {status}; IK along the straight line failed)")
        if len(path) < 2:
            return Trajectory(np.asarray(path), np.zeros((len(path), ARM_DOF)))
        try:
            _, pos, vel, _, _ = self.planner.TOPP(np.asarray(path), TIMESTEP)
        except RuntimeError as exc:
            raise PlanningError(f"{self.side} arm: cannot time-parameterise {what} ({exc})") from None
        return Trajectory(np.asarray(pos, dtype=np.float64), np.asarray(vel, dtype=np.float64))

    def _cartesian_path(self, start: np.ndarray, p: np.ndarray, q: np.ndarray) -> list | None:
        """Joint waypoints every ~1 cm / 3 deg along the straight TCP line (lerp + slerp), each IK seeded by the last."""
        import mplib

        model = self.planner.pinocchio_model
        model.compute_forward_kinematics(start)
        cur = model.get_link_pose(self.planner.move_group_link_id)
        base_inv = np.linalg.inv(self.base_pose.to_transformation_matrix())
        goal_T = base_inv @ mplib.Pose(p, q).to_transformation_matrix()
        p0, q0 = np.asarray(cur.p), np.asarray(cur.q)
        p1 = goal_T[:3, 3]
        q1 = quat_from_matrix(goal_T[:3, :3])
        if np.dot(q0, q1) < 0:
            q1 = -q1
        angle = 2 * np.arccos(np.clip(abs(np.dot(q0, q1)), -1, 1))
        n = max(2, int(np.ceil(max(np.linalg.norm(p1 - p0) / 0.01, angle / np.deg2rad(3)))))
        qpos = start.copy()
        path = [start[:ARM_DOF].copy()]
        for i in range(1, n + 1):
            t = i / n
            qi = _slerp(q0, q1, t)
            status, sol = self.planner.IK(mplib.Pose(p0 + t * (p1 - p0), qi), qpos, n_init_qpos=1,
                                          return_closest=True)
            if status != "Success" or sol is None:
                return None
            sol = np.asarray(sol, dtype=np.float64)
            if np.max(np.abs(sol[:ARM_DOF] - qpos[:ARM_DOF])) > 0.5:  # IK jumped to another branch
                return None
            qpos = sol
            path.append(sol[:ARM_DOF].copy())
        return path


def _slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    d = float(np.clip(np.dot(q0, q1), -1.0, 1.0))
    if d > 0.9995:
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    th = np.arccos(d)
    return (np.sin((1 - t) * th) * q0 + np.sin(t * th) * q1) / np.sin(th)
