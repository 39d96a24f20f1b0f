"""The single ``frameplan <verb>`` entry point (console script ``frameplan``, or ``python -m frameplan_cli``). Each
verb lives in its own module with ``add_arguments(parser)`` and ``run(args) -> int``; modules import heavy libraries
inside ``run`` so that ``frameplan --help`` stays fast."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import sys

from frameplan_core.errors import FrameplanError

# verb -> (module, one-line help). Modules that are not present (e.g. training not installed) are not listed.
VERBS: dict[str, tuple[str, str]] = {
    "collect": ("frameplan_cli.verbs.collect", "collect simulated RoboTwin-format episodes with SAPIEN"),
    "convert": ("frameplan_cli.verbs.convert", "convert RoboTwin episodes to InstructPix2Pix or grid datasets"),
    "inspect": ("frameplan_cli.verbs.inspect", "say what a path holds and write a contact sheet"),
    "replay-actions": ("frameplan_cli.verbs.replay_actions", "replay an episode's recorded commands in the simulator"),
    "predict": ("frameplan_cli.verbs.predict", "predict the future frame for an image and an instruction"),
    "plan": ("frameplan_cli.verbs.plan", "generate a 9-frame 3x3 grid visual plan"),
    "rollout": ("frameplan_cli.verbs.rollout", "closed-loop policy rollouts with and without foresight (success rates)"),
    "train": ("frameplan_training.scripts.train", "train the frame predictor, grid planner, VAE or policy (Lightning)"),
    "export": ("frameplan_training.scripts.export", "export a training checkpoint as a model folder"),
    "eval": ("frameplan_training.scripts.evaluate", "evaluate a model against the copy-the-input baseline"),
    "bench": ("frameplan_cli.verbs.bench", "speed/memory benchmarks (predictor, planner, sim, ros)"),
    "sim": ("frameplan_cli.verbs.sim", "run sim bridge + foresight node in one process, save outputs"),
    "record": ("frameplan_cli.verbs.record", "record foresight and camera topics to an MCAP file"),
    "demo": ("frameplan_cli.verbs.demo", "run the end-to-end demo and say where its outputs are"),
}


def _available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="frameplan", description="frameplan: visual foresight for ROS 2 robots")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="<verb>")
    for verb, (module, help_text) in VERBS.items():
        if not _available(module):
            continue
        mod = importlib.import_module(module)
        p = sub.add_parser(verb, help=help_text, description=(mod.__doc__ or help_text).strip(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(_module=mod)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "verb", None):
        parser.print_help()
        return 2
    try:
        code = int(args._module.run(args) or 0)
    except FrameplanError as exc:
        print(f"frameplan {args.verb}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM where a verb turns it into atomic.Terminated
        from frameplan_core.atomic import Terminated

        code = 143 if isinstance(exc, Terminated) else 130
        print(f"frameplan {args.verb}: {'terminated' if code == 143 else 'interrupted'}", file=sys.stderr)
        if argv is None:  # the process's own entry point (console script, python -m), not a caller in-process
            _exit_after_signal(code)
        return code
    if code in (130, 143) and argv is None:  # a verb that reported its own interruption (rollout) exits the same way
        _exit_after_signal(code)
    return code


def _exit_after_signal(code: int) -> None:
    """Leave the process without the interpreter's finalizers. Why: a simulator or renderer stopped mid-frame can
    crash in its native destructors at exit (seen once in CI: SIGSEGV right after a clean SIGTERM of `frameplan
    collect`), turning exit 143 into -11. The verb has already removed its partial files; stop any child process
    still running, flush, and exit with the signal's code."""
    import multiprocessing

    for child in multiprocessing.active_children():
        child.terminate()
    for child in multiprocessing.active_children():
        child.join(timeout=5)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
