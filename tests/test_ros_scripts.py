"""`frameplan sim` (bridge + foresight node in one process, outputs saved) and `frameplan record` (MCAP that
rosbag2/Foxglove read: ros2msg schemas + CDR), run as the CLI would run them."""
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python (rclpy) not installed: pip install -e .[ros]")
pytestmark = pytest.mark.ros

from sensor_msgs.msg import Image
from std_msgs.msg import String

from frameplan_ros import convert
from frameplan_ros.testing import Probe


def _cli(*args, timeout=240):
    return subprocess.run([sys.executable, "-m", "frameplan_cli", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_sim_replays_an_episode_into_the_predictor_and_saves_outputs(tmp_path):
    from test_ros_sim_bridge import _write_episode

    from frameplan_core.image import read_image
    from frameplan_core.predictor import FramePredictor, PredictorConfig

    cfg = PredictorConfig.preset("tiny")
    cfg.resolution = 64
    FramePredictor.from_config(cfg, seed=0, device="cpu").save_pretrained(tmp_path / "model")
    episode = _write_episode("pkl", tmp_path / "data")
    out = tmp_path / "out"
    r = _cli("sim", "--episode", str(episode), "--model", str(tmp_path / "model"), "--device", "cpu",
             "--steps", "1", "--duration", "120", "--out", str(out))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    pred = read_image(out / "predicted_image_0000.png")
    assert pred.shape == (240, 320, 3)
    assert (out / "comparison_0000.png").is_file() and (out / "contact_sheet.png").is_file()
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["bridge"]["frames_published"] == 6
    assert summary["foresight"]["outputs"] == 1
    assert summary["files"][0]["instruction"] == "stack the green block on the red one"


def test_sim_without_a_model_fails_clearly(tmp_path):
    r = _cli("sim", "--model", str(tmp_path / "missing_model"), "--device", "cpu", "--duration", "60",
             "--out", str(tmp_path / "out"))
    assert r.returncode == 1
    assert "missing_model" in r.stderr and "Traceback" not in r.stderr


def test_sim_rejects_unknown_parameter_names_before_starting(tmp_path):
    # rclpy drops overrides of undeclared parameters; a misspelt --set must not run silently with the default
    for item, name in (("foresight.stepz=2", "stepz"), ("bridge.rat=5", "rat")):
        r = _cli("sim", "--set", item, "--device", "cpu", "--duration", "60", "--out", str(tmp_path / "out"),
                 timeout=60)
        assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
        assert name in r.stderr and "no such" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_record_writes_mcap_that_decodes_with_ros2_schemas(tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out = tmp_path / "rec.mcap"
    proc = subprocess.Popen([sys.executable, "-m", "frameplan_cli", "record", "--out", str(out),
                             "--topics", "/camera/camera/color/image_raw", "/frameplan/instruction",
                             "--duration", "60", "--max-messages", "6"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    probe = Probe("record_probe")
    try:
        img_pub = probe.publisher(Image, "/camera/camera/color/image_raw")
        txt_pub = probe.publisher(String, "/frameplan/instruction")
        rgb = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
        assert probe.wait_matched([img_pub, txt_pub], timeout=60), "recorder never subscribed"
        time.sleep(0.5)
        for i in range(3):
            img_pub.publish(convert.numpy_to_image(rgb, "rgb8", frame_id=f"f{i}"))
            txt_pub.publish(String(data=f"instruction {i}"))
            time.sleep(0.1)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        probe.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stdout + stderr
    with open(out, "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        schemas = {s.name: s for s in summary.schemas.values()}
        assert set(schemas) == {"sensor_msgs/msg/Image", "std_msgs/msg/String"}
        assert all(s.encoding == "ros2msg" for s in schemas.values())
        assert b"MSG: std_msgs/Header" in schemas["sensor_msgs/msg/Image"].data
        got = {"/camera/camera/color/image_raw": [], "/frameplan/instruction": []}
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            assert channel.message_encoding == "cdr"
            got[channel.topic].append(decoded)
    assert [m.data for m in got["/frameplan/instruction"]] == [f"instruction {i}" for i in range(3)]
    assert [m.header.frame_id for m in got["/camera/camera/color/image_raw"]] == ["f0", "f1", "f2"]
    m = got["/camera/camera/color/image_raw"][0]
    np.testing.assert_array_equal(np.frombuffer(bytes(m.data), np.uint8).reshape(240, 320, 3), rgb)
