"""block_handover: the left arm picks a long block, brings it to the middle, the right arm grasps its other end,
the left releases, and the right places it on the right side of the table."""
from __future__ import annotations

import numpy as np

from frameplan_core.sim.base_task import SimTask, uniform
from frameplan_core.sim.scene import (
    TABLE_HEIGHT,
    Part,
    build_box_object,
    set_object_color,
    yaw_quat,
)

BLOCK_HALF = (0.08, 0.02, 0.02)  # long along its x axis so two hands fit side by side
GRASP_FROM_CENTRE = 0.05
HANDOVER_HEIGHT = 0.20  # block centre above the table top during the handover
# Offsets (m) from the preferred hand-over point tried in order when the left arm cannot reach it with the block
# (task config plan_fallback): a few centimetres to either side, higher, lower, nearer.
HANDOVER_FALLBACKS = [(0.0, 0.0, 0.0), (0.03, 0.0, 0.0), (-0.03, 0.0, 0.0), (0.0, 0.0, 0.03), (0.0, 0.0, -0.03),
                      (0.06, 0.0, 0.0), (-0.06, 0.0, 0.0), (0.0, -0.03, 0.0), (0.0, 0.03, 0.0), (0.03, 0.0, 0.03)]
BLOCK_COLOR = [0.2, 0.45, 0.85]
TARGET_COLOR = [0.25, 0.7, 0.3]


class BlockHandover(SimTask):
    name = "block_handover"
    n_block_colors = 1

    def load_objects(self, rng: np.random.Generator) -> None:
        bx, by, byaw = uniform(rng, -0.27, -0.16), uniform(rng, -0.12, 0.02), uniform(rng, -0.3, 0.3)
        tx, ty = uniform(rng, 0.16, 0.26), uniform(rng, -0.12, 0.0)
        color = self.augment.get("block_colors", [BLOCK_COLOR])[0]
        self.objects["block"] = build_box_object(
            self.scene, "block", [Part(BLOCK_HALF, color, name="block")],
            [bx, by, TABLE_HEIGHT + BLOCK_HALF[2] + 0.001], yaw_quat(byaw), density=600.0,
            material=self.stage.friction_material)
        set_object_color(self.objects["block"], color)
        # A thin target mat on the right side (visual only, flush with the table) marks where the block goes.
        b = self.scene.create_actor_builder()
        from frameplan_core.sim.scene import color_material, pose

        b.add_box_visual(pose(), [0.06, 0.045, 0.0005], material=color_material(TARGET_COLOR))
        self.objects["target"] = b.build_kinematic(name="target")
        self.objects["target"].set_pose(pose([tx, ty, TABLE_HEIGHT + 0.0005]))
        self.target = np.array([tx, ty])
        self.layout = {"block_xy_yaw": [bx, by, byaw], "target_xy": [tx, ty], "block_color": color}
        self.handover = np.array([0.0, -0.02, TABLE_HEIGHT + HANDOVER_HEIGHT])

    def vary(self, rng: np.random.Generator) -> dict:
        """The hand-over point moves: 6 cm either way across the table, 4 cm up or down."""
        self.handover = np.array([uniform(rng, -0.06, 0.06), -0.02, TABLE_HEIGHT + uniform(rng, 0.16, 0.24)])
        return {"handover_xyz": [round(float(v), 4) for v in self.handover]}

    def _end(self, sign: float) -> tuple[np.ndarray, float]:
        """World point on the block's top face centre line, ``sign`` * GRASP_FROM_CENTRE along its axis, and the yaw
        of that axis."""
        T = self.objects["block"].pose.to_transformation_matrix()
        p = T[:3, :3] @ np.array([sign * GRASP_FROM_CENTRE, 0.0, 0.0]) + T[:3, 3]
        return p, float(np.arctan2(T[1, 0], T[0, 0]))

    def expert(self):
        block = self.objects["block"]
        p, yaw = self._end(-1.0)
        ql = self.arms["left"].grasp_quat(yaw + np.pi / 2)
        yield from self.pick("left", p, ql, "the block", "reach for the block with the left arm",
                             "grasp the block with the left gripper", "lift the block")
        tcp_p, tcp_q = self.commanded_tcp("left")
        self.say("bring the block to the middle")
        points = [self.handover + d for d in (HANDOVER_FALLBACKS if self.cfg.plan_fallback else [(0.0, 0.0, 0.0)])]
        yield from self.move_reachable("left", [tcp_p + (h - block.pose.p) for h in points], tcp_q, "to the middle")
        p, yaw = self._end(1.0)
        qr = self.arms["right"].grasp_quat(yaw + np.pi / 2)
        yield from self.pick("right", p, qr, "the block's other end", "reach for the block with the right arm",
                             "grasp the block with the right gripper", approach=0.09)
        self.say("release the block with the left gripper")
        yield from self.gripper("left", 1.0)
        left_away = self.move_by("left", [-0.08, 0.0, 0.08], "left retreat")
        tcp_p, tcp_q = self.commanded_tcp("right")
        place = np.array([self.target[0], self.target[1], TABLE_HEIGHT + BLOCK_HALF[2] + 0.004])
        self.say("move the left arm away and carry the block to the right side")
        lift = tcp_p + (np.array([place[0], place[1], place[2] + 0.08]) - block.pose.p)
        yield from self.parallel(left_away, self.move("right", lift, tcp_q, "right carry"))
        yield from self.move_by("right", [0, 0, -0.08], "right lower")
        self.say("release the block")
        yield from self.gripper("right", 1.0)
        self.say("move the right arm away")
        yield from self.move_by("right", [0, 0, 0.10], "right retreat")

    def check_success(self) -> bool:
        p = self.objects["block"].pose.p
        near_target = np.linalg.norm(p[:2] - self.target) < 0.04
        on_table = self.on_table(p[2], BLOCK_HALF[2], tol=0.01)
        released = not self.held_by_either(self.objects["block"])
        return bool(near_target and on_table and released)


TASK = BlockHandover
