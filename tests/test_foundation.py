"""Packaging, CLI, config and atomic-write basics."""
import dataclasses
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from frameplan_core import atomic, grid
from frameplan_core.config import from_dict, load_config
from frameplan_core.errors import ConfigError, InputError

ROOT = Path(__file__).resolve().parents[1]


def test_core_has_no_ros_imports():
    pattern = re.compile(r"^\s*(from|import)\s+(rclpy|\w+_msgs|rosidl\w*|launch\w*)\b", re.M)
    offenders = [str(p) for p in (ROOT / "frameplan_core").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_package_xml_exec_depends():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.get("format") == "3"
    assert root.findtext("name") == "frameplan_ros"
    deps = {e.text for e in root.findall("exec_depend")}
    for d in ["rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "nav_msgs", "visualization_msgs", "diagnostic_msgs"]:
        assert d in deps
    assert root.find("export/build_type").text == "ament_python"
    assert (ROOT / "resource" / "frameplan_ros").is_file()


def test_cli_help_for_every_verb():
    from frameplan_cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "verb")
    assert "bench" in sub.choices
    for verb in sub.choices:
        out = subprocess.run([sys.executable, "-m", "frameplan_cli", verb, "--help"], capture_output=True, text=True)
        assert out.returncode == 0, (verb, out.stderr)
        assert "usage: frameplan" in out.stdout


@dataclasses.dataclass
class _Cfg:
    lr: float = 1e-4
    name: str = "x"
    steps: int = 3


def test_config_rejects_unknown_keys_and_bad_types(tmp_path):
    assert from_dict(_Cfg, {"lr": 1}).lr == 1.0
    with pytest.raises(ConfigError, match="unknown key"):
        from_dict(_Cfg, {"lrr": 1})
    assert from_dict(_Cfg, {"lr": "1e-4"}).lr == 1e-4  # PyYAML's reading of 1e-4
    with pytest.raises(ConfigError, match="lr"):
        from_dict(_Cfg, {"lr": "fast"})
    with pytest.raises(ConfigError, match="steps"):
        from_dict(_Cfg, {"steps": "many"})
    p = tmp_path / "c.yaml"
    p.write_text("lr: 0.5\nname: a\n")
    cfg = load_config(_Cfg, p, ["steps=7", "name=b"])
    assert (cfg.lr, cfg.name, cfg.steps) == (0.5, "b", 7)


def test_atomic_dir_leaves_nothing_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic.atomic_dir(tmp_path / "sample") as d:
            (d / "a.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic.atomic_dir(tmp_path / "sample") as d:
        (d / "a.txt").write_text("whole")
    assert (tmp_path / "sample" / "a.txt").read_text() == "whole"
    mask = os.umask(0o022)
    try:
        atomic.write_text(tmp_path / "f.txt", "x")
        with atomic.atomic_dir(tmp_path / "d") as d:
            pass
    finally:
        os.umask(mask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755


def test_serpentine_positions_and_round_trip():
    frames = [np.full((4, 5, 3), k, np.uint8) for k in range(9)]
    g = grid.compose(frames)
    assert g.shape == (12, 15, 3)
    # rows 1 2 3 / 6 5 4 / 7 8 9  (1-based frame numbers)
    expected = [[1, 2, 3], [6, 5, 4], [7, 8, 9]]
    for r in range(3):
        for c in range(3):
            assert g[r * 4, c * 5, 0] + 1 == expected[r][c]
    back = grid.split(g)
    assert all(np.array_equal(a, b) for a, b in zip(frames, back))
    src = grid.source_grid(frames[3])
    assert np.array_equal(src[:4, :5], frames[3]) and src[4:].max() == 0 and src[:4, 5:].max() == 0
    with pytest.raises(InputError):
        grid.split(np.zeros((10, 15, 3), np.uint8))
    assert grid.frame_indices(17) == [0, 2, 4, 6, 8, 10, 12, 14, 16]


def test_read_json_names_the_file_and_the_problem(tmp_path):
    from frameplan_core.errors import DataError, ModelError
    from frameplan_core.jsonfile import read_json

    p = tmp_path / "x.json"
    with pytest.raises(ModelError, match=r"x\.json: train one first$"):
        read_json(p, ModelError, missing="train one first")
    p.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(DataError, match=r"x\.json: not UTF-8 \(byte 7: b'\\xff'\)"):
        read_json(p)
    with pytest.raises(DataError, match=r"x\.json: index file is not UTF-8"):
        read_json(p, what="index file")
    p.write_text('{"a": 1,}')
    with pytest.raises(ConfigError, match=r"x\.json: invalid JSON \(Expecting"):
        read_json(p, ConfigError)
    p.write_text("[1, 2]")
    with pytest.raises(DataError, match=r"x\.json: expected a JSON object, got list"):
        read_json(p)
    assert read_json(p, kind=list) == [1, 2] and read_json(p, kind=None) == [1, 2]
    p.write_text('{"a": [1]}')
    assert read_json(p) == {"a": [1]}
    with pytest.raises(DataError, match=r"names_the_file\w*: cannot read \(Is a directory\)"):
        read_json(tmp_path)  # a folder


def test_pixels_round_trip_uint8_and_unit_range():
    import torch

    from frameplan_core import pixels

    images = np.random.default_rng(0).integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    x = pixels.to_tensor(images)
    assert x.shape == (2, 3, 4, 5) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert float(x[1, 2, 3, 4]) == np.float32(images[1, 3, 4, 2]) / np.float32(127.5) - np.float32(1)
    assert np.array_equal(pixels.to_uint8(x), images)
    assert pixels.to_tensor(torch.from_numpy(images[0])).shape == (3, 4, 5)  # one image, torch in
    back = pixels.to_uint8(torch.tensor([-2.0, -1.0, 0.0, 0.999, 3.0]).reshape(1, 5, 1))  # clamped, rounded
    assert back.flags.c_contiguous and back.reshape(-1).tolist() == [0, 0, 128, 255, 255]


@pytest.mark.parametrize("src, target", [((240, 320), (128, 128)), ((480, 640), (64, 96)), ((100, 50), (64, 64)),
                                         ((64, 64), (64, 64)), ((71, 333), (90, 30))])
def test_crop_geometry_helpers_agree_with_fit(src, target):
    """center_box / pad_borders / pad_box: the one crop arithmetic behind fit, unfit, unfit_map and fit_points."""
    from frameplan_core.image import center_box, fit, pad_borders, pad_box

    (h, w), (th, tw) = src, target
    image = np.random.default_rng(1).integers(1, 256, (h, w, 3), dtype=np.uint8)
    y0, x0, ch, cw = center_box(src, target)
    assert 0 <= y0 and y0 + ch <= h and 0 <= x0 and x0 + cw <= w and abs(cw / ch - tw / th) <= 2 / min(ch, cw)
    assert np.array_equal(fit(image, target, "center"), fit(image[y0:y0 + ch, x0:x0 + cw], target, "resize"))
    top, bottom, left, right = pad_borders(src, target)
    ph, pw = h + top + bottom, w + left + right
    assert (top + bottom) * (left + right) == 0 and abs(pw / ph - tw / th) <= 2 / min(ph, pw)
    y0, x0, ch, cw = pad_box(target, src)  # where the original lies in the padded, resized image
    assert abs(y0 - top * th / ph) <= 1 and abs(ch - h * th / ph) <= 1 and abs(x0 - left * tw / pw) <= 1
    assert abs(cw - w * tw / pw) <= 1


# Copies of the task-name tuple outside frameplan_core.sim.task_config.TASK_NAMES: none left (issue 19); an entry
# that matches nothing fails.
TASK_TUPLE_COPIES: set[str] = set()


def test_task_names_are_defined_once():
    import ast

    from frameplan_core.sim.task_config import TASK_NAMES

    found = set()
    for folder in ("frameplan_core", "frameplan_ros", "frameplan_cli", "training", "tests", "launch"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.Tuple, ast.List)) and len(node.elts) >= len(TASK_NAMES) and all(
                        isinstance(e, ast.Constant) for e in node.elts[:3]) and \
                        tuple(e.value for e in node.elts[:3]) == TASK_NAMES:
                    found.add(path.relative_to(ROOT).as_posix())
    assert found - {"frameplan_core/sim/task_config.py"} == TASK_TUPLE_COPIES
