"""blocks_stack_easy: the black block is placed on top of the red block by the arm on the black block's side (or,
with ``expert_strategy: varied``, by either arm)."""
from __future__ import annotations

import numpy as np

from frameplan_core.sim.base_task import SimTask, random_side, uniform
from frameplan_core.sim.scene import TABLE_HEIGHT, Part, build_box_object, yaw_quat

HALF = 0.025
RED = [0.85, 0.1, 0.1]
BLACK = [0.06, 0.06, 0.06]


class BlocksStackEasy(SimTask):
    name = "blocks_stack_easy"
    n_block_colors = 0  # the task is defined by the colours: red stays red, black stays black

    def load_objects(self, rng: np.random.Generator) -> None:
        side = random_side(rng)
        s = 1.0 if side == "right" else -1.0
        kx, ky = s * uniform(rng, 0.14, 0.26), uniform(rng, -0.12, 0.04)
        rx, ry = s * uniform(rng, -0.08, 0.06), uniform(rng, -0.14, 0.02)
        for name, (x, y), color in (("red", (rx, ry), RED), ("black", (kx, ky), BLACK)):
            self.objects[name] = build_box_object(
                self.scene, f"{name}_block", [Part([HALF] * 3, color, name=name)],
                [x, y, TABLE_HEIGHT + HALF + 0.001], yaw_quat(uniform(rng, -0.6, 0.6)), density=800.0,
                material=self.stage.friction_material)
        self.side = side
        self.layout = {"arm": side, "red_xy": [rx, ry], "black_xy": [kx, ky]}
        self.wrong_arm = False  # instructed: the arm not named has held the lifted black block

    arm_instructable = True

    def vary(self, rng: np.random.Generator) -> dict:
        """Either arm stacks (the far one reaches the black block in ~93 % of scenes; collection retries the rest)."""
        self.side = random_side(rng)
        return {"arm": self.side}

    def _yaw(self, actor) -> float:
        T = actor.pose.to_transformation_matrix()
        return float(np.arctan2(T[1, 0], T[0, 0]))

    def _cube_grasp_quat(self, side: str, yaw: float) -> np.ndarray:
        """A cube can be grasped across either pair of faces: take the one nearest the hand's current yaw."""
        arm = self.arms[side]
        from frameplan_core.sim.robots import quat_to_matrix

        R = quat_to_matrix(arm.tcp_pose().q)
        cur = np.arctan2(R[1, 1], R[0, 1])
        cands = [yaw + k * np.pi / 2 for k in range(4)]
        best = min(cands, key=lambda a: abs(np.angle(np.exp(1j * (a - cur)))))
        return arm.grasp_quat(best)

    def expert(self):
        side, black, red = self.side, self.objects["black"], self.objects["red"]
        q = self._cube_grasp_quat(side, self._yaw(black))
        p = np.asarray(black.pose.p)
        yield from self.pick(side, p, q, "the black block", "reach for the black block", "grasp the black block",
                             "lift the black block")
        tcp_p, tcp_q = self.commanded_tcp(side)
        above = np.array([red.pose.p[0], red.pose.p[1], red.pose.p[2] + 2 * HALF + 0.06])
        self.say("move the black block above the red block")
        yield from self.move(side, tcp_p + (above - black.pose.p), tcp_q, "above the red block")
        self.say("put the black block on the red block")
        yield from self.move_by(side, [0, 0, -0.056], "lower onto the red block")
        self.say("release the black block")
        yield from self.gripper(side, 1.0)
        self.say("move the arm away")
        yield from self.move_by(side, [0, 0, 0.10], "retreat")
        yield from self.wait(25)

    def on_step(self) -> None:
        """Instructed episodes: every 25 ticks (0.1 s), while the black block is off the table, note whether the arm
        the instruction did not name holds it (the contact list is read only then)."""
        if not self.instructed or self.wrong_arm or self.step_count % 25:
            return
        black = self.objects["black"]
        if not self.on_table(black.pose.p[2], HALF, tol=0.005):
            self.wrong_arm = self.held_by(self.other_arm(self.named_arm), black)

    def check_success(self) -> bool:
        if self.wrong_arm:
            return False
        b, r = np.asarray(self.objects["black"].pose.p), np.asarray(self.objects["red"].pose.p)
        aligned = np.linalg.norm(b[:2] - r[:2]) < 0.02
        stacked = abs((b[2] - r[2]) - 2 * HALF) < 0.008
        red_on_table = self.on_table(r[2], HALF, tol=0.008)
        return bool(aligned and stacked and red_on_table and not self.held_by_either(self.objects["black"]))


TASK = BlocksStackEasy
