"""The simulated robot as ROS sees it: the 16 joint names of /joint_states and of joint commands, their limits, and
the tool-centre-point position of a joint vector (forward kinematics), all read from the Panda URDF the simulator
loads.

Joints, in the order of ``SimEnv``'s 16-number command and ``Observation.joint_state``: ``left_panda_joint1`` ..
``left_panda_joint7``, ``left_gripper``, then the same for ``right_``. Arm joints are in radians; a gripper
"joint" is the opening in [0, 1] (1 = open: both fingers 0.04 m out), the unit the policy and the simulator use.

Why parse the URDF (with the standard library) instead of asking the simulator: the sim bridge must refuse
out-of-limit commands before they reach SAPIEN, and the foresight node draws its commanded trajectory without
a simulator; both then use the limits and geometry the simulator itself loads."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from frameplan_core.errors import ConfigError

SIDES = ("left", "right")
ARM_DOF = 7
JOINT_NAMES: tuple[str, ...] = tuple(
    name for side in SIDES for name in [f"{side}_panda_joint{i}" for i in range(1, ARM_DOF + 1)] + [f"{side}_gripper"])
GRIPPER_INDICES = (ARM_DOF, 2 * ARM_DOF + 1)
TCP_LINK = "panda_hand_tcp"


def _rpy_matrix(rpy: np.ndarray) -> np.ndarray:
    r, p, y = rpy
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def _axis_angle(axis: np.ndarray, angle: float) -> np.ndarray:
    x, y, z = axis / np.linalg.norm(axis)
    c, s = np.cos(angle), np.sin(angle)
    C = 1 - c
    return np.array([[c + x * x * C, x * y * C - z * s, x * z * C + y * s],
                     [y * x * C + z * s, c + y * y * C, y * z * C - x * s],
                     [z * x * C - y * s, z * y * C + x * s, c + z * z * C]])


def _transform(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


@dataclass(frozen=True)
class _Joint:
    name: str
    kind: str
    origin: np.ndarray  # 4x4
    axis: np.ndarray


class PandaModel:
    """Limits (16, 2) in ``JOINT_NAMES`` order and ``tcp_positions`` (forward kinematics) of both arms."""

    def __init__(self, urdf: str | Path) -> None:
        self.urdf = Path(urdf)
        try:
            root = ET.parse(self.urdf).getroot()
        except (OSError, ET.ParseError) as exc:
            raise ConfigError(f"{self.urdf}: cannot read the Panda URDF ({exc})") from None
        by_child: dict[str, tuple[str, _Joint]] = {}
        limits: dict[str, tuple[float, float]] = {}
        for j in root.iter("joint"):
            origin = j.find("origin")
            xyz = np.array([float(v) for v in (origin.get("xyz", "0 0 0") if origin is not None else "0 0 0").split()])
            rpy = np.array([float(v) for v in (origin.get("rpy", "0 0 0") if origin is not None else "0 0 0").split()])
            axis_el = j.find("axis")
            axis = np.array([float(v) for v in axis_el.get("xyz").split()]) if axis_el is not None else np.array([0, 0, 1.0])
            joint = _Joint(j.get("name"), j.get("type"), _transform(_rpy_matrix(rpy), xyz), axis)
            by_child[j.find("child").get("link")] = (j.find("parent").get("link"), joint)
            lim = j.find("limit")
            if lim is not None and lim.get("lower") is not None:
                limits[joint.name] = (float(lim.get("lower")), float(lim.get("upper")))
        chain, link = [], TCP_LINK
        while link in by_child:
            link, joint = by_child[link]
            chain.append(joint)
        self.chain = chain[::-1]  # base -> TCP
        arm = [j.name for j in self.chain if j.kind == "revolute"]
        if arm != [f"panda_joint{i}" for i in range(1, ARM_DOF + 1)]:
            raise ConfigError(f"{self.urdf}: expected the 7 revolute joints panda_joint1..7 from the base to "
                              f"{TCP_LINK}, found {arm}")
        per_arm = [limits[n] for n in arm] + [(0.0, 1.0)]
        self.limits = np.array(per_arm * 2, dtype=np.float64)

    def tcp_positions(self, joints: np.ndarray) -> np.ndarray:
        """(N, 16) joint vectors (or one (16,)) -> (N, 2, 3) world TCP positions (m) of the left and right arm."""
        from frameplan_core.sim.robots import BASE_XY, BASE_YAW
        from frameplan_core.sim.scene import TABLE_HEIGHT

        q = np.atleast_2d(np.asarray(joints, dtype=np.float64))
        out = np.zeros((len(q), 2, 3))
        for a, side in enumerate(SIDES):
            x, y = BASE_XY[side]
            base = _transform(_axis_angle(np.array([0, 0, 1.0]), BASE_YAW), np.array([x, y, TABLE_HEIGHT]))
            arm_q = q[:, a * (ARM_DOF + 1): a * (ARM_DOF + 1) + ARM_DOF]
            for n in range(len(q)):
                T, k = base.copy(), 0
                for joint in self.chain:
                    T = T @ joint.origin
                    if joint.kind == "revolute":
                        T = T @ _transform(_axis_angle(joint.axis, arm_q[n, k]), np.zeros(3))
                        k += 1
                out[n, a] = T[:3, 3]
        return out


@lru_cache(maxsize=2)
def panda_model(urdf: str | None = None) -> PandaModel:
    """The Panda of the simulator's asset cache (``scripts/fetch_assets.sh``) or ``urdf``; ConfigError if absent."""
    if urdf is None:
        from frameplan_core.errors import SimError
        from frameplan_core.sim import assets

        try:
            urdf = str(assets.panda_dir(fetch=False) / assets.URDF_NAME)
        except SimError as exc:
            raise ConfigError(f"robot model: {exc}") from None
    return PandaModel(urdf)


__all__ = ["ARM_DOF", "GRIPPER_INDICES", "JOINT_NAMES", "PandaModel", "SIDES", "panda_model"]
