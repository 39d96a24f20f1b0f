"""What every simulated task shares: scene + two arms + cameras, the one stepping function (``tick``: a 16-number
joint command, then one physics step), the scripted expert as a command source, motion primitives (screw moves,
gripper, parallel motions, and ``pick``: the reach/grasp/lift every expert starts with) and the recording of
RoboTwin frames.

An expert is a generator: each ``yield`` means "the command for this physics tick is set" in the expert's own
command buffer; ``expert_commands`` turns that into one ``Command`` per tick, and ``stream`` (the collector, the ROS
bridge) and ``SimEnv`` (any controller) both send commands through ``tick``, so an expert episode and a replay of
its recorded commands drive the arms the same way."""
from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from frameplan_core.errors import SimError
from frameplan_core.sim import augmentation, render
from frameplan_core.sim.cameras import Cameras
from frameplan_core.sim.cameras import camera_type as lookup_camera_type
from frameplan_core.sim.robots import ARM_DOF, GRIPPER_MAX, Arm, PlanningError
from frameplan_core.sim.scene import TABLE_HEIGHT, TIMESTEP, build_stage, pose
from frameplan_core.sim.task_config import TaskConfig, load_task_config

SETTLE_TICKS = 50  # physics ticks before the first frame, so objects rest on the table
GRASP_CLEARANCE = 0.002  # m: how far above its grasp point the TCP stops before the gripper closes
SIDES = ("left", "right")
COMMAND_DIM = 16  # per arm: 7 joint targets (rad) + gripper command in [0, 1]; left arm first
_ARM = {"left": slice(0, ARM_DOF), "right": slice(ARM_DOF + 1, 2 * ARM_DOF + 1)}
_GRIP = {"left": ARM_DOF, "right": 2 * ARM_DOF + 1}
_VEL = {"left": slice(0, ARM_DOF), "right": slice(ARM_DOF, 2 * ARM_DOF)}


@dataclass(slots=True)
class Command:
    """One physics tick's command for both arms. ``targets`` (16,): left joints 1..7 (rad), left gripper command
    in [0, 1] (1 = open), right joints 1..7, right gripper -- the layout of ``joint_command_full``. ``velocity``
    (14,): joint velocity feed-forward (rad/s, left 7 then right 7), None for zero."""

    targets: np.ndarray
    velocity: np.ndarray | None = None


@dataclass
class SimFrame:
    """One saved frame of a running task (the live API and the collector both consume these)."""

    index: int
    observation: dict
    instruction: str | None
    sim_time: float
    step: int
    joint_action: np.ndarray
    endpose: np.ndarray
    joint_state_full: np.ndarray
    pointcloud: object = field(default_factory=list)
    joint_command_full: np.ndarray | None = None

    def to_robotwin(self) -> dict:
        """The RoboTwin 1.0 pickle dict plus two 16-number extras (both arms' 7 joints + gripper): the measured
        ``joint_state_full`` and the commanded ``joint_command_full`` (what a replay must send)."""
        d = {"observation": self.observation, "pointcloud": self.pointcloud,
             "joint_action": self.joint_action, "endpose": self.endpose,
             "joint_state_full": self.joint_state_full}
        if self.joint_command_full is not None:
            d["joint_command_full"] = self.joint_command_full
        return d


class SimTask:
    """Base of the three tasks. Subclasses define ``name``, ``block_colors`` (how many recolourable blocks),
    ``load_objects(rng)``, ``vary(rng)`` (the strategy of ``expert_strategy: varied``), ``expert()`` and
    ``check_success()``."""

    name = "base"
    n_block_colors = 0
    arm_instructable = False  # vary() chooses self.side, the arm that does the work (expert_strategy: instructed)

    def __init__(self, seed: int = 0, camera_type: str | None = None, cameras: Sequence[str] | None = None,
                 config: TaskConfig | None = None, augment: dict | None = None):
        self.cfg = config or load_task_config(self.name)
        if self.cfg.task_name != self.name:
            raise SimError(f"config task_name {self.cfg.task_name!r} does not match task {self.name!r}")
        self.seed = int(seed)
        self.camera_type = camera_type or self.cfg.head_camera_type
        self.camera_names = tuple(cameras) if cameras is not None else tuple(self.cfg.cameras)
        rng = np.random.default_rng([self.seed, 0])
        aug_rng = np.random.default_rng([self.seed, 1])
        self.scene = render.new_scene()
        self.stage = build_stage(self.scene, shadows=self.cfg.shadows, shadow_map_size=self.cfg.shadow_map_size)
        # a recorded record (scene_info.json) is applied as is, so a replay looks like the episode it replays
        self.augment = dict(augment) if augment is not None else augmentation.sample(
            self.cfg.augmentation, aug_rng, self.n_block_colors)
        augmentation.apply(self.stage, self.augment)
        self.arms = {side: Arm(self.scene, side, self.cfg.robot_visual) for side in ("left", "right")}
        for arm in self.arms.values():
            arm.reset()
        self.objects: dict = {}
        self.layout: dict = {}
        self.load_objects(rng)
        if self.cfg.expert_strategy == "instructed" and not self.arm_instructable:
            raise SimError(f"{self.name}: expert_strategy 'instructed' needs an arm choice, which this task does not "
                           "have (use fixed or varied)")
        if self.cfg.arm_choice == "swapped" and (self.cfg.expert_strategy == "fixed" or not self.arm_instructable):
            raise SimError(f"{self.name}: arm_choice 'swapped' needs expert_strategy varied or instructed and a task "
                           "with an arm choice")
        if self.cfg.expert_strategy in ("varied", "instructed"):  # its own stream: fixed scenes stay exactly as they were
            self.layout["strategy"] = self.vary(np.random.default_rng([self.seed, 2]))
            if self.cfg.arm_choice == "swapped":
                self.side = self.other_arm(self.side)
                self.layout["strategy"] = dict(self.layout["strategy"], arm=self.side, arm_choice="swapped")
        ccfg = self.cfg.camera_config
        names = set(self.camera_names)

        def ctype(name: str, wanted: bool):  # only the cameras in use need a known type
            return lookup_camera_type(name, ccfg) if wanted else None

        self.cameras = Cameras(self.scene, self.camera_names, ctype(self.camera_type, "head_camera" in names),
                               ctype(self.cfg.wrist_camera_type, bool(names & {"left_camera", "right_camera"})),
                               ctype(self.cfg.front_camera_type, "front_camera" in names),
                               hands={s: a.hand for s, a in self.arms.items()},
                               head_jitter=self.augment.get("head_camera_jitter"))
        self.step_count = 0
        self._pending: str | None = None
        self._streamed = False
        self.expert_done = False
        self._closed = False
        self.segments: list[dict] = []
        self.timings = {"physics_s": 0.0, "render_s": 0.0, "plan_s": 0.0}
        import mplib

        mplib.set_global_seed(self.seed + 1)  # (OMPL refuses 0) IK restarts inside the planner draw random configurations
        for _ in range(SETTLE_TICKS):
            self._physics_step()
        self.step_count = 0
        self.initial_poses = self.object_poses()
        self._cmd = self.joint_command()  # the expert's command buffer (see expert_commands)
        self._vel = np.zeros(2 * ARM_DOF)

    # ------------------------------------------------------------------------------------ subclass hooks
    def load_objects(self, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def vary(self, rng: np.random.Generator) -> dict:
        """Choose this episode's strategy (task config ``expert_strategy: varied``); returns what was chosen."""
        raise NotImplementedError

    def expert(self) -> Iterator[None]:
        raise NotImplementedError

    def check_success(self) -> bool:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------ public API
    @property
    def instructed(self) -> bool:
        """Whether the instruction names the arm and success asks for it (``expert_strategy: instructed``)."""
        return self.cfg.expert_strategy == "instructed"

    def instructions(self, arm: str | None = None) -> dict[str, list[str]]:
        """The episode's instruction json (seen/unseen paraphrases): the task templates in a seed-shuffled order,
        each naming the arm to use when the episode is instructed. ``arm``: the same sentences naming that arm
        instead (e.g. the other one, as a negative instruction for the foresight)."""
        from frameplan_core.data.instructions import for_episode, naming_arm

        ins = for_episode(self.name, self.seed)
        return naming_arm(ins, arm or self.named_arm, self.seed, self.name) if self.instructed else ins

    @property
    def named_arm(self) -> str | None:
        """The arm an instructed episode's instruction names (what its success check asks for); None otherwise."""
        return self.layout["strategy"]["arm"] if self.instructed else None

    def other_arm(self, side: str) -> str:
        return "left" if side == "right" else "right"

    def success(self) -> bool:
        """Whether the task's goal holds in the current state, whoever drove the arms (expert, replay, policy)."""
        return bool(self.check_success())

    def tick(self, targets: np.ndarray | None = None, velocity: np.ndarray | None = None) -> None:
        """One physics tick (1/250 s) under the joint command ``targets`` (16,) with optional velocity feed-forward
        (14,); None keeps the command in force. The only way commands reach the arms: the expert's stream, SimEnv
        and replays all step through here."""
        if targets is not None:
            for side in SIDES:
                self.arms[side].command(targets[_ARM[side]], targets[_GRIP[side]],
                                        None if velocity is None else velocity[_VEL[side]])
        self._physics_step()

    def expert_commands(self) -> Iterator[Command]:
        """The scripted expert as a command source: one Command per physics tick until the expert is done (then
        ``expert_done`` is True). It plans from its own previous commands (starting from the command in force) and
        reads object poses from the live scene when each motion starts, so send every command to this task, one
        ``tick`` each, in order. Raises PlanningError (a SimError) when a motion cannot be planned."""
        self._cmd = self.joint_command()
        self._vel = np.zeros(2 * ARM_DOF)
        for _ in self.expert():
            yield Command(self._cmd.copy(), self._vel.copy())
        self.expert_done = True

    def stream(self, save_freq: int | None = None) -> Iterator[SimFrame]:
        """Run the scripted expert; yield a SimFrame every ``save_freq`` physics ticks (default: the config's).

        Raises PlanningError (a SimError) when a motion cannot be planned."""
        if self._closed:
            raise SimError(f"{self.name}: task is closed")
        if self._streamed:
            raise SimError(f"{self.name}: stream() runs the episode once; create a new task for another run")
        self._streamed = True
        save_freq = int(save_freq or self.cfg.save_freq)
        if save_freq < 1:
            raise SimError(f"save_freq must be >= 1, got {save_freq}")
        index = 0
        for cmd in self.expert_commands():
            if self.step_count % save_freq == 0:  # the state before this tick, with the command sent during it
                yield self._frame(index, cmd.targets)
                index += 1
            self.tick(cmd.targets, cmd.velocity)
        if self.step_count % save_freq == 0:
            yield self._frame(index)
            index += 1
        self._close_segments(save_freq, index)

    def close(self) -> None:
        """Release the scene (SAPIEN frees renderer resources when the last reference goes)."""
        if self._closed:
            return
        self._closed = True
        self.cameras = None
        self.arms = {}
        self.objects = {}
        self.scene = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def scene_info(self) -> dict:
        """Per-episode facts for scene_info.json: seed, layout, augmentation, render settings (so a replay looks
        the same), motion segments."""
        return {"task": self.name, "seed": self.seed, "camera_type": self.camera_type,
                "cameras": list(self.camera_names), "layout": self.layout, "augmentation": self.augment,
                "render": {"shadows": self.cfg.shadows, "shadow_map_size": self.cfg.shadow_map_size,
                           "robot_visual": self.cfg.robot_visual},
                "segments": self.segments, "sim_steps": self.step_count, "timestep": TIMESTEP,
                "objects": {k: {"initial": v, "final": self.object_poses().get(k)} for k, v in self.initial_poses.items()}}

    def object_poses(self) -> dict:
        """{object: [x, y, z, qw, qx, qy, qz]} in the world frame (metres)."""
        out = {}
        for name, actor in (self.objects or {}).items():
            p = actor.pose
            out[name] = [round(float(v), 6) for v in (*p.p, *p.q)]
        return out

    # ------------------------------------------------------------------------------------ internals
    def _physics_step(self) -> None:
        t = time.perf_counter()
        for arm in self.arms.values():
            arm.compensate()
        self.scene.step()
        self.step_count += 1
        self.on_step()
        self.timings["physics_s"] += time.perf_counter() - t

    def on_step(self) -> None:
        """Hook called after every physics tick (e.g. contact monitoring)."""

    def joint_vectors(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(joint_action 14, endpose 14, full joint state 16); layouts in docs/SIM.md."""
        left, right = self.arms["left"].joint_state(), self.arms["right"].joint_state()
        joint_action = np.concatenate([left[:6], left[-1:], right[:6], right[-1:]])
        endpose = np.concatenate([self.arms["left"].endpose(), self.arms["right"].endpose()])
        return joint_action, endpose, np.concatenate([left, right])

    def joint_command(self) -> np.ndarray:
        """The command in force: both arms' 7 joint targets (rad) and gripper command in [0, 1], 16 numbers."""
        left, right = self.arms["left"], self.arms["right"]
        return np.concatenate([left.arm_target, [left.gripper_opening], right.arm_target, [right.gripper_opening]])

    def _close_segments(self, save_freq: int, n_frames: int) -> None:
        """Give every motion segment its saved-frame span: ``start_frame`` is the first frame at or after the
        segment's first tick, ``end_frame`` the next segment's start (the last frame for the last one)."""
        starts = [min(n_frames - 1, -(-int(s["step"]) // save_freq)) for s in self.segments]
        for i, seg in enumerate(self.segments):
            seg["start_frame"] = starts[i]
            seg["end_frame"] = starts[i + 1] if i + 1 < len(starts) else n_frames - 1

    def _frame(self, index: int, command: np.ndarray | None = None) -> SimFrame:
        t = time.perf_counter()
        obs = self.cameras.capture(self.camera_names, depth=self.cfg.data_type.depth)
        pc: object = []
        if self.cfg.data_type.pointcloud and "head_camera" in obs:
            from frameplan_core.sim import pointcloud

            head = obs["head_camera"]
            depth = head.get("depth")
            if depth is None:
                depth = np.ones(head["rgb"].shape[:2])
            pc = pointcloud.from_camera(self.cameras.positions("head_camera"), head["rgb"], depth,
                                        self.cfg.pcd_crop, self.cfg.pcd_down_sample_num, seed=self.seed + index)
        self.timings["render_s"] += time.perf_counter() - t
        ja, ep, full = self.joint_vectors()
        instr, self._pending = self._pending, None
        return SimFrame(index=index, observation=obs, instruction=instr, sim_time=self.step_count * TIMESTEP,
                        step=self.step_count, joint_action=ja, endpose=ep, joint_state_full=full, pointcloud=pc,
                        joint_command_full=self.joint_command() if command is None else command)

    # ------------------------------------------------------------------------------------ motion primitives
    def say(self, text: str) -> None:
        """Start a motion segment: its instruction is attached to the next saved frame."""
        self._pending = text
        self.segments.append({"step": self.step_count, "instruction": text})

    def move(self, side: str, p: Sequence[float], q: Sequence[float], what: str = "motion",
             settle: int = 15) -> Iterator[None]:
        """Screw motion of one arm's TCP to world pose (p, q), then ``settle`` ticks holding the goal."""
        yield from self.move_reachable(side, [p], q, what, settle)

    def move_reachable(self, side: str, points: Sequence[Sequence[float]], q: Sequence[float], what: str = "motion",
                       settle: int = 15) -> Iterator[None]:
        """``move`` to the first of ``points`` (world, in order of preference) that the arm can reach with orientation
        ``q``. Where a task has a free choice (the hand-over point) an expert that gives up on the first unreachable
        pose fails scenes a robot can solve. Raises the first point's PlanningError when none is reachable."""
        first = None
        for p in points:
            t = time.perf_counter()
            try:
                traj = self.arms[side].plan(p, q, what, start=self._planner_start(side))
            except PlanningError as exc:
                first = first or exc
                continue
            finally:
                self.timings["plan_s"] += time.perf_counter() - t
            yield from self._follow(side, traj, settle)
            return
        raise first if first is not None else PlanningError(f"{side} arm: no candidate pose for {what}")

    def _follow(self, side: str, traj, settle: int) -> Iterator[None]:
        """Stream a planned trajectory into the expert's command buffer, one tick per waypoint, then hold it."""
        arm, vel = self._cmd[_ARM[side]], self._vel[_VEL[side]]  # views into the expert's command buffer
        for qpos, qvel in zip(traj.position, traj.velocity):
            arm[:] = qpos
            vel[:] = qvel
            yield
        arm[:] = traj.position[-1]
        vel[:] = 0.0
        for _ in range(settle):
            yield

    def move_by(self, side: str, dp: Sequence[float], what: str = "motion", settle: int = 15) -> Iterator[None]:
        """Translate the TCP by ``dp`` (world) from where it is commanded to be, keeping its orientation."""
        p, q = self.commanded_tcp(side)
        yield from self.move(side, np.asarray(p) + np.asarray(dp), q, what, settle)

    def _planner_start(self, side: str) -> np.ndarray:
        """The expert's current command for ``side`` as the planner's 9 joints (7 arm + 2 fingers in m)."""
        return np.concatenate([self._cmd[_ARM[side]], [self._cmd[_GRIP[side]] * GRIPPER_MAX] * 2])

    def commanded_tcp(self, side: str) -> tuple[np.ndarray, np.ndarray]:
        """TCP pose of the expert's current joint *command* (forward kinematics with the planner's model)."""
        arm = self.arms[side]
        model = arm.planner.pinocchio_model
        model.compute_forward_kinematics(self._planner_start(side))
        rel = model.get_link_pose(arm.planner.move_group_link_id)
        T = arm.base_pose.to_transformation_matrix() @ np.asarray(rel.to_transformation_matrix())
        from frameplan_core.sim.scene import quat_from_matrix

        return T[:3, 3].copy(), quat_from_matrix(T[:3, :3])

    def pick(self, side: str, point: Sequence[float], q: Sequence[float], what: str, reach: str, grasp: str,
             lift: str | None = None, approach: float = 0.10, lift_by: float = 0.10) -> Iterator[None]:
        """The start every scripted task shares: reach ``approach`` m above ``point`` (world) with the TCP orientation
        ``q``, descend to GRASP_CLEARANCE above it, close the gripper and, when ``lift`` is given, lift by ``lift_by``.
        ``reach``, ``grasp`` and ``lift`` are the instructions of the three segments; ``what`` names the object in
        planning errors."""
        point = np.asarray(point)
        self.say(reach)
        yield from self.move(side, point + [0, 0, approach], q, f"pre-grasp above {what}")
        yield from self.move(side, point + [0, 0, GRASP_CLEARANCE], q, f"grasp {what}")
        self.say(grasp)
        yield from self.gripper(side, 0.0)
        if lift is not None:
            self.say(lift)
            yield from self.move_by(side, [0, 0, lift_by], f"lift {what}")

    def gripper(self, side: str, opening: float, ticks: int = 75) -> Iterator[None]:
        """Open (1) or close (0) one gripper over ``ticks`` physics ticks, then hold."""
        g = _GRIP[side]
        start = float(self._cmd[g])
        for i in range(1, ticks + 1):
            self._cmd[g] = min(1.0, max(0.0, start + (opening - start) * min(1.0, i / (0.6 * ticks))))
            yield

    def wait(self, ticks: int) -> Iterator[None]:
        for _ in range(ticks):
            yield

    @staticmethod
    def parallel(*motions: Iterator[None]) -> Iterator[None]:
        """Run several motions (e.g. both arms) tick by tick until all are done."""
        alive = list(motions)
        while alive:
            nxt = []
            for m in alive:
                try:
                    next(m)
                    nxt.append(m)
                except StopIteration:
                    pass
            alive = nxt
            if alive:
                yield

    # ------------------------------------------------------------------------------------ helpers for tasks
    def object_pose(self, name: str):
        return self.objects[name].pose

    def contact(self, a, b) -> bool:
        """Whether actors ``a`` and ``b`` touch (any contact point with non-zero impulse or separation < 2 mm)."""
        ea, eb = a, b
        for c in self.scene.get_contacts():
            e0, e1 = c.bodies[0].entity, c.bodies[1].entity
            if (e0 == ea and e1 == eb) or (e0 == eb and e1 == ea):
                for pt in c.points:
                    if pt.separation < 0.002 or np.linalg.norm(pt.impulse) > 0:
                        return True
        return False

    def held_by(self, side: str, actor) -> bool:
        """Both fingers of ``side`` touch ``actor``."""
        fingers = [link.entity for link in self.arms[side].finger_links]
        touching = set()
        for c in self.scene.get_contacts():
            e0, e1 = c.bodies[0].entity, c.bodies[1].entity
            for i, f in enumerate(fingers):
                if (e0 == f and e1 == actor) or (e1 == f and e0 == actor):
                    touching.add(i)
        return len(touching) == 2

    def held_by_either(self, actor) -> bool:
        """Either arm holds ``actor`` (success checks that must not care which arm did the work)."""
        return any(self.held_by(side, actor) for side in SIDES)

    @staticmethod
    def on_table(z: float, half_height: float, tol: float = 0.01) -> bool:
        return abs(z - (TABLE_HEIGHT + half_height)) < tol


def uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def random_side(rng: np.random.Generator) -> str:
    """One draw: "right" or "left" with equal odds."""
    return "right" if rng.random() < 0.5 else "left"


__all__ = ["ARM_DOF", "COMMAND_DIM", "SIDES", "Command", "PlanningError", "SimFrame", "SimTask", "pose", "random_side", "uniform"]
