"""Closed-loop rollouts in SAPIEN: N episodes per task on fresh seeds, judged by each task's own success check.

Modes (``MODES``):
- ``expert``: the scripted expert (its own planner) through ``SimEnv`` -- the reference; its head-camera frames at
  every saved frame are kept for the oracle.
- ``oracle``: the goal-conditioned policy with the expert's real future frames as goals (the same seed's expert run),
  ``horizon`` saved frames ahead of where the rollout matches the expert's timeline -- the upper bound of foresight.
- ``predictor``: the policy with the frame predictor's goal (current frame + instruction -> the frame ~interval
  ahead), renewed every ``period`` policy steps.
- ``planner``: the policy following the grid planner's nine-frame plan (``follow.PlanFollower``), replanned when
  the plan is used up (or every ``replan`` steps).
- ``none``: the no-foresight baseline (the same network trained without the goal input).

One policy step is one saved frame (``step_ticks`` = 15 physics ticks); the policy predicts ``chunk`` commands
and ``execute`` of them are sent (linearly interpolated over each step, as a replay of recorded commands) before
the camera is rendered and the policy asked again.

Seeds: episode i of every task and mode uses ``seed_base + i`` (default 2,000,000): collections use
``1000*N + attempt`` (< 1,000,000) and the held-out set 900,000+, so rollout scenes were never trained on.

Results (``RolloutRun``) accumulate per episode and are written atomically after each one (``results.json``,
``report.md``, per task and mode a contact sheet and a GIF of the first episode), so an interrupted run keeps
everything finished so far, marked ``"interrupted": true``."""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from frameplan_core import atomic
from frameplan_core.errors import ConfigError, FrameplanError, ModelError
from frameplan_core.policy.config import GRIPPERS, LEFT_ARM, RIGHT_ARM, check_guidance_range
from frameplan_core.policy.ensemble import ChunkEnsemble
from frameplan_core.policy.follow import DEFAULT_THRESHOLD, OracleGoals, PlanFollower
from frameplan_core.predictor.config import is_guidance_scale
from frameplan_core.sim.task_config import TASK_NAMES

log = logging.getLogger(__name__)

MODES = ("expert", "oracle", "predictor", "planner", "none")
NEGATIVES = ("none", "other-arm")
GOAL_MODES = ("oracle", "predictor", "planner")
SEED_BASE = 2_000_000
RESULTS_KIND = "frameplan-rollout"
# mean expert episode length (saved frames) when the policy does not record its training data's
DEFAULT_TASK_FRAMES = {"block_hammer_beat": 130.0, "block_handover": 228.0, "blocks_stack_easy": 118.0}
MOVED_RAD = 0.2  # an arm whose joints never went this far from the start did not work
MEDIA_WIDTH = 160  # frames kept for the GIF / contact sheet are shrunk to this width


@dataclass
class RolloutConfig:
    """What a rollout run does (everything that decides its numbers is recorded in results.json).

    period: policy steps between goal renewals (predictor: a new prediction; oracle: re-matching the expert's
        timeline). horizon: oracle goals are this many saved frames ahead (None: the policy's training interval).
    execute: commands of each predicted chunk sent before the policy is asked again (1..chunk).
    ensemble: temporal ensembling (``ensemble.ChunkEnsemble``): the policy is asked at every step and each command
        is the exp(-k i)-weighted mean of all chunks' predictions for that step; None: off (``execute`` applies).
    replan: planner mode, policy steps between new plans (0: a new plan when the current one is used up).
    subgoal_steps: planner mode, budget per subgoal in policy steps (None: 1.5 x the task's mean expert length / 8).
    threshold: planner mode, ``frame_distance`` under which a subgoal counts as reached (None: budget only).
    max_steps: policy steps per episode (None: 2.5 x the task's mean expert length).
    gripper: ``binary`` sends 0/1 gripper commands (threshold 0.5), ``continuous`` the predicted value.
    oracle_sync: ``match`` (nearest expert frame ahead) or ``time`` (the step count) for the oracle's timeline.
    guidance: action guidance of the goal modes (PolicyConfig.guidance; None: the policy's own).
    media: write a contact sheet and a GIF of the first episode of each task and mode.
    wording: the instruction the foresight models get: the episode's first ``seen`` paraphrase (training wording)
        or its first ``unseen`` one (wording no model was trained on).
    text_scale: the predictor's text guidance for goals (None: the model's sampling default).
    text_scale_after: the predictor's text guidance for every goal after an episode's first (None: ``text_scale``
        throughout). The sentence decides what the first frame cannot show (which arm starts); once that arm has
        moved, the frame shows it, and a strong text guidance only pushes later goals off the image.
    negative: ``other-arm`` gives the predictor, in instructed episodes, the same sentence naming the other arm as
        its negative instruction, so text guidance pushes the goal away from the wrong arm (docs/PREDICTOR.md);
        ``none``: the empty text (the paper's guidance).
    handoff: goal modes, joint-space distance (rad) from the start at which the no-foresight baseline takes over
        for the rest of the episode, once the arm that moved furthest has gone that far (None: the goal policy acts
        throughout). The goal then decides the strategy (which arm, instructed episodes) and the baseline carries
        it out from a state that shows it: worth it where the baseline executes better (chosen per task on val,
        docs/eval/closed_loop.md "Handoff").
    """

    tasks: list[str] = field(default_factory=lambda: list(TASK_NAMES))
    modes: list[str] = field(default_factory=lambda: list(MODES))
    episodes: int = 10
    seed_base: int = SEED_BASE
    period: int = 10
    horizon: int | None = None
    execute: int = 4
    ensemble: float | None = None
    replan: int = 0
    subgoal_steps: int | None = None
    threshold: float | None = DEFAULT_THRESHOLD
    max_steps: int | None = None
    gripper: str = "binary"
    oracle_sync: str = "match"
    predictor_samples: int | None = None
    planner_samples: int | None = None
    guidance: float | None = None
    media: bool = True
    wording: str = "seen"
    text_scale: float | None = None
    text_scale_after: float | None = None
    negative: str = "none"
    handoff: float | None = None

    def validate(self) -> RolloutConfig:
        unknown = [t for t in self.tasks if t not in TASK_NAMES]
        if unknown or not self.tasks:
            raise ConfigError(f"unknown task(s) {unknown or self.tasks}; expected some of {list(TASK_NAMES)} or all")
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ConfigError(f"unknown mode(s) {bad or self.modes}; expected some of {list(MODES)} or all")
        for name in ("episodes", "period", "execute"):
            if getattr(self, name) < 1:
                raise ConfigError(f"rollout {name}={getattr(self, name)}: must be >= 1")
        for name in ("horizon", "subgoal_steps", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"rollout {name}={value}: must be >= 1")
        if self.ensemble is not None and not (-10 <= self.ensemble <= 10):
            raise ConfigError(f"rollout ensemble={self.ensemble}: must be a number in [-10, 10] (or unset: off)")
        if self.replan < 0:
            raise ConfigError(f"rollout replan={self.replan}: must be >= 0 (0 = when the plan is used up)")
        if self.threshold is not None and not self.threshold > 0:
            raise ConfigError(f"rollout threshold={self.threshold}: must be > 0")
        if self.seed_base < 0:
            raise ConfigError(f"rollout seed_base={self.seed_base}: must be >= 0")
        if self.gripper not in ("binary", "continuous"):
            raise ConfigError(f"rollout gripper={self.gripper!r}: expected binary or continuous")
        if self.oracle_sync not in ("match", "time"):
            raise ConfigError(f"rollout oracle_sync={self.oracle_sync!r}: expected match or time")
        if self.wording not in ("seen", "unseen"):
            raise ConfigError(f"rollout wording={str(self.wording)[:40]!r}: expected seen or unseen")
        if self.guidance is not None:
            check_guidance_range(self.guidance, "rollout")
        if self.negative not in NEGATIVES:
            raise ConfigError(f"rollout negative={str(self.negative)[:40]!r}: expected one of {', '.join(NEGATIVES)}")
        for name in ("text_scale", "text_scale_after"):
            ts = getattr(self, name)
            if ts is not None and not is_guidance_scale(ts):
                raise ConfigError(f"rollout {name}={str(ts)[:40]}: expected a number in [0, 100] (or unset: the "
                                  f"{'predictor' if name == 'text_scale' else 'text_scale'}'s own)")
        if self.handoff is not None and not (isinstance(self.handoff, (int, float)) and 0 < self.handoff <= 10):
            raise ConfigError(f"rollout handoff={str(self.handoff)[:40]}: expected a joint distance in (0, 10] rad (or "
                              "unset: off)")
        self.modes = [m for m in MODES if m in self.modes]  # canonical order: expert first (the oracle uses it)
        return self


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a success rate (95 % for z = 1.96); (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class EpisodeResult:
    task: str
    mode: str
    episode: int
    seed: int
    success: bool
    steps: int  # policy steps (saved frames); the expert's ticks / 15
    ticks: int
    sim_time_s: float  # simulated time until success or the step limit
    wall_s: float
    goal_calls: int = 0
    goal_s: float = 0.0  # wall time spent making goals (prediction, plans)
    policy_s: float = 0.0
    error: str | None = None  # e.g. the expert's planner failed
    arm: str | None = None  # the arm the instruction names (expert_strategy: instructed), else None
    moved: str | None = None  # the arm whose joints went furthest from where they started (policy modes)
    handoff_step: int | None = None  # the policy step at which the baseline took over (RolloutConfig.handoff)
    first_moved: str | None = None  # the first arm whose joints went MOVED_RAD from the start (block_handover: the giver)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Media:
    """Frames of one episode for people: (camera frame, goal or None) per policy decision."""

    frames: list[np.ndarray] = field(default_factory=list)
    goals: list[np.ndarray | None] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def add(self, frame: np.ndarray, goal: np.ndarray | None, t: float) -> None:
        import cv2

        def small(x: np.ndarray) -> np.ndarray:
            h = max(1, round(x.shape[0] * MEDIA_WIDTH / x.shape[1]))
            return cv2.resize(x, (MEDIA_WIDTH, h), interpolation=cv2.INTER_AREA)

        self.frames.append(small(frame))
        self.goals.append(None if goal is None else small(goal))
        self.times.append(t)

    def panels(self) -> list[np.ndarray]:
        from frameplan_core.image import hstack

        return [hstack([f, g]) if g is not None else f for f, g in zip(self.frames, self.goals)]


# ----------------------------------------------------------------------------------------------- models

@dataclass
class Models:
    """The models a run needs (loaded once per process)."""

    policy: Any = None  # goal-conditioned GoalPolicy, or {task: GoalPolicy} (--policy specialists)
    baseline: Any = None  # goal: false GoalPolicy, or {task: GoalPolicy}
    predictor: Any = None
    planner: Any = None
    sources: dict = field(default_factory=dict)

    def policy_for(self, mode: str, task: str):
        """The policy that acts in ``mode`` on ``task`` (the baseline for mode none; a task's own specialist when
        the run was given one per task)."""
        policy = self.baseline if mode == "none" else self.policy
        return policy.get(task) if isinstance(policy, dict) else policy

    def policies(self, *which: str) -> list:
        """The loaded policies of ``which`` ("policy", "baseline"; default both, goal-conditioned first)."""
        out = []
        for name in which or ("policy", "baseline"):
            p = getattr(self, name)
            out += list(p.values()) if isinstance(p, dict) else [p] if p is not None else []
        return out


def _load_policy(name: str, tasks: Sequence[str], nogoal: bool, device: str):
    """One policy, or with ``specialists`` each task's embedded specialist (its ``-nogoal`` twin for the baseline)."""
    from frameplan_core.policy import GoalPolicy
    from frameplan_core.policy.config import PER_TASK, SPECIALISTS

    if name != PER_TASK:
        policy = GoalPolicy.from_pretrained(name, device=device)
        return policy, policy.source
    flag = "--baseline" if nogoal else "--policy"
    missing = [t for t in tasks if t not in SPECIALISTS]
    if missing or not tasks:
        raise ConfigError(f"{flag} {PER_TASK}: no embedded specialist for {', '.join(missing) or 'an empty task list'}; "
                          f"specialists exist for {', '.join(SPECIALISTS)}")
    names = {t: SPECIALISTS[t] + ("-nogoal" if nogoal else "") for t in dict.fromkeys(tasks)}
    return ({t: GoalPolicy.from_pretrained(n, device=device) for t, n in names.items()},
            f"{PER_TASK} ({', '.join(f'{t}: {n}' for t, n in names.items())})")


def load_models(modes: Sequence[str], policy: str = "tiny", baseline: str = "tiny-nogoal", predictor: str = "tiny",
                planner: str = "tiny", device: str = "cpu", tasks: Sequence[str] = (), handoff: bool = False) -> Models:
    """Load what ``modes`` need; ModelError naming the flag when a policy does not fit its mode. ``specialists`` as
    ``policy`` / ``baseline`` loads each of ``tasks``' own embedded specialist. ``handoff``: the goal modes hand
    over to the baseline (``RolloutConfig.handoff``), so it is loaded with them."""
    m = Models()
    if handoff and any(x in GOAL_MODES for x in modes):
        modes = [*modes, "none"]
    if any(x in GOAL_MODES for x in modes):
        m.policy, m.sources["policy"] = _load_policy(policy, tasks, False, device)
        if any(not p.config.goal for p in m.policies("policy")):
            raise ModelError(f"--policy {policy}: a goal: false policy (the no-foresight baseline) cannot follow "
                             "goals; pass a goal-conditioned policy (or use it with --mode none as --baseline)")
    if "none" in modes:
        m.baseline, m.sources["baseline"] = _load_policy(baseline, tasks, True, device)
        if any(p.config.goal and not p.config.goal_dropout for p in m.policies("baseline")):
            raise ModelError(f"--baseline {baseline}: mode none needs the no-foresight policy (goal: false, or a "
                             "goal policy trained with goal_dropout, run with its no-goal token); this one needs goals")
    if "predictor" in modes:
        from frameplan_core.predictor import FramePredictor

        m.predictor = FramePredictor.from_pretrained(predictor, device=device)
        m.sources["predictor"] = str(predictor)
    if "planner" in modes:
        from frameplan_core.planner import GridPlanner

        m.planner = GridPlanner.from_pretrained(planner, device=device)
        m.sources["planner"] = str(planner)
    return m


# ----------------------------------------------------------------------------------------------- episodes

def check_tasks(models: Models, tasks: Sequence[str]) -> None:
    """ConfigError when a policy is asked to act on a task it was never trained on (a specialist such as the
    embedded ``handover`` pair): its commands there would be a silent wrong result, not a measurement. Also when
    the policies want different cameras or control rates (one simulator serves them all)."""
    rigs = sorted({(p.config.camera, p.config.step_ticks) for p in models.policies()})
    if len(rigs) > 1:
        raise ConfigError(f"--policy {models.sources.get('policy', '?')} / --baseline {models.sources.get('baseline', '?')}"
                          f": trained on different (camera, ticks per step): {rigs}; run them separately")
    for flag, mode, given in (("--policy", "oracle", models.policy), ("--baseline", "none", models.baseline)):
        if given is None:
            continue
        source = models.sources.get(flag[2:], "?")
        missing, trained = [], []
        for t in tasks:
            policy = models.policy_for(mode, t)
            if policy is None:
                raise ConfigError(f"{flag} {source}: no policy loaded for {t}")
            known = sorted(policy.config.task_frames or {})
            if known and t not in known:
                missing.append(t)
                trained = known
        if missing:
            raise ConfigError(f"{flag} {source}: trained on {', '.join(trained)} only, not on {', '.join(missing)}; "
                              f"pass --task {' --task '.join(trained)} or a policy trained on them")


def task_frames(policy, task: str) -> float:
    frames = (policy.config.task_frames if policy is not None else {}) or {}
    return float(frames.get(task, DEFAULT_TASK_FRAMES.get(task, 150.0)))


def run_expert(env, task: str, episode: int, seed: int, keep_frames: bool = True,
               media: Media | None = None) -> tuple[EpisodeResult, list[np.ndarray]]:
    """The scripted expert through ``SimEnv`` with the head camera rendered at every saved frame; returns its
    result and those frames (the oracle's goals). A planning failure ends the episode as a failure."""
    from frameplan_core.sim.scene import TIMESTEP

    t0 = time.perf_counter()
    env.reset(task, seed)
    save = int(env.task.cfg.save_freq)
    frames: list[np.ndarray] = []
    saved = [0]

    def keep(image: np.ndarray) -> None:
        if keep_frames:
            frames.append(image)
        if media is not None and saved[0] % 4 == 0:  # a policy decision happens about every 4 saved frames
            media.add(image, None, env.tick * TIMESTEP)
        saved[0] += 1

    keep(env.observe(render=True).rgb())
    error = None
    success_tick = None
    try:
        for cmd in env.expert():
            obs = env.step(cmd, ticks=1, render=(env.tick + 1) % save == 0)
            if obs.rendered:
                keep(obs.rgb())
            if success_tick is None and env.success():
                success_tick = env.tick
    except FrameplanError as exc:  # the expert's motion planner failed on this scene
        error = f"{type(exc).__name__}: {exc}"
    if env.tick % save:  # the expert's final state, for the oracle's last goal
        keep(env.observe(render=True).rgb())
    success = success_tick is not None or env.success()
    ticks = success_tick if success_tick is not None else env.tick
    return EpisodeResult(task, "expert", episode, seed, bool(success), steps=ticks // save, ticks=ticks,
                         sim_time_s=round(ticks * TIMESTEP, 3), wall_s=round(time.perf_counter() - t0, 2),
                         error=error, arm=env.task.named_arm if env.task is not None else None), frames


def _moved_arm(reach: np.ndarray) -> str | None:
    """The arm (left, right) whose joints went furthest from the start, once one has gone MOVED_RAD; else None."""
    return None if reach.max() < MOVED_RAD else ("left", "right")[int(np.argmax(reach))]


def _execution_state(cfg: RolloutConfig, pc) -> tuple[ChunkEnsemble | None, int]:
    """A fresh temporal ensemble (or None) and the commands sent per policy call, for the policy whose config is ``pc``."""
    ensemble = ChunkEnsemble(cfg.ensemble) if cfg.ensemble is not None else None
    return ensemble, 1 if ensemble is not None else min(cfg.execute, pc.chunk)


def goal_text_scale(cfg: RolloutConfig, goal_calls: int) -> float | None:
    """The predictor's text guidance for an episode's goal number ``goal_calls`` (0: the first)."""
    if goal_calls == 0 or cfg.text_scale_after is None:
        return cfg.text_scale
    return cfg.text_scale_after


def run_policy(env, mode: str, models: Models, task: str, episode: int, seed: int, cfg: RolloutConfig,
               expert_frames: list[np.ndarray] | None = None, media: Media | None = None) -> EpisodeResult:
    """One closed-loop episode of ``mode`` (oracle | predictor | planner | none)."""
    from frameplan_core.sim.scene import TIMESTEP

    policy = models.policy_for(mode, task)
    pc = policy.config
    mean_frames = task_frames(policy, task)
    max_steps = cfg.max_steps or int(math.ceil(2.5 * mean_frames))
    horizon = cfg.horizon or pc.interval
    budget = cfg.subgoal_steps or max(1, int(round(1.5 * mean_frames / 8)))
    ensemble, execute = _execution_state(cfg, pc)
    t0 = time.perf_counter()
    env.reset(task, seed)
    obs = env.observe(render=True)
    image = obs.rgb()
    instruction = episode_instruction(env, cfg.wording)
    negative = other_arm_instruction(env, cfg.wording) if cfg.negative == "other-arm" and mode == "predictor" else None
    oracle = None
    if mode == "oracle":
        if not expert_frames:
            return EpisodeResult(task, mode, episode, seed, False, 0, 0, 0.0, 0.0,
                                 error="no expert frames for the oracle (the expert failed before its first frame)")
        oracle = OracleGoals(expert_frames, horizon, cfg.oracle_sync)
    follower: PlanFollower | None = None
    goal: np.ndarray | None = None
    steps = since_goal = since_plan = taken = 0
    goal_calls, goal_s, policy_s = 0, 0.0, 0.0
    success = env.success()
    start = np.asarray(obs.joint_state, dtype=np.float64)
    reach = np.zeros(2)  # per arm, the largest joint-space distance from the start
    handoff_step: int | None = None
    first_moved: str | None = None
    while steps < max_steps and not success:
        if cfg.handoff is not None and handoff_step is None and mode in GOAL_MODES and reach.max() >= cfg.handoff:
            # the foresight has committed an arm: the no-foresight policy carries on from a state that shows it
            policy, handoff_step, goal = models.policy_for("none", task), steps, None
            pc = policy.config
            ensemble, execute = _execution_state(cfg, pc)
        tg = time.perf_counter()
        if handoff_step is None:  # after the handoff no goals are made
            if mode == "oracle" and (goal is None or since_goal >= cfg.period):
                goal, since_goal = oracle.goal(image, steps), 0
                goal_calls += 1
            elif mode == "predictor" and (goal is None or since_goal >= cfg.period):
                goal = models.predictor.predict(image, instruction, output_size="input", seed=seed + steps,
                                                samples=cfg.predictor_samples,
                                                text_scale=goal_text_scale(cfg, goal_calls),
                                                negative_instruction=negative)
                since_goal = 0
                goal_calls += 1
            elif mode == "planner":
                if follower is None or follower.exhausted or (cfg.replan and since_plan >= cfg.replan):
                    plan = models.planner.plan(image, instruction=instruction, seed=seed + steps,
                                               samples=cfg.planner_samples)
                    follower = PlanFollower.from_plan(plan.frames, image, models.planner.config.crop_policy, budget,
                                                      cfg.threshold)
                    since_plan = taken = 0
                    goal_calls += 1
                goal = follower.update(image, taken)
        goal_s += time.perf_counter() - tg
        if media is not None:
            media.add(image, goal, env.tick * TIMESTEP)
        tp = time.perf_counter()
        goal_used = mode != "none" and handoff_step is None
        extra = {"guidance": cfg.guidance} if cfg.guidance is not None and goal_used else {}
        chunk = policy.act(image, obs.joint_state, goal if pc.goal and goal_used else None, **extra)
        policy_s += time.perf_counter() - tp
        taken = 0
        if ensemble is not None:
            ensemble.add(steps, chunk)
        for k in range(execute):
            cmd = ensemble.command(steps) if ensemble is not None else chunk[k].copy()
            if cfg.gripper == "binary":
                cmd[list(GRIPPERS)] = (cmd[list(GRIPPERS)] >= 0.5).astype(np.float64)
            last = k == execute - 1 or steps + 1 >= max_steps
            obs = env.step(cmd, ticks=pc.step_ticks, interpolate=True, render=last)
            delta = np.abs(np.asarray(obs.joint_state, dtype=np.float64) - start)
            reach = np.maximum(reach, [delta[LEFT_ARM].max(), delta[RIGHT_ARM].max()])
            first_moved = first_moved or _moved_arm(reach)
            steps += 1
            taken += 1
            success = env.success()
            if success or last:
                break
        since_goal += taken
        since_plan += taken
        image = obs.rgb() if obs.rendered else env.observe(render=True).rgb()
    if media is not None:
        media.add(image, goal, env.tick * TIMESTEP)
    moved = _moved_arm(reach)
    return EpisodeResult(task, mode, episode, seed, bool(success), steps, env.tick, round(env.tick * TIMESTEP, 3),
                         round(time.perf_counter() - t0, 2), goal_calls, round(goal_s, 2), round(policy_s, 2),
                         arm=env.task.named_arm, moved=moved, handoff_step=handoff_step,
                         first_moved=first_moved)


def run_seed(env, models: Models, task: str, episode: int, cfg: RolloutConfig, want_media: bool = False,
             on_result: Callable[[EpisodeResult, Media | None], None] | None = None) -> list[EpisodeResult]:
    """Every mode of ``cfg`` on one scene (task, seed_base + episode); the expert runs first when the expert or
    the oracle mode is asked for (its frames are the oracle's goals)."""
    seed = cfg.seed_base + episode
    results = []
    expert_frames = None
    for mode in cfg.modes:  # canonical order: the expert first
        media = Media() if want_media else None
        if mode == "expert":
            res, expert_frames = run_expert(env, task, episode, seed, keep_frames="oracle" in cfg.modes, media=media)
        else:
            if mode == "oracle" and expert_frames is None:  # the oracle alone: run the expert for its frames
                _, expert_frames = run_expert(env, task, episode, seed, keep_frames=True)
            res = run_policy(env, mode, models, task, episode, seed, cfg, expert_frames, media)
        log.info("%s episode %d (seed %d) %s: %s in %d steps (%.1f s simulated, %.1f s wall)%s", task, episode, seed,
                 mode, "SUCCESS" if res.success else "failure", res.steps, res.sim_time_s, res.wall_s,
                 f"; {res.error}" if res.error else "")
        results.append(res)
        if on_result:
            on_result(res, media)
    return results


# ----------------------------------------------------------------------------------------------- the run

def summarize(episodes: Sequence[dict], tasks: Sequence[str], modes: Sequence[str]) -> dict:
    """Per task and mode: n, successes, rate, Wilson 95 % interval, mean simulated time (all episodes, and the
    successful ones), mean wall time; plus per mode the rate averaged over the tasks that have episodes."""
    out: dict[str, Any] = {}
    for task in tasks:
        for mode in modes:
            eps = [e for e in episodes if e["task"] == task and e["mode"] == mode]
            if not eps:
                continue
            k = sum(1 for e in eps if e["success"])
            lo, hi = wilson(k, len(eps))
            ok = [e["sim_time_s"] for e in eps if e["success"]]
            out.setdefault(task, {})[mode] = {
                "n": len(eps), "successes": k, "rate": round(k / len(eps), 4), "ci95": [round(lo, 4), round(hi, 4)],
                "mean_time_s": round(float(np.mean([e["sim_time_s"] for e in eps])), 2),
                "mean_success_time_s": round(float(np.mean(ok)), 2) if ok else None,
                "mean_wall_s": round(float(np.mean([e["wall_s"] for e in eps])), 2),
                "errors": sum(1 for e in eps if e.get("error"))}
            named = [e for e in eps if e.get("arm") and e.get("moved")]
            if named:  # instructed episodes: how often the policy worked with the arm the instruction named
                out[task][mode]["named_arm_moved"] = [sum(1 for e in named if e["moved"] == e["arm"]), len(named)]
            first = [e for e in eps if e.get("arm") and e.get("first_moved")]
            if first:  # the arm that started the work: block_handover's giver (both arms move there)
                out[task][mode]["named_arm_first"] = [sum(1 for e in first if e["first_moved"] == e["arm"]), len(first)]
    mean = {}
    for mode in modes:
        rates = [out[t][mode]["rate"] for t in tasks if t in out and mode in out[t]]
        if rates:
            mean[mode] = {"tasks": len(rates), "rate": round(float(np.mean(rates)), 4)}
    return {"per_task": out, "mean_over_tasks": mean}


class RolloutRun:
    """Accumulates episode results and writes the run folder atomically after every episode."""

    def __init__(self, out: str | Path, cfg: RolloutConfig, command: str, sources: dict,
                 previous: dict | None = None) -> None:
        self.out = Path(out)
        self.cfg, self.command, self.sources = cfg, command, sources
        self.episodes: list[dict] = list(previous.get("episodes", [])) if previous else []
        self.started = time.strftime("%Y-%m-%dT%H:%M:%S")
        self.interrupted = False
        self.media_written: set[tuple[str, str]] = set()

    def done(self, task: str, mode: str, episode: int) -> bool:
        return any(e["task"] == task and e["mode"] == mode and e["episode"] == episode for e in self.episodes)

    def add(self, res: EpisodeResult, media: Media | None = None) -> None:
        self.episodes.append(res.to_dict())
        if media is not None and media.frames and (res.task, res.mode) not in self.media_written:
            self.write_media(res, media)
        self.write()

    def results(self) -> dict:
        return {"kind": RESULTS_KIND, "version": 1, "command": self.command, "started": self.started,
                "written": time.strftime("%Y-%m-%dT%H:%M:%S"), "interrupted": self.interrupted,
                "settings": asdict(self.cfg), "models": self.sources,
                "seeds": {"base": self.cfg.seed_base, "rule": "episode i of every task and mode uses seed base + i; "
                          "collections use 1000*N + attempt (< 1,000,000), the held-out set 900,000+"},
                "summary": summarize(self.episodes, self.cfg.tasks, self.cfg.modes), "episodes": self.episodes}

    def write(self) -> Path:
        res = self.results()
        atomic.write_json(self.out / "results.json", res)
        atomic.write_text(self.out / "report.md", report_markdown(res))
        return self.out / "results.json"

    def write_media(self, res: EpisodeResult, media: Media) -> None:
        from frameplan_core.image import contact_sheet, gif_bytes, write_image

        panels = media.panels()
        pick = sorted({round(i * (len(panels) - 1) / 7) for i in range(8)}) if len(panels) > 1 else [0]
        labels = [f"t={media.times[i]:.1f}s" for i in pick]
        folder = self.out / res.task / res.mode
        write_image(folder / "contact_sheet.png", contact_sheet([panels[i] for i in pick], cols=4, cell=120,
                                                                labels=labels))
        h = max(p.shape[0] for p in panels)
        w = max(p.shape[1] for p in panels)
        frames = [np.pad(p, ((0, h - p.shape[0]), (0, w - p.shape[1]), (0, 0)), constant_values=255) for p in panels]
        atomic.write_bytes(folder / "rollout.gif", gif_bytes(frames, fps=6.0))
        self.media_written.add((res.task, res.mode))


def _execution(settings: dict) -> str:
    k = settings.get("ensemble")
    if k is None:
        return f"{settings['execute']} commands executed per policy call"
    return f"policy asked every step, chunks temporally ensembled (k = {k:g})"


def _handoff(rad: float, episodes: Sequence[dict]) -> str:
    took = [e["handoff_step"] for e in episodes if e.get("handoff_step") is not None]
    when = f", at step {np.median(took):.0f} (median) in {len(took)} episode(s)" if took else ""
    return f"; goal modes hand over to the no-foresight policy once an arm has moved {rad:g} rad{when}"


def _after(scale: float) -> str:
    return f" ({format(scale, 'g')} after the first goal)"


def report_markdown(res: dict) -> str:
    s = res["settings"]
    lines = [f"# Closed-loop rollouts{' (INTERRUPTED: partial results)' if res['interrupted'] else ''}", "",
             f"Command: `{res['command']}`", "",
             f"Seeds {s['seed_base']}.. ({s['episodes']} per task and mode; never used for training). Policy step = one "
             f"saved frame (15 ticks, 60 ms); {_execution(s)}; goal period "
             f"{s['period']} steps, oracle horizon {s['horizon'] or 'the policy interval'}, planner replan "
             f"{s['replan'] or 'when used up'}, gripper {s['gripper']}"
             f"{'' if s.get('guidance') is None else ', action guidance ' + format(s['guidance'], 'g')}"
             f"{'' if s.get('text_scale') is None else ', predictor text scale ' + format(s['text_scale'], 'g')}"
             f"{'' if s.get('text_scale_after') is None else _after(s['text_scale_after'])}"
             f"{'' if s.get('negative', 'none') == 'none' else ', predictor negative instruction ' + s['negative']}"
             f"{'' if s.get('handoff') is None else _handoff(s['handoff'], res['episodes'])}.",
             "",
             "| task | mode | success | 95 % CI | n | mean sim time (s) | time to success (s) | wall s / episode |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    per = res["summary"]["per_task"]
    for task, modes in per.items():
        for mode, v in modes.items():
            tts = f"{v['mean_success_time_s']:.1f}" if v["mean_success_time_s"] is not None else "-"
            lines.append(f"| {task} | {mode} | {100 * v['rate']:.0f} % ({v['successes']}/{v['n']}) | "
                         f"{100 * v['ci95'][0]:.0f}-{100 * v['ci95'][1]:.0f} % | {v['n']} | {v['mean_time_s']:.1f} | "
                         f"{tts} | {v['mean_wall_s']:.1f} |")
    followed = [f"{task} {mode} {v['named_arm_moved'][0]}/{v['named_arm_moved'][1]}" for task, modes in per.items()
                for mode, v in modes.items() if v.get("named_arm_moved")]
    if followed:
        lines += ["", "Instructed episodes, the arm the instruction names was the one that moved (policy modes): "
                  + ", ".join(followed)]
    started = [f"{task} {mode} {v['named_arm_first'][0]}/{v['named_arm_first'][1]}" for task, modes in per.items()
               for mode, v in modes.items() if v.get("named_arm_first")]
    if started:
        lines += ["", "… and the one that moved first (block_handover: the giver the instruction names): "
                  + ", ".join(started)]
    mean = res["summary"]["mean_over_tasks"]
    if mean:
        lines += ["", "Mean success over tasks: " + ", ".join(f"{m} {100 * v['rate']:.1f} % ({v['tasks']} tasks)"
                                                          for m, v in mean.items())]
    errors = [e for e in res["episodes"] if e.get("error")]
    if errors:
        lines += ["", f"{len(errors)} episode(s) with errors, e.g. {errors[0]['task']} {errors[0]['mode']} seed "
                      f"{errors[0]['seed']}: {errors[0]['error'][:200]}"]
    lines += ["", f"Models: {res['models']}", ""]
    return "\n".join(lines)


def episode_instruction(env, wording: str, arm: str | None = None) -> str:
    """The first ``wording`` paraphrase of the episode's instruction json (the seen one when it has none);
    ``arm``: the same sentence naming that arm instead (instructed episodes)."""
    ins = env.task.instructions(arm=arm)
    return (ins.get(wording) or ins["seen"])[0]


def other_arm_instruction(env, wording: str) -> str:
    """``episode_instruction`` with the other arm named: the same sentence and phrasing, only the arm differs."""
    task = env.task
    if not task.instructed:
        raise ConfigError(f"rollout negative=other-arm: {task.name} episodes name no arm (needs --sim-set "
                          "expert_strategy=instructed)")
    return episode_instruction(env, wording, arm=task.other_arm(task.named_arm))


def check_negative(cfg: RolloutConfig, sim_overrides: Sequence[str] | None) -> None:
    """Refuse ``negative=other-arm`` before any episode runs when a task's episodes name no arm."""
    from frameplan_core.sim.task_config import load_task_config

    if cfg.negative != "other-arm" or "predictor" not in cfg.modes:
        return
    for task in cfg.tasks:
        if load_task_config(task, None, list(sim_overrides or [])).expert_strategy != "instructed":
            raise ConfigError(f"--negative other-arm: {task} episodes name no arm; add --sim-set "
                              "expert_strategy=instructed")


def load_previous(out: Path, cfg: RolloutConfig) -> dict | None:
    """An earlier results.json in ``out`` to continue (``--resume``); ConfigError when its settings differ in
    anything but the task/mode/episode lists."""
    from frameplan_core.jsonfile import read_json

    path = out / "results.json"
    if not path.is_file():
        return None
    try:
        prev = read_json(path, ConfigError, kind=None)
    except ConfigError as exc:
        raise ConfigError(f"--resume: {exc}") from None
    if not isinstance(prev, dict) or prev.get("kind") != RESULTS_KIND:
        raise ConfigError(f"--resume: {path} is not a rollout results file")
    now, before = asdict(cfg), prev.get("settings", {})
    defaults = asdict(RolloutConfig())  # a setting added since that run was made had its default then
    differ = [k for k in now if k not in ("tasks", "modes", "episodes", "media") and before.get(k, defaults[k]) != now[k]]
    if differ:
        changes = ", ".join(f"{k}: {before.get(k)!r} -> {now[k]!r}" for k in differ)
        raise ConfigError(f"--resume: {path} was made with other settings ({changes}); use another --out or the same "
                          "settings")
    return prev


# ----------------------------------------------------------------------------------------------- execution

@dataclass
class Job:
    task: str
    episode: int
    modes: list[str]
    media: bool


def plan_jobs(run: RolloutRun) -> list[Job]:
    """(task, episode) scenes with the modes not done yet (a resumed run skips finished ones); media for each
    task's first such episode when that task and mode have none yet."""
    cfg = run.cfg
    jobs = []
    media_claimed: set[tuple[str, str]] = set()
    for task in cfg.tasks:
        for episode in range(cfg.episodes):
            todo = [m for m in cfg.modes if not run.done(task, m, episode)]
            if not todo:
                continue
            want = cfg.media and any((task, m) not in media_claimed for m in todo)
            media_claimed.update((task, m) for m in todo)
            jobs.append(Job(task, episode, todo, want))
    return jobs


def make_env(camera: str, step_ticks: int, sim_overrides: Sequence[str] | None = None):
    from frameplan_core.sim.env import SimEnv

    return SimEnv(cameras=(camera,), overrides=list(sim_overrides or []) or None, ticks_per_step=step_ticks,
                  interpolate=True, render_every=0)


def _job_config(cfg: RolloutConfig, job: Job) -> RolloutConfig:
    from dataclasses import replace

    return replace(cfg, tasks=[job.task], modes=job.modes)


def execute(run: RolloutRun, models: Models, sim_overrides: Sequence[str] | None = None, workers: int = 1,
            model_spec: dict | None = None) -> None:
    """Run every job of ``run`` in this process, or in ``workers`` spawned processes (each loads the models of
    ``model_spec`` and builds its own simulator). Results are added (and written) as episodes finish; a
    KeyboardInterrupt (Ctrl-C, or SIGTERM under ``atomic.sigterm_as_interrupt``) stops the workers and propagates."""
    check_tasks(models, run.cfg.tasks)
    jobs = plan_jobs(run)
    if not jobs:
        log.info("nothing to do: every episode of %s is in %s", run.cfg.modes, run.out / "results.json")
        return
    policies = models.policies()
    camera = policies[0].config.camera if policies else "head_camera"
    step_ticks = policies[0].config.step_ticks if policies else 15
    if workers <= 1 or len(jobs) == 1:
        env = make_env(camera, step_ticks, sim_overrides)
        try:
            for job in jobs:
                run_seed(env, models, job.task, job.episode, _job_config(run.cfg, job), job.media, run.add)
        finally:
            env.close()
        return
    _execute_parallel(run, jobs, model_spec or {}, camera, step_ticks, sim_overrides, min(workers, len(jobs)))


def _worker(cfg: RolloutConfig, model_spec: dict, camera: str, step_ticks: int, sim_overrides, jobs, events) -> None:
    """Worker process: load the models, then run jobs from ``jobs`` until None; each episode goes to ``events``."""
    import queue as queue_mod

    try:
        models = load_models(cfg.modes, **{"tasks": cfg.tasks, "handoff": cfg.handoff is not None, **model_spec})
        env = make_env(camera, step_ticks, sim_overrides)
        while True:
            try:
                job = jobs.get(timeout=1.0)
            except queue_mod.Empty:
                continue
            if job is None:
                break
            run_seed(env, models, job.task, job.episode, _job_config(cfg, job), job.media,
                     lambda res, media: events.put(("result", res.to_dict(), media)))
            events.put(("job", None, None))
        env.close()
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the parent writes what is finished
        events.cancel_join_thread()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which stops the run with it
        events.put(("error", f"{type(exc).__name__}: {exc}", None))


def _execute_parallel(run: RolloutRun, jobs: list[Job], model_spec: dict, camera: str, step_ticks: int,
                      sim_overrides, workers: int) -> None:
    from frameplan_core.errors import SimError
    from frameplan_core.sim.workers import run_workers

    def on_event(event: tuple) -> bool:
        kind, payload, media = event
        if kind == "result":
            run.add(EpisodeResult(**payload), media)
            return False
        if kind == "job":
            return True
        raise SimError(f"rollout worker sent an unknown event {kind!r}")

    run_workers(_worker, (run.cfg, model_spec, camera, step_ticks, sim_overrides), jobs, workers, on_event, "rollout")


__all__ = ["MODES", "SEED_BASE", "EpisodeResult", "Job", "Media", "Models", "RolloutConfig", "RolloutRun", "execute",
           "check_tasks", "goal_text_scale", "load_models", "load_previous", "plan_jobs", "report_markdown", "run_expert",
           "run_policy", "run_seed", "summarize", "wilson"]
