"""Parameters, YAML defaults, launch files, rviz config and the Fast DDS profile are consistent with the code."""
import ast
import configparser
import importlib.util
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

pytest.importorskip("rclpy", reason="ROS 2 Python (rclpy) not installed: pip install -e .[ros]")
pytestmark = pytest.mark.ros

import rclpy
from rclpy.parameter import Parameter

from frameplan_core.errors import ConfigError
from frameplan_ros import params as paramlib
from frameplan_ros.foresight_params import ForesightParams
from frameplan_ros.sim_bridge_params import SimBridgeParams

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config"
LAUNCH_FILES = sorted((ROOT / "launch").glob("*.launch.py"))


@pytest.mark.parametrize("cls,yaml_name", [(ForesightParams, "foresight.yaml"), (SimBridgeParams, "sim_bridge.yaml")])
def test_yaml_names_every_parameter_with_valid_values(cls, yaml_name):
    values = paramlib.check_yaml_against(cls, CONFIG / yaml_name)
    assert set(values) == {f.name for f, _ in paramlib.fields_of(cls)}
    for f, _ in paramlib.fields_of(cls):
        assert f.metadata["description"], f"{cls.__name__}.{f.name} has no description"


def test_yaml_check_rejects_unknown_and_wrong_types(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("/**:\n  ros__parameters:\n    mdoe: planner\n")
    with pytest.raises(ConfigError, match="mdoe"):
        paramlib.check_yaml_against(ForesightParams, bad)
    bad.write_text("/**:\n  ros__parameters:\n    steps: many\n")
    with pytest.raises(ConfigError, match="steps"):
        paramlib.check_yaml_against(ForesightParams, bad)
    bad.write_text("/**:\n  ros__parameters:\n    mode: dream\n")
    with pytest.raises(ConfigError, match="not one of"):
        paramlib.check_yaml_against(ForesightParams, bad)


@pytest.fixture
def ros_context():
    ctx = rclpy.context.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


def test_declared_parameters_have_descriptors_and_ranges(ros_context):
    node = rclpy.create_node("param_probe", context=ros_context)
    try:
        p = paramlib.declare(node, ForesightParams)
        assert p == ForesightParams()
        d = node.describe_parameter("steps")
        assert d.description and d.integer_range[0].from_value == 0 and d.integer_range[0].to_value == 1000
        assert node.describe_parameter("diagnostics_period").floating_point_range
        assert node.describe_parameter("image_topic").read_only
        assert "predictor" in node.describe_parameter("mode").additional_constraints
        # rclpy enforces the range and read-only flags
        assert not node.set_parameters([Parameter("steps", value=-3)])[0].successful
        assert not node.set_parameters([Parameter("image_topic", value="/x")])[0].successful
        assert node.set_parameters([Parameter("steps", value=4)])[0].successful
    finally:
        node.destroy_node()


def test_invalid_choice_at_declaration_is_a_config_error(ros_context):
    node = rclpy.create_node("param_probe2", context=ros_context,
                             parameter_overrides=[Parameter("trigger", value="sometimes")])
    try:
        with pytest.raises(ConfigError, match="trigger='sometimes'"):
            paramlib.declare(node, ForesightParams)
    finally:
        node.destroy_node()


# ---------------------------------------------------------------- launch files (checked without `launch`)
def _console_scripts():
    tree = ast.parse((ROOT / "setup.py").read_text())
    scripts = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.match(r"^\w+ = [\w.]+:\w+$", node.value):
            scripts.add(node.value.split(" = ")[0])
    return scripts


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_references_existing_executables_and_configs(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    funcs = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in funcs
    scripts = _console_scripts()
    executables, configs = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            kw = {k.arg: k.value for k in node.keywords}
            if "executable" in kw:
                assert isinstance(kw["executable"], ast.Constant)
                pkg = kw["package"].value if isinstance(kw.get("package"), ast.Constant) else None
                pkg = pkg or "frameplan_ros"
                executables.append((pkg, kw["executable"].value))
        if isinstance(node, ast.List):
            items = [e.value for e in node.elts if isinstance(e, ast.Constant)]
            if "config" in items and len(items) >= 2:
                configs.append(items[items.index("config") + 1])
    ours = [e for p, e in executables if p == "frameplan_ros" or p == "PACKAGE"]
    assert ours, f"{path.name} starts no frameplan node"
    for exe in ours:
        assert exe in scripts, f"{path.name}: executable {exe!r} is not a console script in setup.py"
    for p, exe in executables:
        assert p in ("frameplan_ros", "PACKAGE", "rviz2"), f"{path.name}: unexpected package {p}"
    assert configs, f"{path.name} references no config file"
    for name in configs:
        assert (CONFIG / name).is_file(), f"{path.name}: config/{name} does not exist"


def test_setup_installs_launch_and_config_and_scripts_dir():
    text = (ROOT / "setup.py").read_text()
    assert 'glob("launch/*.launch.py")' in text and 'glob("config/*")' in text
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["install"]["install_scripts"] == "$base/lib/frameplan_ros"  # where ros2 run/launch look


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_builds_its_description(path):
    if importlib.util.find_spec("launch_ros") is None:
        pytest.skip("launch_ros is not importable (not on PyPI; needs a system ROS 2): checked by AST above")
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    desc = mod.generate_launch_description()
    assert desc.entities


def test_package_xml_declares_every_ros_package_the_nodes_and_launch_files_import():
    ros_pkg = re.compile(r"^(rclpy|rcl_interfaces|launch|launch_ros|ament_index_python|\w+_msgs|\w+_interfaces)$")
    used = set()
    for path in [*(ROOT / "frameplan_ros").rglob("*.py"), *LAUNCH_FILES]:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            used |= {n.split(".")[0] for n in names if ros_pkg.match(n.split(".")[0])}
    root = ET.parse(ROOT / "package.xml").getroot()
    declared = {e.text for tag in ("exec_depend", "depend") for e in root.iter(tag)}
    assert used - declared == set(), f"package.xml lacks <exec_depend> for {sorted(used - declared)}"


# ---------------------------------------------------------------- rviz, DDS profile
def test_rviz_config_shows_our_topics_with_best_effort_images():
    data = yaml.safe_load((CONFIG / "frameplan.rviz").read_text())
    displays = data["Visualization Manager"]["Displays"]
    topics = {d["Topic"]["Value"]: d for d in displays if "Topic" in d}
    for t in ["/camera/camera/color/image_raw", "/frameplan/predicted_image", "/frameplan/comparison",
              "/frameplan/plan/grid", "/frameplan/plan/trajectory_markers", "/frameplan/plan/trajectory"]:
        assert t in topics, f"rviz config lacks {t}"
    # the commanded trajectory: the sim bridge's markers, in the fixed frame, and over the camera image
    markers = paramlib.yaml_parameters(CONFIG / "sim_bridge.yaml")["command_markers_topic"]
    assert topics[markers]["Class"] == "rviz_default_plugins/MarkerArray"
    overlay = [d for d in displays if d["Class"] == "rviz_default_plugins/Camera"]
    assert overlay and overlay[0]["Visibility"][topics[markers]["Name"]] is True
    for d in displays:
        if d["Class"] == "rviz_default_plugins/Image":
            assert d["Topic"]["Reliability Policy"] == "Best Effort", d["Name"]
    classes = {d["Class"] for d in displays}
    assert {"rviz_default_plugins/MarkerArray", "rviz_default_plugins/Path"} <= classes
    fixed = data["Visualization Manager"]["Global Options"]["Fixed Frame"]
    assert fixed == paramlib.yaml_parameters(CONFIG / "sim_bridge.yaml")["frame_id"]


def test_fastdds_profile_gives_a_large_shared_memory_transport():
    ns = {"d": "http://www.eprosima.com"}
    root = ET.parse(CONFIG / "fastdds_shm.xml").getroot()
    shm = [t for t in root.iterfind(".//d:transport_descriptor", ns) if t.findtext("d:type", namespaces=ns) == "SHM"]
    assert shm and int(shm[0].findtext("d:segment_size", namespaces=ns)) >= 16 * 2**20
    assert int(shm[0].findtext("d:maxMessageSize", namespaces=ns)) >= 640 * 480 * 4
    part = root.find(".//d:participant", ns)
    assert part.get("is_default_profile") == "true"
    used = [e.text for e in part.iterfind(".//d:userTransports/d:transport_id", ns)]
    assert shm[0].findtext("d:transport_id", namespaces=ns) in used
