"""block_hammer_beat: one arm picks the hammer (handle + head built from boxes) by its handle and strikes the
block, so that the hammer head touches the block's top. The arm on the hammer's side does the work."""
from __future__ import annotations

import numpy as np

from frameplan_core.sim.base_task import SimTask, random_side, uniform
from frameplan_core.sim.scene import (
    TABLE_HEIGHT,
    Part,
    build_box_object,
    pose,
    set_object_color,
    yaw_quat,
)

BLOCK_HALF = 0.025
HANDLE_HALF = (0.09, 0.014, 0.014)
HEAD_HALF = (0.025, 0.05, 0.025)
# The hammer's frame is at the handle's centre; the head sits at one end, bottoms flush so it lies flat.
HEAD_OFFSET_X = HANDLE_HALF[0] + HEAD_HALF[0]
HEAD_OFFSET_Z = HEAD_HALF[2] - HANDLE_HALF[2]
GRASP_OFFSET_X = 0.03  # grasp the handle this far from its centre, away from the head
BLOCK_COLOR = [0.85, 0.22, 0.18]


class BlockHammerBeat(SimTask):
    name = "block_hammer_beat"
    n_block_colors = 1

    def load_objects(self, rng: np.random.Generator) -> None:
        side = random_side(rng)
        s = 1.0 if side == "right" else -1.0
        # The hammer lies in front of the working arm with its head pointing to the middle of the table.
        hx, hy = s * uniform(rng, 0.17, 0.25), uniform(rng, -0.02, 0.06)
        hyaw = uniform(rng, -0.25, 0.25)
        bx, by = s * uniform(rng, -0.06, 0.08), uniform(rng, -0.16, -0.08)
        head_dir = -s  # head towards the centre
        self.side = side
        self.head_local = np.array([head_dir * HEAD_OFFSET_X, 0.0, HEAD_OFFSET_Z])
        self._head_pose = pose(self.head_local)
        self.grasp_local = np.array([-head_dir * GRASP_OFFSET_X, 0.0, 0.0])
        color = self.augment.get("block_colors", [BLOCK_COLOR])[0]
        self.objects["hammer"] = build_box_object(
            self.scene, "hammer",
            [Part(HANDLE_HALF, [0.55, 0.36, 0.2], name="handle"),
             Part(HEAD_HALF, [0.3, 0.3, 0.33], offset=self.head_local, name="head")],
            [hx, hy, TABLE_HEIGHT + HANDLE_HALF[2] + 0.001], yaw_quat(hyaw), density=500.0,
            material=self.stage.friction_material)
        self.objects["block"] = build_box_object(
            self.scene, "block", [Part([BLOCK_HALF] * 3, color, name="block")],
            [bx, by, TABLE_HEIGHT + BLOCK_HALF + 0.001], yaw_quat(uniform(rng, -0.5, 0.5)), density=800.0,
            material=self.stage.friction_material)
        set_object_color(self.objects["block"], color)
        self.layout = {"arm": side, "hammer_xy_yaw": [hx, hy, hyaw], "block_xy": [bx, by], "block_color": color}
        self.hit = False

    arm_instructable = True

    def vary(self, rng: np.random.Generator) -> dict:
        """Either arm strikes (the far arm's reach fails in ~40 % of scenes; collection retries them)."""
        self.side = random_side(rng)
        return {"arm": self.side}

    def _world(self, actor, local) -> np.ndarray:
        T = actor.pose.to_transformation_matrix()
        return T[:3, :3] @ np.asarray(local) + T[:3, 3]

    def on_step(self) -> None:
        """Hit detection, every tick whoever drives the arm: the head's bottom is at the block's top (within 1 cm),
        over it, and the hammer touches the block. The pose test comes first (~10 us) and is rarely true, so the
        contact list (~40 us) is only read while the head is on the block."""
        if self.hit:
            return
        hammer, block = self.objects["hammer"], self.objects["block"]
        hx, hy, hz = (hammer.pose * self._head_pose).p.tolist()  # the head's centre in the world
        bx, by, bz = block.pose.p.tolist()
        reach = BLOCK_HALF + HEAD_HALF[0]
        if -0.01 < hz - HEAD_HALF[2] - (bz + BLOCK_HALF) < 0.01 and abs(hx - bx) < reach and abs(hy - by) < reach \
                and self.contact(hammer, block):
            self.hit = True

    def expert(self):
        side, hammer, block = self.side, self.objects["hammer"], self.objects["block"]
        T = hammer.pose.to_transformation_matrix()
        grasp = self._world(hammer, self.grasp_local)
        axis_yaw = np.arctan2(T[1, 0], T[0, 0])
        q = self.arms[side].grasp_quat(axis_yaw + np.pi / 2)  # fingers close across the handle
        yield from self.pick(side, grasp, q, "the hammer's handle", "reach for the hammer's handle", "grasp the hammer",
                             "lift the hammer", lift_by=0.12)
        # Where the head is relative to the commanded TCP now that it is held (measured, not assumed).
        tcp_p, tcp_q = self.commanded_tcp(side)
        head = self._world(hammer, self.head_local)
        top = block.pose.p[2] + BLOCK_HALF
        target_head = np.array([block.pose.p[0], block.pose.p[1], top + HEAD_HALF[2] + 0.06])
        self.say("move the hammer above the block")
        yield from self.move(side, tcp_p + (target_head - head), tcp_q, "hammer above the block")
        self.say("strike the block with the hammer")
        yield from self.move_by(side, [0, 0, -0.068], "strike", settle=25)
        self.say("raise the hammer")
        yield from self.move_by(side, [0, 0, 0.08], "raise the hammer")

    def check_success(self) -> bool:
        hammer_z = self.objects["hammer"].pose.p[2]
        block_ok = self.on_table(self.objects["block"].pose.p[2], BLOCK_HALF, tol=0.01)
        hammer = self.objects["hammer"]  # instructed: the named arm must hold it; otherwise either arm may
        held = self.held_by(self.named_arm, hammer) if self.instructed else self.held_by_either(hammer)
        return bool(self.hit and block_ok and hammer_z > TABLE_HEIGHT + 0.05 and held)


TASK = BlockHammerBeat
