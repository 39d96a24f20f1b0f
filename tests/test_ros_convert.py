"""Image/CameraInfo conversion: cv_bridge conventions (encoding names, step, endianness, padding), zero copy."""
import sys

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python (rclpy) not installed: pip install -e .[ros]")
pytestmark = pytest.mark.ros

from sensor_msgs.msg import Image

from frameplan_core.errors import InputError
from frameplan_ros import convert

RNG = np.random.default_rng(0)

CASES = [
    ("rgb8", np.uint8, 3), ("bgr8", np.uint8, 3), ("rgba8", np.uint8, 4), ("bgra8", np.uint8, 4),
    ("mono8", np.uint8, 1), ("mono16", np.uint16, 1), ("16UC1", np.uint16, 1), ("32FC1", np.float32, 1),
]


def _array(dtype, channels, h=5, w=7):
    shape = (h, w) if channels == 1 else (h, w, channels)
    if dtype == np.float32:
        return RNG.normal(size=shape).astype(np.float32)
    return RNG.integers(0, np.iinfo(dtype).max, size=shape, dtype=dtype)


@pytest.mark.parametrize("encoding,dtype,channels", CASES)
def test_round_trip_and_cv_bridge_fields(encoding, dtype, channels):
    arr = _array(dtype, channels)
    msg = convert.numpy_to_image(arr, encoding, frame_id="cam")
    # cv_bridge.cv2_to_imgmsg conventions: step = bytes per (unpadded) row, host byte order, data = tobytes().
    assert msg.encoding == encoding
    assert (msg.height, msg.width) == arr.shape[:2]
    assert msg.step == arr.shape[1] * channels * np.dtype(dtype).itemsize
    assert msg.is_bigendian == (sys.byteorder == "big")
    assert bytes(msg.data) == arr.tobytes()
    assert msg.header.frame_id == "cam"
    back = convert.image_to_numpy(msg, use_cv_bridge=False)
    assert back.dtype == dtype and back.shape == arr.shape  # passthrough: (H, W) for one channel
    np.testing.assert_array_equal(back, arr)


def test_decode_is_zero_copy_for_unpadded_rows():
    arr = _array(np.uint8, 3, 48, 64)
    msg = convert.numpy_to_image(arr, "rgb8")
    out = convert.image_to_rgb(msg, use_cv_bridge=False)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))
    assert not out.flags.writeable or out.base is not None


def test_padded_rows_are_cropped():
    arr = _array(np.uint8, 3, 4, 5)
    padded = np.zeros((4, 5 * 3 + 3), np.uint8)  # 3 bytes of padding per row, as some drivers send
    padded[:, :15] = arr.reshape(4, 15)
    msg = Image(height=4, width=5, encoding="rgb8", step=18, is_bigendian=0)
    msg.data = padded.tobytes()
    np.testing.assert_array_equal(convert.image_to_numpy(msg, use_cv_bridge=False), arr)


def test_other_byte_order_is_swapped():
    depth = np.array([[1, 258], [65535, 1000]], np.uint16)
    other = ">" if sys.byteorder == "little" else "<"
    msg = Image(height=2, width=2, encoding="16UC1", step=4, is_bigendian=int(other == ">"))
    msg.data = depth.astype(np.dtype(np.uint16).newbyteorder(other)).tobytes()
    out = convert.image_to_numpy(msg, use_cv_bridge=False)
    assert out.dtype == np.uint16 and out.dtype.isnative
    np.testing.assert_array_equal(out, depth)


@pytest.mark.parametrize("encoding,order", [("bgr8", [2, 1, 0]), ("bgra8", [2, 1, 0]), ("rgba8", [0, 1, 2])])
def test_colour_encodings_become_rgb(encoding, order):
    ch = 4 if "a" in encoding else 3
    arr = _array(np.uint8, ch)
    rgb = convert.image_to_rgb(convert.numpy_to_image(arr, encoding), use_cv_bridge=False)
    np.testing.assert_array_equal(rgb, arr[:, :, order])


def test_mono8_becomes_grey_rgb():
    arr = _array(np.uint8, 1)
    rgb = convert.image_to_rgb(convert.numpy_to_image(arr, "mono8"), use_cv_bridge=False)
    assert rgb.shape == arr.shape + (3,)
    for c in range(3):
        np.testing.assert_array_equal(rgb[:, :, c], arr)


@pytest.mark.parametrize("mutate,needle", [
    (lambda m: setattr(m, "encoding", "yuv422"), "unsupported encoding"),
    (lambda m: setattr(m, "step", 10), "step 10 is smaller"),
    (lambda m: setattr(m, "height", 6), r"step\*height"),
    (lambda m: setattr(m, "data", b""), "empty image"),
    (lambda m: setattr(m, "width", 0), "empty image"),
])
def test_malformed_images_raise_input_error_naming_the_topic(mutate, needle):
    msg = convert.numpy_to_image(_array(np.uint8, 3), "rgb8")
    mutate(msg)
    with pytest.raises(InputError, match=needle) as info:
        convert.image_to_rgb(msg, "/camera/color/image_raw", use_cv_bridge=False)
    assert "/camera/color/image_raw" in str(info.value)


def test_depth_image_is_not_a_colour_image():
    msg = convert.numpy_to_image(_array(np.uint16, 1), "16UC1")
    with pytest.raises(InputError, match="not a colour image"):
        convert.image_to_rgb(msg, "cam")


def test_depth_units():
    mm = np.array([[0, 1500]], np.uint16)
    np.testing.assert_array_equal(convert.depth_to_mm(convert.numpy_to_image(mm, "16UC1")), [[0, 1500]])
    m = np.array([[0.0, 1.5]], np.float32)
    np.testing.assert_allclose(convert.depth_to_mm(convert.numpy_to_image(m, "32FC1")), [[0, 1500]])


def test_encode_refuses_wrong_shape_or_dtype():
    with pytest.raises(InputError, match="3 channel"):
        convert.numpy_to_image(np.zeros((2, 2), np.uint8), "rgb8")
    with pytest.raises(InputError, match="uint16"):
        convert.numpy_to_image(np.zeros((2, 2), np.float32), "16UC1")


def test_camera_info_round_trip():
    K = np.array([[358.6, 0, 159.5], [0, 358.6, 119.5], [0, 0, 1]])
    info = convert.K_to_camera_info(K, 320, 240, frame_id="camera_color_optical_frame")
    assert (info.width, info.height, info.distortion_model) == (320, 240, "plumb_bob")
    np.testing.assert_allclose(np.reshape(info.p, (3, 4))[:, :3], K)
    np.testing.assert_allclose(np.reshape(info.r, (3, 3)), np.eye(3))
    np.testing.assert_allclose(convert.camera_info_to_K(info), K)
    info.k = [0.0] * 9
    with pytest.raises(InputError, match="uncalibrated"):
        convert.camera_info_to_K(info, "/camera/color/camera_info")
    for bad in (float("nan"), float("inf")):  # NaN compares False with "<= 0": must not pass as calibrated
        info.k = [bad, 0.0, 159.5, 0.0, 358.6, 119.5, 0.0, 0.0, 1.0]
        with pytest.raises(InputError, match="/camera/color/camera_info: uncalibrated or invalid K"):
            convert.camera_info_to_K(info, "/camera/color/camera_info")


def test_agrees_with_system_cv_bridge_when_present():
    bridge = convert.cv_bridge_instance()
    if bridge is None:
        pytest.skip("no working ROS 2 cv_bridge in this environment (PyPI has none); conventions tested above")
    for encoding, dtype, channels in CASES:
        arr = _array(dtype, channels)
        ours, theirs = convert.numpy_to_image(arr, encoding), bridge.cv2_to_imgmsg(arr, encoding=encoding)
        assert (ours.step, ours.is_bigendian, bytes(ours.data)) == (theirs.step, theirs.is_bigendian, bytes(theirs.data))
        np.testing.assert_array_equal(convert.image_to_numpy(theirs, use_cv_bridge=False),
                                      bridge.imgmsg_to_cv2(theirs, desired_encoding="passthrough"))
