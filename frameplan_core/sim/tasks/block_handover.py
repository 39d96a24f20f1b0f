"""block_handover: the left arm picks a long block, brings it to the middle, the right arm grasps its other end,
the left releases, and the right places it on the right side of the table.

``expert_strategy: instructed``: the block lies in the middle with a mat on either side, and the instruction names
the arm that picks it up (the giver, ``named_arm``); the other arm takes it and places it on the mat on its own side,
which is what the success check asks for. Only the instruction tells the direction."""
from __future__ import annotations

import numpy as np

from frameplan_core.sim.base_task import SimTask, random_side, uniform
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
# What the expert announces per giver (the arm that picks the block up); the taker is the other arm.
STEPS = {
    "left": {"reach": "reach for the block with the left arm", "grasp": "grasp the block with the left gripper",
             "take": "reach for the block with the right arm", "take_grasp": "grasp the block with the right gripper",
             "release": "release the block with the left gripper",
             "carry": "move the left arm away and carry the block to the right side", "away": "move the right arm away"},
    "right": {"reach": "reach for the block with the right arm", "grasp": "grasp the block with the right gripper",
              "take": "reach for the block with the left arm", "take_grasp": "grasp the block with the left gripper",
              "release": "release the block with the right gripper",
              "carry": "move the right arm away and carry the block to the left side", "away": "move the left arm away"},
}


class BlockHandover(SimTask):
    name = "block_handover"
    n_block_colors = 1

    def load_objects(self, rng: np.random.Generator) -> None:
        bx, by, byaw = uniform(rng, -0.27, -0.16), uniform(rng, -0.12, 0.02), uniform(rng, -0.3, 0.3)
        tx, ty = uniform(rng, 0.16, 0.26), uniform(rng, -0.12, 0.0)
        self.arm_instructable = self.instructed  # the giver is the arm choice; varied moves the hand-over point
        targets = {"right": np.array([tx, ty])}
        if self.instructed:  # the block in the middle, a mat on either side: nothing but the text shows the direction
            bx = uniform(rng, -0.04, 0.04)
            targets["left"] = np.array([-uniform(rng, 0.16, 0.26), uniform(rng, -0.12, 0.0)])
        color = self.augment.get("block_colors", [BLOCK_COLOR])[0]
        self.objects["block"] = build_box_object(
            self.scene, "block", [Part(BLOCK_HALF, color, name="block")],
            [bx, by, TABLE_HEIGHT + BLOCK_HALF[2] + 0.001], yaw_quat(byaw), density=600.0,
            material=self.stage.friction_material)
        set_object_color(self.objects["block"], color)
        # A thin target mat (visual only, flush with the table) marks where the block goes.
        from frameplan_core.sim.scene import color_material, pose

        for side, (x, y) in targets.items():
            b = self.scene.create_actor_builder()
            b.add_box_visual(pose(), [0.06, 0.045, 0.0005], material=color_material(TARGET_COLOR))
            name = "target" if side == "right" else "target_left"
            self.objects[name] = b.build_kinematic(name=name)
            self.objects[name].set_pose(pose([x, y, TABLE_HEIGHT + 0.0005]))
        self.targets = targets
        self.side = "left"  # the giver
        self.layout = {"block_xy_yaw": [bx, by, byaw], "target_xy": [tx, ty], "block_color": color}
        if self.instructed:
            self.layout["target_left_xy"] = [float(v) for v in targets["left"]]
        self.handover = np.array([0.0, -0.02, TABLE_HEIGHT + HANDOVER_HEIGHT])

    def vary(self, rng: np.random.Generator) -> dict:
        """``varied``: the hand-over point moves, 6 cm either way across the table, 4 cm up or down. ``instructed``:
        either arm picks the block up (the giver) and the other places it on its side's mat."""
        if self.instructed:
            self.side = random_side(rng)
            return {"arm": self.side}
        self.handover = np.array([uniform(rng, -0.06, 0.06), -0.02, TABLE_HEIGHT + uniform(rng, 0.16, 0.24)])
        return {"handover_xyz": [round(float(v), 4) for v in self.handover]}

    def _end(self, sign: float) -> tuple[np.ndarray, float]:
        """World point on the block's top face centre line, ``sign`` * GRASP_FROM_CENTRE along its axis, and the yaw
        of that axis."""
        T = self.objects["block"].pose.to_transformation_matrix()
        p = T[:3, :3] @ np.array([sign * GRASP_FROM_CENTRE, 0.0, 0.0]) + T[:3, 3]
        return p, float(np.arctan2(T[1, 0], T[0, 0]))

    def expert(self):
        block, giver = self.objects["block"], self.side
        taker, say = self.other_arm(giver), STEPS[giver]
        g = -1.0 if giver == "left" else 1.0  # the giver takes the block's end on its own side
        p, yaw = self._end(g)
        ql = self.arms[giver].grasp_quat(yaw + np.pi / 2)
        yield from self.pick(giver, p, ql, "the block", say["reach"], say["grasp"], "lift the block")
        tcp_p, tcp_q = self.commanded_tcp(giver)
        self.say("bring the block to the middle")
        points = [self.handover + d for d in (HANDOVER_FALLBACKS if self.cfg.plan_fallback else [(0.0, 0.0, 0.0)])]
        yield from self.move_reachable(giver, [tcp_p + (h - block.pose.p) for h in points], tcp_q, "to the middle")
        p, yaw = self._end(-g)
        qr = self.arms[taker].grasp_quat(yaw + np.pi / 2)
        yield from self.pick(taker, p, qr, "the block's other end", say["take"], say["take_grasp"], approach=0.09)
        self.say(say["release"])
        yield from self.gripper(giver, 1.0)
        giver_away = self.move_by(giver, [g * 0.08, 0.0, 0.08], f"{giver} retreat")
        tcp_p, tcp_q = self.commanded_tcp(taker)
        target = self.targets[taker]
        place = np.array([target[0], target[1], TABLE_HEIGHT + BLOCK_HALF[2] + 0.004])
        self.say(say["carry"])
        lift = tcp_p + (np.array([place[0], place[1], place[2] + 0.08]) - block.pose.p)
        yield from self.parallel(giver_away, self.move(taker, lift, tcp_q, f"{taker} carry"))
        yield from self.move_by(taker, [0, 0, -0.08], f"{taker} lower")
        self.say("release the block")
        yield from self.gripper(taker, 1.0)
        self.say(say["away"])
        yield from self.move_by(taker, [0, 0, 0.10], f"{taker} retreat")

    def check_success(self) -> bool:
        """The block released, flat on the table, on the mat: the taker's own (the arm not named) when instructed."""
        p = self.objects["block"].pose.p
        taker = self.other_arm(self.named_arm) if self.instructed else "right"
        near_target = np.linalg.norm(p[:2] - self.targets[taker]) < 0.04
        on_table = self.on_table(p[2], BLOCK_HALF[2], tol=0.01)
        released = not self.held_by_either(self.objects["block"])
        return bool(near_target and on_table and released)


TASK = BlockHandover
