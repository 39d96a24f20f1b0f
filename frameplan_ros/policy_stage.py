"""The foresight node's policy mode at the ROS edge: joint states in, the policy's chunk out as a JointTrajectory,
the goal frame on ``predicted_image`` / ``comparison`` (and a new plan on ``plan/grid``). The decisions are
``policy_runner.PolicyRunner``'s; this module only moves messages. (The sim bridge draws the commanded tool paths
for rviz: it knows the camera pose.)"""
from __future__ import annotations

import os
from collections import deque
from typing import Any

import numpy as np
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import JointState
from trajectory_msgs.msg import JointTrajectory

from frameplan_core.errors import InputError
from frameplan_ros import convert
from frameplan_ros.diagnostics import WARN
from frameplan_ros.policy_runner import JointStateBuffer, PolicyRunner, rollout_config
from frameplan_ros.robot_model import JOINT_NAMES


class PolicyStage:
    """Made by the node the first time it is in policy mode; ``run(job, models)`` is called by its worker."""

    def __init__(self, node: Any) -> None:
        self.node = node
        p = node.p
        self.joints = JointStateBuffer()
        self.runner: PolicyRunner | None = None
        self._runner_key: tuple | None = None
        self._instruction: str | None = None
        self.trajectories = 0
        self.goals = 0
        self.last_steps = 0
        self._goal_ms: deque = deque(maxlen=100)
        self._policy_ms: deque = deque(maxlen=100)
        # best effort: matches reliable and best-effort joint_state publishers alike
        node.create_subscription(JointState, p.joint_states_topic, self._on_joint_state, qos_profile_sensor_data)
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.pub_command = node.create_publisher(JointTrajectory, p.command_topic, reliable)

    def _on_joint_state(self, msg: JointState) -> None:
        p = self.node.p
        try:
            q = convert.joint_state_vector(msg, JOINT_NAMES, p.joint_states_topic)
        except InputError as exc:
            self.node.health.error(exc.kind, str(exc), WARN)
            return
        self.joints.add(convert.stamp_seconds(msg.header.stamp), q)

    def forget(self) -> None:
        """The models are gone (lifecycle cleanup): the next run starts a new loop."""
        self.runner, self._runner_key = None, None

    def _runner(self, models: Any) -> PolicyRunner:
        p = self.node.p
        key = (id(models), p.policy_period, p.goal_period, p.policy_gripper, p.subgoal_steps, p.samples, p.steps,
               p.seed)
        if key != self._runner_key:
            seed = p.seed if p.seed >= 0 else int.from_bytes(os.urandom(4), "little") >> 1
            cfg = rollout_config(p.policy_period, p.goal_period, models.step_s, p.policy_gripper, p.subgoal_steps,
                                 p.samples)
            self.runner = PolicyRunner(models, cfg, seed, {"steps": p.steps or None})
            self._runner_key = key
        return self.runner

    def run(self, job: Any, models: Any) -> float | None:
        """One frame: None when no new chunk is due; else the goal + policy time (ms) after publishing."""
        node, p = self.node, self.node.p
        runner = self._runner(models)
        if job.instruction != self._instruction:  # a new task: a new goal, and the steps count from 0
            self._instruction = job.instruction
            runner.reset()
        t = convert.stamp_seconds(job.image.header.stamp)
        if not runner.due(t):
            return None
        q = self.joints.match(t, p.joint_state_tolerance, p.joint_states_topic)
        rgb = convert.to_rgb(job.image, node.image_where)
        d = runner.step(rgb, q, job.instruction, t)
        if d is None:
            return None
        header = job.image.header
        node.outputs.publish(self.pub_command, convert.joint_trajectory_msg(d.commands, JOINT_NAMES, models.step_s,
                                                                            header.stamp))
        if d.new_goal and d.goal is not None:
            self.goals += 1
            node.outputs.goal(header, rgb, d.goal, d.plan)
        self.trajectories += 1
        self.last_steps = d.steps
        self._goal_ms.append(d.goal_ms)
        self._policy_ms.append(d.policy_ms)
        return d.goal_ms + d.policy_ms

    def values(self) -> dict:
        """Policy mode's part of /diagnostics."""
        def med(d: deque) -> float:
            return float(np.median(d)) if d else float("nan")

        runner = self.runner
        return {"trajectories_published": self.trajectories, "goals_published": self.goals,
                "policy_steps": self.last_steps, "goal_p50_ms": med(self._goal_ms),
                "policy_p50_ms": med(self._policy_ms),
                "policy_execute_steps": runner.execute if runner is not None else 0,
                "goal_period_steps": runner.cfg.period if runner is not None else 0}


__all__ = ["PolicyStage"]
