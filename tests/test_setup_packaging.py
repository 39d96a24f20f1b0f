"""A non-editable install (pip wheel) holds every module, the package data and the ROS share files, and the
installed copy finds them: the properties `pip install .` on a robot relies on. Builds from a copy of the sources
in tmp_path (a few seconds), so the repository stays clean."""
import ast
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("setup.py", "setup.cfg", "package.xml", "README.md", "resource", "launch", "config", "frameplan_core",
           "frameplan_ros", "frameplan_cli", "training")

pytestmark = pytest.mark.skipif(importlib.util.find_spec("setuptools") is None,
                                reason="setuptools is needed to build the wheel without network")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif p.exists():
            shutil.copy2(p, src / name)
    dist = tmp_path_factory.mktemp("dist")
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", "-w", str(dist), str(src)], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (whl,) = dist.glob("*.whl")
    return whl


def _names(whl: Path) -> set[str]:
    with zipfile.ZipFile(whl) as z:
        return set(z.namelist())


def test_wheel_holds_every_module_and_data_file(wheel):
    names = _names(wheel)
    # every Python file of the four packages (training/ is installed as frameplan_training)
    for top, installed in (("frameplan_core", "frameplan_core"), ("frameplan_ros", "frameplan_ros"),
                           ("frameplan_cli", "frameplan_cli"), ("training", "frameplan_training")):
        for p in (ROOT / top).rglob("*.py"):
            if "__pycache__" in p.parts:
                continue
            rel = f"{installed}/{p.relative_to(ROOT / top).as_posix()}"
            assert rel in names, f"{rel} is missing from the wheel"
    # package data the code reads at run time: embedded weights, presets, sim task and camera configs
    for sub in ("weights", "presets", "sim/tasks"):
        for p in (ROOT / "frameplan_core" / sub).rglob("*"):
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts:
                rel = f"frameplan_core/{p.relative_to(ROOT / 'frameplan_core').as_posix()}"
                assert rel in names, f"{rel} is missing from the wheel"
    data = "frameplan_ros-0.1.0.data/data/share/"
    assert f"{data}ament_index/resource_index/packages/frameplan_ros" in names
    assert f"{data}frameplan_ros/package.xml" in names
    for folder in ("launch", "config"):
        for p in (ROOT / folder).iterdir():
            if p.is_file():
                assert f"{data}frameplan_ros/{folder}/{p.name}" in names, f"{folder}/{p.name} is not installed"


def test_entry_points_and_cli_verbs_resolve_to_code(wheel):
    with zipfile.ZipFile(wheel) as z:
        info = next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))
        entry = z.read(info).decode()
    names = _names(wheel)
    scripts = {}
    for line in entry.splitlines():
        if "=" in line:
            k, v = (s.strip() for s in line.split("=", 1))
            scripts[k] = v
    assert set(scripts) == {"frameplan", "foresight_node", "sim_bridge_node"}
    assert scripts["frameplan"] == "frameplan_cli.main:main"
    for target in scripts.values():
        module, func = target.split(":")
        path = module.replace(".", "/") + ".py"
        assert path in names, target
        tree = ast.parse((ROOT / path).read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == func for n in tree.body), target
    from frameplan_cli.main import VERBS

    for verb, (module, _) in VERBS.items():
        top, rest = module.split(".", 1)
        assert f"{top}/{rest.replace('.', '/')}.py" in names, f"`frameplan {verb}` ({module}) is not installed"


def test_installed_copy_finds_its_configs_and_training_verbs(wheel, tmp_path):
    prefix = tmp_path / "prefix"
    # --ignore-installed: without it pip first uninstalls this environment's own (editable) frameplan
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
                          "-q", "--prefix", str(prefix), str(wheel)], capture_output=True, text=True, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    site = Path(sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)}))
    assert (site / "frameplan_ros" / "testing.py").is_file()
    # -S: no .pth files, so this environment's editable install of the repository cannot stand in for a module
    # the wheel lacks; the dependencies come from this environment's site-packages, after the installed copy.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), sysconfig.get_paths()["purelib"]]))
    env.pop("AMENT_PREFIX_PATH", None)  # a plain pip install: no ament index to ask
    probe = ("import frameplan_core, frameplan_core.paths as t; print(frameplan_core.__file__); "
             "print(t.config_path('sim_bridge.yaml')); print(t.config_path('fastdds_shm.xml'))")
    res = subprocess.run([sys.executable, "-S", "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    core, bridge, shm = res.stdout.split()
    assert core.startswith(str(site))
    share = prefix / "share" / "frameplan_ros" / "config"
    assert Path(bridge) == share / "sim_bridge.yaml" and Path(bridge).is_file()
    assert Path(shm) == share / "fastdds_shm.xml"
    # the training configs too (frameplan train without --config)
    probe = "from frameplan_training.scripts.train import default_config as d; print(d('predictor'), d('planner'))"
    res = subprocess.run([sys.executable, "-S", "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path,
                         timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    assert [Path(p) for p in res.stdout.split()] == [share / "train_predictor.yaml", share / "train_planner.yaml"]
    for verb in ("train", "export", "eval", "convert", "sim", "bench"):
        res = subprocess.run([sys.executable, "-S", "-m", "frameplan_cli", verb, "--help"], env=env,
                             capture_output=True, text=True, cwd=tmp_path, timeout=120, check=False)
        assert res.returncode == 0 and f"usage: frameplan {verb}" in res.stdout, (verb, res.stderr[-2000:])
