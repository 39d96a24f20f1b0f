"""image_transport's compressed transport: format-string conventions (RGB vs BGR, grey, old formats), corrupt and
unsupported data refused before or at decoding, a decompression bomb refused from its header; end to end, the sim
bridge's compressed replay drives the foresight node (image_transport: compressed) and bad messages are counted."""
import struct
import zlib

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python (rclpy) not installed: pip install -e .[ros]")
pytestmark = pytest.mark.ros

from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from frameplan_core.errors import InputError
from frameplan_ros import compressed, convert
from frameplan_ros.testing import NodeProcess, Probe, config_path, diagnostic_values

TOPIC = "/camera/camera/color/image_raw/compressed"


def _rgb(h=48, w=64):
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 220  # red everywhere, a blue band: a channel swap shows at once
    img[:, : w // 4, 2] = 255
    img[:, : w // 4, 0] = 0
    return img


def _msg(fmt, data):
    m = CompressedImage()
    m.format = fmt
    m.data = bytes(data)
    return m


def _enc(ext, arr):
    ok, buf = cv2.imencode(ext, arr)
    assert ok
    return buf.tobytes()


def test_published_format_round_trips_jpeg_and_png():
    rgb = _rgb()
    for fmt in ("jpeg", "png"):
        msg = convert.compressed_image_msg(rgb, fmt, 95, frame_id="cam")
        assert msg.format == f"rgb8; {fmt} compressed bgr8" and msg.header.frame_id == "cam"
        assert compressed.check(msg) == (64, 48)
        out = compressed.to_rgb(msg)
        assert out.shape == rgb.shape and out.dtype == np.uint8
        assert np.abs(out.astype(int) - rgb).mean() < (3 if fmt == "jpeg" else 1e-9)


@pytest.mark.parametrize("fmt,pixels", [
    ("rgb8; jpeg compressed bgr8", "bgr"),   # compressed_image_transport for an rgb8 image
    ("bgr8; jpeg compressed bgr8", "bgr"),   # ... for a bgr8 image (the decoded pixels are BGR either way)
    ("rgb8; png compressed rgb8", "rgb"),    # compressed from RGB pixels: OpenCV gives them back in RGB order
    ("jpeg", "bgr"),                         # old publishers: no ';', 3 channels are BGR
    ("", "bgr"),
])
def test_format_strings_decide_the_channel_order(fmt, pixels):
    rgb = _rgb()
    arr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if pixels == "bgr" else rgb
    out = compressed.to_rgb(_msg(fmt, _enc(".png", arr)))
    np.testing.assert_array_equal(out, rgb)


def test_grey_and_four_channel_images_become_rgb():
    grey = np.arange(48 * 64, dtype=np.uint8).reshape(48, 64)
    out = compressed.to_rgb(_msg("mono8; png compressed ", _enc(".png", grey)))
    assert out.shape == (48, 64, 3) and (out[..., 0] == grey).all() and (out[..., 2] == grey).all()
    rgb = _rgb()
    bgra = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA)
    np.testing.assert_array_equal(compressed.to_rgb(_msg("rgba8; png compressed bgra8", _enc(".png", bgra))), rgb)


def _png_header(w, h):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk


@pytest.mark.parametrize("fmt,data,text", [
    ("rgb8; jpeg compressed bgr8", b"", "empty image"),
    ("rgb8; jpeg compressed bgr8", b"GIF89a" + bytes(100), "neither JPEG nor PNG"),
    ("16UC1; compressedDepth png", b"\x89PNG\r\n\x1a\n" + bytes(40), "compressedDepth"),
    ("rgb8; webp compressed bgr8", b"RIFF" + bytes(40), "unsupported format"),
    ("rgb16; png compressed bgr16", b"\x89PNG\r\n\x1a\n" + bytes(40), "not an 8-bit"),
    ("theora", b"x", "unsupported format"),
    ("rgb8; png compressed bgr8", _png_header(100_000, 100_000), "larger than"),  # 30 bytes claiming 30 GB
    ("rgb8; jpeg compressed bgr8", b"\xff\xd8\xff\xe0" + bytes(20), "frame header"),
])
def test_unsupported_or_corrupt_data_is_refused_before_decoding(fmt, data, text):
    with pytest.raises(InputError, match=text) as exc:
        compressed.check(_msg(fmt, data), TOPIC)
    assert str(exc.value).startswith(TOPIC) and len(str(exc.value)) < 400


def test_corrupt_body_with_a_valid_header_fails_at_decoding():
    good = convert.compressed_image_msg(_rgb(), "jpeg")
    data = bytes(good.data)
    sof = data.index(b"\xff\xc0")
    bad = _msg(good.format, data[:sof + 20])  # header and frame size intact, no scan data
    assert compressed.check(bad) == (64, 48)
    with pytest.raises(InputError, match="does not decode"):
        compressed.to_rgb(bad, TOPIC)


def test_a_huge_format_string_is_echoed_bounded():
    with pytest.raises(InputError) as exc:
        compressed.check(_msg("x" * 1_000_000 + "; jpeg", b"\xff\xd8\xff" + bytes(10)), TOPIC)
    assert len(str(exc.value)) < 400


# ---------------------------------------------------------------- end to end over DDS
def _foresight_diag(probe):
    for arr in reversed(probe.messages("/diagnostics")):
        vals = diagnostic_values(arr, "foresight")
        if vals:
            return vals[0][2]
    return {}


@pytest.mark.slow
def test_compressed_replay_drives_the_foresight_node_and_bad_messages_are_counted(tmp_path):
    from test_ros_sim_bridge import _write_episode

    from frameplan_core.data.episode import open_episode
    from frameplan_core.predictor import FramePredictor, PredictorConfig

    cfg = PredictorConfig.preset("tiny")
    cfg.resolution = 64
    FramePredictor.from_config(cfg, seed=0, device="cpu").save_pretrained(tmp_path / "model")
    episode = _write_episode("pkl", tmp_path / "data")
    reader = open_episode(episode)
    fore = NodeProcess("frameplan_ros.foresight_node", config_path("foresight.yaml"),
                       {"model": str(tmp_path / "model"), "device": "cpu", "steps": 1, "image_transport": "compressed",
                        "trigger": "continuous", "default_instruction": "stack the blocks",
                        "camera_qos": "reliable",
                        "use_camera_info": False, "diagnostics_period": 0.2, "warmup": False},
                       log_path=tmp_path / "foresight.log")
    probe = Probe("compressed_probe")
    bridge = None
    try:
        probe.listen(DiagnosticArray, "/diagnostics")
        probe.listen(Image, "/frameplan/comparison")
        probe.listen(CompressedImage, TOPIC)
        bad = probe.publisher(CompressedImage, TOPIC)  # reliable, as the node (camera_qos)
        assert probe.wait_for(lambda: _foresight_diag(probe).get("model", "not loaded") != "not loaded", 180), \
            fore.log_text()[-3000:]
        assert probe.wait_matched([bad])
        for fmt, data in (("rgb8; jpeg compressed bgr8", b"\xff\xd8\xff\xe0" + bytes(30)),  # no frame header
                          ("rgb8; png compressed bgr8", _png_header(50_000, 50_000)),
                          ("16UC1; compressedDepth png", b"\x89PNG" + bytes(30))):
            bad.publish(_msg(fmt, data))
        # the bridge publishes the episode raw and compressed; the node subscribes to the compressed topic only.
        # The bridge starts once the probe has matched; the node may match it later on a loaded machine (CI),
        # so the six-frame episode loops until the node has answered.
        bridge = NodeProcess("frameplan_ros.sim_bridge_node", config_path("sim_bridge.yaml"),
                             {"source": "replay", "episode": str(episode), "loop": True, "camera_qos": "reliable",
                              "publish_compressed": True, "compressed_format": "png", "publish_depth": False,
                              "wait_for_subscribers": 1, "replay_rate": 10.0, "instruction_topic": "/unused"},
                             log_path=tmp_path / "bridge.log")
        probe.listen(CameraInfo, "/camera/camera/color/camera_info")  # wait_for_subscribers: every camera topic
        probe.listen(String, "/unused")
        n = len(reader)
        assert probe.wait_for(lambda: len(probe.messages(TOPIC)) >= n + 3, 90), bridge.log_text()[-3000:]
        frames = [m for m in probe.messages(TOPIC) if m.header.frame_id]  # the bridge's, not the bad ones
        np.testing.assert_array_equal(compressed.to_rgb(frames[0]), reader.rgb(0))  # png: lossless
        assert probe.wait_for(lambda: probe.messages("/frameplan/comparison"), 120), fore.log_text()[-3000:]
        cmp = convert.image_to_rgb(probe.messages("/frameplan/comparison")[0])
        assert cmp.shape[0] == 240  # input | prediction at the camera's size: a decoded 320x240 frame went in
        def counted():
            vals = _foresight_diag(probe)
            return int(vals.get("outputs", 0)) >= 1 and vals.get("error.bad_compressed", "").startswith("3x")

        assert probe.wait_for(counted, 20), _foresight_diag(probe)
        assert _foresight_diag(probe)["image_transport"] == "compressed"
        assert fore.alive() and fore.interrupt(30) == 0
        assert "Traceback" not in fore.log_text()
    finally:
        probe.close()
        fore.kill()
        if bridge is not None:
            bridge.kill()
