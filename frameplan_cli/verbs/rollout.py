"""Closed-loop rollouts in SAPIEN: does foresight make the robot succeed more often?

  frameplan rollout --task all --mode all --episodes 20 --out out/rollout
  frameplan rollout --task block_handover --mode oracle --mode none --episodes 5 --policy runs/policy/model \\
      --baseline runs/policy_nogoal/model --out out/handover
  frameplan rollout --task all --policy specialists --baseline specialists --out out/per_task   # each task's own pair

Modes: expert (scripted), oracle (policy + the expert's real future frames), predictor (policy + the frame
predictor's goals), planner (policy + the grid planner's plans), none (the no-foresight policy). Episode i of every
task and mode uses seed --seed-base + i (default 2,000,000: never used by a collection). Per task and mode: success
rate with a Wilson 95 % interval, mean episode time, a contact sheet and a GIF (OUT/<task>/<mode>/). OUT/results.json
and OUT/report.md are rewritten atomically after every episode; Ctrl-C or SIGTERM keeps what finished, marked
"interrupted": true, and --resume continues it."""
from __future__ import annotations

import argparse
import logging
import shlex
import sys

log = logging.getLogger(__name__)
_INTERRUPTED: list[BaseException] = []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from frameplan_core.policy.follow import DEFAULT_THRESHOLD
    from frameplan_core.policy.rollout import MODES, SEED_BASE

    parser.add_argument("--task", action="append", default=None, metavar="TASK",
                        help="task to run (repeatable) or 'all' (default: all three)")
    parser.add_argument("--mode", action="append", default=None, metavar="MODE",
                        help=f"mode to run (repeatable) or 'all' (default): {', '.join(MODES)}")
    parser.add_argument("--episodes", type=int, default=10, help="episodes per task and mode (default 10)")
    parser.add_argument("--seed-base", type=int, default=SEED_BASE,
                        help=f"episode i uses seed SEED_BASE + i (default {SEED_BASE:,}; disjoint from collections)")
    parser.add_argument("--out", required=True, help="run folder (results.json, report.md, <task>/<mode>/ media)")
    parser.add_argument("--policy", default="tiny",
                        help="goal-conditioned policy: a folder, an embedded one ('tiny', the multi-task default; "
                             "'hammer', 'handover', 'stack': per-task specialists) or 'specialists' (each task's own)")
    parser.add_argument("--baseline", default="tiny-nogoal",
                        help="no-foresight policy (goal: false) for mode none: a folder, 'tiny-nogoal' (default), "
                             "'<specialist>-nogoal' or 'specialists' (each task's own)")
    parser.add_argument("--predictor", default="tiny", help="frame predictor for mode predictor (folder or 'tiny')")
    parser.add_argument("--planner", default="tiny", help="grid planner for mode planner (folder or 'tiny')")
    parser.add_argument("--period", type=int, default=10,
                        help="policy steps between new goals (predictor: a new prediction; oracle: re-matching)")
    parser.add_argument("--horizon", type=int, default=None,
                        help="oracle goals this many saved frames ahead (default: the policy's training interval)")
    parser.add_argument("--execute", type=int, default=4, help="commands of each predicted chunk sent per policy call")
    parser.add_argument("--ensemble", type=float, default=None, metavar="K",
                        help="temporal ensembling: ask the policy every step and send the exp(-K i)-weighted mean of "
                             "all chunks' commands for that step, oldest i=0 (ACT uses K=0.01; K<0 favours the newest; "
                             "overrides --execute)")
    parser.add_argument("--replan", type=int, default=0,
                        help="planner: policy steps between new plans (0: when the plan is used up)")
    parser.add_argument("--subgoal-steps", type=int, default=None,
                        help="planner: step budget per subgoal (default: 1.5 x the task's mean expert length / 8)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                        help=f"planner: frame distance that counts as reaching a subgoal (default {DEFAULT_THRESHOLD}; "
                             "0 = budget only)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="policy steps per episode (default: 2.5 x the task's mean expert length)")
    parser.add_argument("--gripper", choices=("binary", "continuous"), default="binary")
    parser.add_argument("--oracle-sync", choices=("match", "time"), default="match",
                        help="how the oracle follows the expert's timeline (default: nearest frame ahead)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="action guidance of the goal modes: no-goal + G x (goal - no-goal) output (default: the "
                             "policy's; needs a policy trained with goal_dropout)")
    parser.add_argument("--samples", type=int, default=None,
                        help="predictor/planner samples averaged per goal (default: the model's)")
    parser.add_argument("--wording", choices=("seen", "unseen"), default="seen",
                        help="instruction for the foresight models: the episode's first seen (training) paraphrase or "
                             "its first unseen one (default seen)")
    parser.add_argument("--text-scale", type=float, default=None,
                        help="the predictor's text guidance for goals (default: the model's)")
    parser.add_argument("--text-scale-after", type=float, default=None,
                        help="the predictor's text guidance for every goal after an episode's first (default: "
                             "--text-scale throughout): a strong guidance to pick the arm, then a mild one")
    parser.add_argument("--negative", choices=("none", "other-arm"), default="none",
                        help="predictor goals: negative instruction; other-arm = the episode's sentence naming the "
                             "other arm (instructed episodes, --sim-set expert_strategy=instructed)")
    parser.add_argument("--handoff", type=float, default=None, metavar="RAD",
                        help="goal modes: once an arm's joints have moved RAD from the start, the no-foresight "
                             "--baseline acts for the rest of the episode (the goal chooses, the baseline executes; "
                             "default: off)")
    parser.add_argument("--no-media", action="store_true", help="no contact sheets or GIFs")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes (one simulator each)")
    parser.add_argument("--device", default="cpu", help="where the models run (cpu, cuda, auto)")
    parser.add_argument("--resume", action="store_true", help="continue OUT/results.json (same settings)")
    parser.add_argument("--sim-set", dest="sim_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a task config field of the simulator (e.g. shadows=false), repeatable")


def _expand(values: list[str] | None, allowed: tuple[str, ...], what: str) -> list[str]:
    from frameplan_core.errors import ConfigError

    if not values or "all" in values:
        if values and len(values) > 1:
            raise ConfigError(f"--{what} all cannot be combined with other --{what} values")
        return list(allowed)
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ConfigError(f"unknown --{what} {', '.join(map(repr, unknown))}; expected one of {', '.join(allowed)} "
                          "or all")
    return list(dict.fromkeys(values))


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from frameplan_core import atomic
    from frameplan_core.errors import ConfigError
    from frameplan_core.policy import rollout as R
    from frameplan_core.sim.task_config import TASK_NAMES

    cfg = R.RolloutConfig(
        tasks=_expand(args.task, tuple(TASK_NAMES), "task"), modes=_expand(args.mode, R.MODES, "mode"),
        episodes=args.episodes, seed_base=args.seed_base, period=args.period, horizon=args.horizon,
        execute=args.execute, ensemble=args.ensemble, replan=args.replan, subgoal_steps=args.subgoal_steps,
        threshold=args.threshold or None, max_steps=args.max_steps, gripper=args.gripper,
        oracle_sync=args.oracle_sync, predictor_samples=args.samples, planner_samples=args.samples,
        guidance=args.guidance, media=not args.no_media, wording=args.wording, text_scale=args.text_scale,
        text_scale_after=args.text_scale_after,
        negative=args.negative, handoff=args.handoff).validate()
    R.check_negative(cfg, args.sim_overrides)
    if args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: must be >= 1")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    previous = R.load_previous(out, cfg) if args.resume else None
    if not args.resume and (out / "results.json").exists():
        raise ConfigError(f"--out {out}: holds results.json of an earlier run; pass --resume to continue it or choose "
                          "another folder")
    spec = {"policy": args.policy, "baseline": args.baseline, "predictor": args.predictor, "planner": args.planner,
            "device": args.device}
    models = R.load_models(cfg.modes, tasks=cfg.tasks, handoff=cfg.handoff is not None, **spec)
    R.check_tasks(models, cfg.tasks)  # a specialist policy on a task it never saw: refused before anything is written
    if cfg.guidance is not None:
        for policy in models.policies("policy"):
            policy.config.check_guidance(cfg.guidance)  # refused here, once, rather than in every episode
    command = "frameplan rollout " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 1 and \
        sys.argv[1] == "rollout" else "frameplan rollout (called from Python)"
    run_ = R.RolloutRun(out, cfg, command, models.sources, previous)
    run_.write()
    try:
        with atomic.sigterm_as_interrupt():
            R.execute(run_, models, args.sim_overrides, args.workers, spec)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (atomic.Terminated)
        # keep the interrupted frames (and the simulator they hold) alive: freed here, SAPIEN's native destructors can
        # crash the process (SIGSEGV after a clean stop, seen in CI); the entry point then leaves with os._exit
        _INTERRUPTED.append(exc)
        run_.interrupted = True
        run_.write()
        what = "terminated" if isinstance(exc, atomic.Terminated) else "interrupted"
        print(f"frameplan rollout: {what}; {len(run_.episodes)} finished episode(s) kept in {out / 'results.json'} "
              "(marked interrupted; --resume continues)", file=sys.stderr)
        return 143 if isinstance(exc, atomic.Terminated) else 130
    run_.interrupted = False
    path = run_.write()
    print((out / "report.md").read_text(encoding="utf-8"))
    print(f"results: {path}")
    return 0
