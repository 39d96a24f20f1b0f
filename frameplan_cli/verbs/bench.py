"""Speed and memory benchmarks. Each benchmark is a module ``frameplan_cli.bench.<name>`` with ``add_arguments``
and ``run``; results are printed as a Markdown table to paste into docs/BENCHMARKS.md, and written as JSON with
--json."""
from __future__ import annotations

import argparse
import importlib
import importlib.util

BENCHES = {
    "predictor": "frameplan_cli.bench.predictor",
    "planner": "frameplan_cli.bench.planner",
    "sim": "frameplan_cli.bench.sim",
    "ros": "frameplan_cli.bench.ros",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="<benchmark>", required=True)
    for name, module in BENCHES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            continue
        mod = importlib.import_module(module)
        p = sub.add_parser(name, help=(mod.__doc__ or name).strip().splitlines()[0], description=(mod.__doc__ or "").strip())
        mod.add_arguments(p)
        p.set_defaults(_bench=mod)


def run(args: argparse.Namespace) -> int:
    return int(args._bench.run(args) or 0)
