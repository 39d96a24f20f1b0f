"""Does a goal-conditioned policy use its goal? An open-loop probe on recorded episodes.

Closed-loop success mixes everything (policy, goal quality, timing); this isolates one question: how much worse do
the policy's commands get when its goal is replaced by a wrong one? If the error barely moves, the policy ignores its
goal and no foresight can help it. Goals compared, per sample (the policy's interval ahead, as in validation):

- ``true``: the real frame ``interval`` saved frames ahead (the hindsight goal of training);
- ``current``: the current frame itself (a goal that asks for no motion);
- ``other_episode``: the frame at the same progress of another episode of the same task (plausible, wrong scene);
- ``far``: the episode's other end (its first frame when the true goal lies in its second half, else its last).

``first_arm_probe`` asks the sharpest form of the question on bimanual data whose first frame hides the expert's
choice (``expert_strategy: varied``): at each episode's first frame, does the policy move the arm the expert moved?

A policy trained with goal dropout is also scored with its no-goal token (``no_goal``: the same network acting
without foresight). The no-foresight baseline (``goal: false``) is scored on the same samples. Error: mean absolute
joint error of the whole predicted chunk against the recorded commands (rad; grippers left out, they are binary)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from frameplan_core.errors import ConfigError
from frameplan_core.policy.config import JOINTS, LEFT_ARM, RIGHT_ARM
from frameplan_core.policy.data import PolicySamples, commands_from_actions

GOALS = ("true", "current", "other_episode", "far")
WRONG = ("current", "other_episode", "far")
NO_GOAL = "no_goal"
ALL = "all tasks"


def check_pair(policy, baseline) -> None:
    if not policy.config.goal:
        raise ConfigError(f"{policy.source or 'policy'}: a goal: false policy has no goal to probe; pass the "
                          "goal-conditioned one as the policy")
    if baseline is not None and baseline.config.goal:
        raise ConfigError(f"{baseline.source or 'baseline'}: the baseline must be a goal: false policy")


def goal_probe(policy, samples: PolicySamples, baseline=None, stride: int = 3, seed: int = 0,
               progress: Callable[[int, int], None] | None = None) -> dict:
    """Per task and over all tasks: n and the mean joint error for each goal in ``GOALS`` (and ``baseline``).

    ``other_episode`` is left out of a task with a single episode (None)."""
    check_pair(policy, baseline)
    if stride < 1:
        raise ConfigError(f"stride {stride}: must be >= 1")
    rng = np.random.default_rng(seed)
    joints = list(JOINTS)
    dropout = bool(policy.config.goal_dropout)
    names = [*GOALS, *([NO_GOAL] if dropout else [])]
    task_eps: dict[str, list[dict]] = {}
    for e in samples.episodes:
        task_eps.setdefault(e["task"], []).append(e)
    by_task: dict[str, list[dict]] = {}
    idx = range(0, len(samples), stride)
    for done, i in enumerate(idx, 1):
        smp = samples.get(i)
        ep = samples.episode(i)
        last = ep["length"] - 1
        goals = {"true": smp.goal, "current": smp.frame}
        others = [e for e in task_eps[ep["task"]] if e["key"] != ep["key"]]
        if others:
            o = others[int(rng.integers(len(others)))]
            at = o["start"] + int(round(smp.goal_t / max(1, last) * (o["length"] - 1)))
            goals["other_episode"] = np.array(samples.arrays["frames"][at])
        goals["far"] = np.array(samples.arrays["frames"][ep["start"] + (0 if smp.goal_t > last // 2 else last)])
        if dropout:
            goals[NO_GOAL] = None  # GoalPolicy.act: the no-goal token
        target = commands_from_actions(smp.action, smp.state, samples.action)[:, joints]
        row = {k: float(np.abs(policy.act(smp.frame, smp.state, g)[:, joints] - target).mean())
               for k, g in goals.items()}
        if baseline is not None:
            row["baseline"] = float(np.abs(baseline.act(smp.frame, smp.state)[:, joints] - target).mean())
        by_task.setdefault(smp.task, []).append(row)
        if progress:
            progress(done, len(idx))
    keys = [*names, *(["baseline"] if baseline is not None else [])]

    def summary(rows: list[dict]) -> dict:
        out: dict = {"n": len(rows)}
        for k in keys:
            vals = [r[k] for r in rows if k in r]
            out[k] = float(np.mean(vals)) if vals else None
        return out

    per_task = {t: summary(rows) for t, rows in sorted(by_task.items())}
    per_task[ALL] = summary([r for rows in by_task.values() for r in rows])
    return {"goals": names, "baseline": baseline is not None, "per_task": per_task}



def moving_arm(commands: np.ndarray, state: np.ndarray) -> str:
    """``left`` or ``right``: the arm whose joint targets (chunk, 16) move further from ``state`` (16,) in total."""
    move = np.abs(np.asarray(commands, np.float64) - np.asarray(state, np.float64)[None])
    return "left" if move[:, LEFT_ARM].sum() >= move[:, RIGHT_ARM].sum() else "right"


def first_arm_probe(policy, samples: PolicySamples, baseline=None) -> dict:
    """Per task and over all tasks: n (episodes) and, for the true goal (and the no-goal token of a goal-dropout
    policy, and ``baseline``), the fraction of episodes whose first predicted chunk moves the arm the expert's
    recorded commands move. Where only the goal can tell which arm acts, a policy that reads it scores 1 with
    the true goal, and the others about the share of the more common choice."""
    check_pair(policy, baseline)
    keys = ["true", *([NO_GOAL] if policy.config.goal_dropout else []), *(["baseline"] if baseline else [])]
    by_task: dict[str, list[dict]] = {}
    for ei, ep in enumerate(samples.episodes):
        smp = samples.get(samples.first_sample(ei))
        want = moving_arm(commands_from_actions(smp.action, smp.state, samples.action), smp.state)
        got = {"true": policy.act(smp.frame, smp.state, smp.goal)}
        if NO_GOAL in keys:
            got[NO_GOAL] = policy.act(smp.frame, smp.state)
        if baseline is not None:
            got["baseline"] = baseline.act(smp.frame, smp.state)
        row = {k: float(moving_arm(cmd, smp.state) == want) for k, cmd in got.items()}
        by_task.setdefault(ep["task"], []).append({**row, "expert_" + want: 1.0})

    def summary(rows: list[dict]) -> dict:
        out = {"n": len(rows), "expert_left": int(sum(r.get("expert_left", 0) for r in rows))}
        out.update({k: float(np.mean([r[k] for r in rows])) for k in keys})
        return out

    per_task = {t: summary(rows) for t, rows in sorted(by_task.items())}
    per_task[ALL] = summary([r for rows in by_task.values() for r in rows])
    return {"goals": keys, "per_task": per_task}


__all__ = ["ALL", "GOALS", "NO_GOAL", "WRONG", "check_pair", "first_arm_probe", "goal_probe", "moving_arm"]
