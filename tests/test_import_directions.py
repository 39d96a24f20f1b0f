"""The allowed import directions (README "Architecture"): frameplan_core imports nothing of ours above it
(no ROS, training or CLI module), frameplan_training nothing of ROS or the CLI, frameplan_ros nothing of training
or the CLI; only frameplan_cli may import everything. Not by ``import``, not by an import string (any string literal
naming such a module counts, docstrings included)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ROS = ("frameplan_ros", "rclpy", "rosidl_runtime_py", "std_msgs", "sensor_msgs", "geometry_msgs", "nav_msgs",
       "visualization_msgs", "diagnostic_msgs", "trajectory_msgs", "builtin_interfaces")
CLI = ("frameplan_cli", "frameplan_core.cli", "frameplan_core.scripts", "frameplan_core.bench")
# package (source folder, import name) -> modules it must never reach (the CLI's old homes inside the core count)
FORBIDDEN = {
    ("frameplan_core", "frameplan_core"): ROS + CLI + ("frameplan_training",),
    ("training", "frameplan_training"): ROS + CLI,
    ("frameplan_ros", "frameplan_ros"): CLI + ("frameplan_training",),
}

# Known violations, path -> names it may still reach: none (issue 19 moved the CLI, its verbs and benchmarks into
# frameplan_cli and training's config lookup into frameplan_core.paths). An entry that no longer matches anything
# fails the test, so it cannot go stale.
ALLOWED: dict[str, set[str]] = {}


def _module_of(path: Path, src: Path, name: str) -> str:
    rel = path.relative_to(src).with_suffix("")
    parts = [name, *rel.parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _names(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted name) of every import and every string literal in a module (relative imports resolved)."""
    out = []
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.append((node.lineno, base))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            out += [(node.lineno, word) for word in _dotted_words(node.value)]
    return out


def _dotted_words(text: str) -> list[str]:
    """Identifiers-with-dots in a string ('python -m frameplan_core.cli train' -> [..., 'frameplan_core.cli'])."""
    word, words = [], []
    for ch in text + " ":
        if ch.isalnum() or ch in "_.":
            word.append(ch)
        elif word:
            words.append("".join(word).strip("."))
            word = []
    return words


def _hits(name: str, forbidden: tuple[str, ...]) -> set[str]:
    return {f for f in forbidden if name == f or name.startswith(f + ".")}


def violations() -> tuple[list[str], dict[str, set[str]]]:
    """(unexpected violations as 'path:line: name', allowed ones actually found per file)."""
    bad, used = [], {}
    for (folder, name), forbidden in FORBIDDEN.items():
        src = ROOT / folder
        for path in sorted(src.rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
            module = _module_of(path, src, name)
            for line, dotted in _names(tree, module, path.name == "__init__.py"):
                # a CLI package naming its own modules (bench/ -> bench.memory) crosses no layer
                for hit in _hits(dotted, forbidden) - _hits(module, forbidden):
                    if hit in ALLOWED.get(rel, set()):
                        used.setdefault(rel, set()).add(hit)
                    else:
                        bad.append(f"{rel}:{line}: {dotted}")
    return sorted(set(bad)), used


def test_no_forbidden_imports():
    bad, _ = violations()
    assert not bad, ("lower packages must not reach upper ones (README, Architecture); found:\n" + "\n".join(bad))


def test_allow_list_has_no_stale_entries():
    _, used = violations()
    stale = {f"{path}: {sorted(names - used.get(path, set()))}" for path, names in ALLOWED.items()
             if names - used.get(path, set())}
    assert not stale, "allow-list entries that match nothing any more (remove them):\n" + "\n".join(sorted(stale))


@pytest.mark.parametrize("source, expected", [
    ("import frameplan_ros.convert\n", ["frameplan_ros"]),
    ("from frameplan_training import run\n", ["frameplan_training"]),
    ("import importlib\nimportlib.import_module('frameplan_ros.bench')\n", ["frameplan_ros"]),
    ("CMD = ['python', '-m', 'frameplan_core.cli', 'train']\n", ["frameplan_core.cli"]),
    ('"""Uses rclpy."""\n', ["rclpy"]),
    ("from ..scripts import plan\n", ["frameplan_core.scripts"]),
    ("from . import grid\nimport frameplan_rosetta\nx = 'frameplan_core.image'\n", []),
])
def test_detector_finds_imports_and_import_strings(source, expected):
    found = {h for _, n in _names(ast.parse(source), "frameplan_core.policy.rollout", False)
             for h in _hits(n, FORBIDDEN[("frameplan_core", "frameplan_core")])}
    assert sorted(found) == expected


def test_episode_formats_build_on_the_base_not_on_each_other():
    """data/robotwin.py (1.0) and data/robotwin2.py (2.0) import data/episode.py, never each other."""
    data = ROOT / "frameplan_core" / "data"
    for a, b in (("robotwin", "robotwin2"), ("robotwin2", "robotwin")):
        tree = ast.parse((data / f"{a}.py").read_text(encoding="utf-8"))
        names = [n for _, n in _names(tree, f"frameplan_core.data.{a}", False)]
        assert not [n for n in names if _hits(n, (f"frameplan_core.data.{b}",))], f"{a}.py imports {b}.py"
        assert "frameplan_core.data.episode" in names
