"""Trajectory drawing (red -> blue along the path), projection with intrinsics, bad input, and the inverse helper
that projects an episode's end-effector path into its head camera."""
import numpy as np
import pytest

from frameplan_core.errors import DataError, InputError
from frameplan_core.image import fit
from frameplan_core.trajectory import (
    Trajectory,
    TrajectoryClippedWarning,
    as_trajectory,
    draw_trajectory,
    ee_trajectory,
    episode_ee_trajectory,
    fit_points,
    project,
    world_to_camera,
)

# D435 as RoboTwin simulates it: 320x240, fovy 37 deg -> fx = fy ~ 358.6, principal point at the centre
K = np.array([[358.6, 0.0, 160.0], [0.0, 358.6, 120.0], [0.0, 0.0, 1.0]])


def test_colour_runs_red_to_blue_along_the_length():
    img = np.zeros((60, 200, 3), np.uint8)
    out = draw_trajectory(img, [[10, 30], [100, 30], [190, 30]], thickness=3, end_marker=False)
    assert not np.shares_memory(out, img) and img.max() == 0
    row = out[30].astype(int)
    start, mid, end = row[12], row[100], row[186]
    assert start[0] > 200 and start[2] < 40  # red at the start
    assert end[2] > 200 and end[0] < 40  # blue at the end
    assert 80 < mid[0] < 180 and 80 < mid[2] < 180  # halfway along the length: a mix
    reds = row[12:186, 0]
    assert np.all(np.diff(reds[::8]) <= 2)  # red decreases monotonically along the path
    assert out[5].max() == 0  # nothing drawn away from the path


def test_colour_follows_arc_length_not_point_index():
    img = np.zeros((60, 220, 3), np.uint8)
    # 3 points crowded at the start, then one long segment: the middle of the LENGTH is at x ~ 110
    out = draw_trajectory(img, [[10, 30], [11, 30], [12, 30], [210, 30]], thickness=3, end_marker=False)
    r, b = out[30, 110, 0], out[30, 110, 2]
    assert abs(int(r) - int(b)) < 40


def test_end_marker_is_a_blue_disc():
    img = np.zeros((100, 100, 3), np.uint8)
    out = draw_trajectory(img, [[10, 10], [70, 70]], thickness=2, end_marker=True)
    assert tuple(out[70, 70]) == (0, 0, 255)
    assert out[70, 73, 2] > 200 and out[73, 70, 2] > 200  # radius 2*thickness around the end point
    without = draw_trajectory(img, [[10, 10], [70, 70]], thickness=2, end_marker=False)
    assert without[70, 73, 2] < out[70, 73, 2]


def test_projection_of_a_known_point_hits_the_expected_pixel():
    # a point 1 m ahead, 0.1 m right, 0.05 m down in the optical frame
    uv = project([[0.1, 0.05, 1.0], [0.0, 0.0, 2.0]], K)
    np.testing.assert_allclose(uv[0], [160 + 35.86, 120 + 17.93], atol=1e-9)
    np.testing.assert_allclose(uv[1], [160, 120], atol=1e-9)
    t = Trajectory.from_camera_points([[0.1, 0.05, 1.0], [0.0, 0.0, 2.0]], K)
    img = draw_trajectory(np.zeros((240, 320, 3), np.uint8), t, thickness=1, end_marker=False)
    assert img[138, 196, 0] > 100  # the drawn start pixel


def test_world_points_with_extrinsic():
    # camera 1 m above the origin looking straight down: optical z = -world z, x = world x, y = -world y
    R = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])
    E = np.hstack([R, -R @ np.array([[0.0], [0.0], [1.0]])])
    cam = world_to_camera([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]], E)
    np.testing.assert_allclose(cam, [[0, 0, 1], [0.1, 0, 1]], atol=1e-12)
    t = ee_trajectory([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0]], E, K)
    np.testing.assert_allclose(t.points, [[160, 120], [195.86, 120]], atol=1e-9)


@pytest.mark.parametrize("points, match", [
    ([[1, 2]], "at least 2 points"),
    ([], "shape"),
    ([[1, 2], [np.nan, 3]], "NaN"),
    ([[1, 2], [np.inf, 3]], "NaN or infinite"),
    ([[1, 2, 3], [4, 5, 6]], r"shape \(N, 2\)"),
    ("not points", "expected"),
])
def test_bad_pixel_trajectories_raise(points, match):
    with pytest.raises(InputError, match=match):
        draw_trajectory(np.zeros((10, 10, 3), np.uint8), points)


def test_points_behind_the_camera_raise():
    with pytest.raises(InputError, match="behind the camera"):
        project([[0, 0, 1.0], [0, 0, -0.5]], K)
    with pytest.raises(InputError, match="behind the camera"):
        project([[0, 0, 1.0], [0.1, 0, 0.0]], K)
    with pytest.raises(InputError, match="3x3 camera matrix"):
        project([[0, 0, 1.0], [0.1, 0, 1.0]], np.eye(2))
    with pytest.raises(InputError, match="needs the camera matrix"):
        as_trajectory({"points_3d": [[0, 0, 1], [0, 0, 2]]})


def test_far_outside_points_are_clipped_with_a_warning():
    img = np.zeros((100, 100, 3), np.uint8)
    with pytest.warns(TrajectoryClippedWarning, match="far outside"):
        out = draw_trajectory(img, [[50, 50], [5000, 50]], thickness=2, end_marker=True)
    assert out[50, 99, 2] > 200  # clipped end on the right border, blue
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # slightly outside: no warning, drawn as is
        draw_trajectory(img, [[50, 50], [110, 50]])


def test_fit_points_follows_the_image_crop():
    src = np.zeros((240, 320, 3), np.uint8)
    src[100:104, 200:204] = 255  # a marker around (201.5, 101.5)
    for policy in ("center", "resize", "pad"):
        small = fit(src, 64, policy)
        p = fit_points(np.array([[201.5, 101.5], [0, 0]]), (240, 320), 64, policy)[0]
        ys, xs = np.nonzero(small[..., 0] > 60)
        assert abs(xs.mean() - p[0]) < 1.0 and abs(ys.mean() - p[1]) < 1.0, policy


def test_episode_end_effector_path_in_the_head_camera(tmp_path):
    from frameplan_core.data.episode import open_episode
    from frameplan_core.data.robotwin import EpisodeWriter

    R = np.array([[1.0, 0, 0], [0, -1.0, 0], [0, 0, -1.0]])
    E = np.hstack([R, -R @ np.array([[0.0], [0.0], [1.0]])])
    with EpisodeWriter(tmp_path, "toy", "D435", 0) as ep:
        for i in range(5):
            endpose = np.zeros(14)
            endpose[0:3] = [0.02 * i, 0.0, 0.0]  # left arm moves along +x
            endpose[7:10] = [0.0, -0.02 * i, 0.0]  # right arm along -y
            ep.add_frame({
                "observation": {"head_camera": {"rgb": np.zeros((240, 320, 3), np.uint8),
                                                "intrinsic_cv": K, "extrinsic_cv": E}},
                "joint_action": np.zeros(14), "endpose": endpose,
            })
    episode = open_episode(ep.path)
    left = episode_ee_trajectory(episode, arm="left")
    np.testing.assert_allclose(left.points[:, 0], 160 + 358.6 * 0.02 * np.arange(5), atol=1e-6)
    np.testing.assert_allclose(left.points[:, 1], 120, atol=1e-6)
    right = episode_ee_trajectory(episode, frames=[0, 4], arm="right")
    np.testing.assert_allclose(right.points, [[160, 120], [160, 120 + 358.6 * 0.08]], atol=1e-6)
    assert left.image_hw == (240, 320)
    with pytest.raises(InputError, match="arm"):
        episode_ee_trajectory(episode, arm="middle")
    with pytest.raises(DataError, match=r"toy_D435_pkl/episode0: frame 0: no observation/front_camera"):
        episode_ee_trajectory(episode, camera="front_camera")


def test_point_at_reads_the_path_evenly_in_time():
    from frameplan_core.trajectory import point_at

    pts = [[0, 0], [10, 0], [10, 40]]  # three samples evenly spaced in time, uneven in length
    assert np.allclose(point_at(pts, 0.0), [0, 0])
    assert np.allclose(point_at(pts, 0.5), [10, 0])  # the middle sample, not the middle of the arc length
    assert np.allclose(point_at(pts, 0.75), [10, 20])
    assert np.allclose(point_at(pts, 1.0), [10, 40])
    assert np.allclose(point_at(pts, 7.0), [10, 40])  # clamped


def test_time_marked_frames_put_one_disc_per_time_in_the_path_colour():
    from frameplan_core.trajectory import time_marked_frames

    base = np.zeros((64, 64, 3), np.uint8)
    out = time_marked_frames(base, [[8, 32], [56, 32]], thickness=1, n=3)
    assert len(out) == 3
    for k, img in enumerate(out):
        x = 8 + 24 * k
        assert tuple(img[32, x]) == (round(255 * (1 - k / 2)), 0, round(255 * k / 2))  # path colour at that time
        assert img[32, x + 4].min() > 100  # the white ring around it
        assert img[10, 10].max() == 0  # nothing else drawn
    with pytest.raises(InputError, match="thickness"):
        time_marked_frames(base, [[8, 32], [56, 32]], thickness=0)
