"""Vectorised voxelisation against a brute-force per-point loop, filtering and caps."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from codealign_ros.config.profiles import load_profile
from codealign_ros.models.voxelize import Voxels, grid_shape, voxelize

RANGE = (-2.0, -1.5, -1.0, 2.0, 1.5, 1.0)
SIZE = (1.0, 0.5, 1.0)


def brute_force(points: np.ndarray, lidar_range, voxel_size, max_points: int,
                max_voxels: int) -> Voxels:
    """One point at a time: voxels in order of first appearance, points in input order."""
    dims = [round((lidar_range[i + 3] - lidar_range[i]) / voxel_size[i]) for i in range(3)]
    voxels: dict[tuple[int, int, int], list[np.ndarray]] = {}
    for p in points:
        if not all(math.isfinite(float(v)) for v in p):
            continue
        cell = [math.floor((float(p[i]) - lidar_range[i]) / voxel_size[i]) for i in range(3)]
        if not all(0 <= cell[i] < dims[i] for i in range(3)):
            continue
        key = (cell[2], cell[1], cell[0])
        if key not in voxels and len(voxels) == max_voxels:
            continue
        voxels.setdefault(key, []).append(p)
    feats = np.zeros((len(voxels), max_points, 4), np.float32)
    for v, pts in enumerate(voxels.values()):
        kept = pts[:max_points]
        feats[v, :len(kept)] = np.asarray(kept, np.float32)
    coords = np.array(list(voxels), np.int32).reshape(-1, 3)
    counts = np.array([min(len(p), max_points) for p in voxels.values()], np.int32)
    return Voxels(feats, coords, counts)


def assert_same(a: Voxels, b: Voxels) -> None:
    np.testing.assert_array_equal(a.coords, b.coords)
    np.testing.assert_array_equal(a.num_points, b.num_points)
    np.testing.assert_array_equal(a.features, b.features)
    assert a.features.dtype == np.float32 and a.coords.dtype == np.int32
    assert a.num_points.dtype == np.int32


coordinate = st.one_of(st.floats(-2.5, 2.5, width=32), st.sampled_from(
    [float("nan"), float("inf"), -float("inf"), -2.0, 2.0, -1.5, 1.5, 0.0, 0.5]))


@settings(max_examples=60, deadline=None)
@given(points=hnp.arrays(np.float32, st.tuples(st.integers(0, 80), st.just(4)),
                         elements=coordinate),
       max_points=st.integers(1, 5), max_voxels=st.integers(1, 30))
def test_matches_brute_force(points: np.ndarray, max_points: int, max_voxels: int) -> None:
    got = voxelize(points, RANGE, SIZE, max_points, max_voxels)
    assert_same(got, brute_force(points, RANGE, SIZE, max_points, max_voxels))


def test_matches_brute_force_on_profile_settings() -> None:
    profile = load_profile("mini")
    spec = profile["voxel3d"]
    rng = np.random.default_rng(3)
    r = np.asarray(profile.lidar_range)
    points = np.column_stack([rng.uniform(r[:3] - 2, r[3:] + 2, (3000, 3)),
                              rng.uniform(0, 1, 3000)]).astype(np.float32)
    points[::7, :2] = points[::7, :2] * 0.01  # dense centre: voxels over max_points
    got = voxelize(points, profile.lidar_range, spec["voxel_size"], spec["max_points"], 500)
    assert len(got) == 500 and got.num_points.max() == spec["max_points"]
    assert_same(got, brute_force(points, profile.lidar_range, spec["voxel_size"],
                                 spec["max_points"], 500))


def test_large_grids_match_brute_force() -> None:
    """Grids over 65,536 cells sort int64 keys (the mini grids sort 16-bit keys)."""
    profile = load_profile("opv2v")
    spec = profile["pillar"]
    assert math.prod(grid_shape(profile.lidar_range, spec["voxel_size"])) > 1 << 16
    rng = np.random.default_rng(5)
    r = np.asarray(profile.lidar_range)
    points = np.column_stack([rng.uniform(r[:3] - 1, r[3:] + 1, (2000, 3)),
                              rng.uniform(0, 1, 2000)]).astype(np.float32)
    points[::5, :2] = np.round(points[::5, :2] / spec["voxel_size"][0]) * spec["voxel_size"][0]
    got = voxelize(points, profile.lidar_range, spec["voxel_size"], 4, 800)
    assert_same(got, brute_force(points, profile.lidar_range, spec["voxel_size"], 4, 800))


def test_range_and_non_finite_filtering() -> None:
    points = np.array([[-2.0, -1.5, -1.0, 0.1],  # lower corner: kept
                       [2.0, 0.0, 0.0, 0.2],  # x == x_max: dropped
                       [0.0, 1.5, 0.0, 0.3],  # y == y_max: dropped
                       [0.0, 0.0, -1.01, 0.4],  # below z_min: dropped
                       [np.nan, 0.0, 0.0, 0.5], [0.0, np.inf, 0.0, 0.6],
                       [0.0, 0.0, 0.0, np.nan],  # NaN intensity: dropped
                       [1.99, 1.49, 0.99, 0.7]], np.float32)  # upper cell: kept
    vox = voxelize(points, RANGE, SIZE, 4, 10)
    np.testing.assert_array_equal(vox.coords, [[0, 0, 0], [1, 5, 3]])
    np.testing.assert_array_equal(vox.num_points, [1, 1])
    np.testing.assert_allclose(vox.features[:, 0, 3], [0.1, 0.7])


def test_caps_keep_the_first_points_and_voxels() -> None:
    same_cell = np.array([[0.1 + 0.01 * i, 0.1, 0.1, i] for i in range(6)], np.float32)
    vox = voxelize(same_cell, RANGE, SIZE, 3, 10)
    assert len(vox) == 1 and vox.num_points[0] == 3
    np.testing.assert_array_equal(vox.features[0, :, 3], [0, 1, 2])
    cells = np.array([[x, 0.1, 0.1, x] for x in (1.5, -1.5, 0.5, -0.5, 1.5)], np.float32)
    vox = voxelize(cells, RANGE, SIZE, 2, 2)
    np.testing.assert_array_equal(vox.coords[:, 2], [3, 0])  # first two voxels to appear
    np.testing.assert_array_equal(vox.num_points, [2, 1])  # the later 1.5 joins its voxel


def test_empty_input() -> None:
    vox = voxelize(np.zeros((0, 4), np.float32), RANGE, SIZE, 4, 10)
    assert vox.features.shape == (0, 4, 4) and vox.coords.shape == (0, 3) and len(vox) == 0


@pytest.mark.parametrize("points", [np.zeros((5, 3)), np.zeros(4), np.zeros((2, 4, 1)),
                                    np.array([["a", "b", "c", "d"]])])
def test_wrong_point_shapes_raise(points: np.ndarray) -> None:
    with pytest.raises(ValueError, match="points"):
        voxelize(points, RANGE, SIZE, 4, 10)


@pytest.mark.parametrize("kwargs", [dict(max_points=0), dict(max_voxels=-1),
                                    dict(voxel_size=(1.0, 0.0, 1.0)),
                                    dict(voxel_size=(0.3, 0.5, 1.0)),
                                    dict(lidar_range=(0, 0, 0, 1, 1))])
def test_bad_settings_raise(kwargs: dict) -> None:
    args = dict(lidar_range=RANGE, voxel_size=SIZE, max_points=4, max_voxels=10) | kwargs
    with pytest.raises(ValueError):
        voxelize(np.zeros((3, 4), np.float32), **args)


def test_grid_shape_of_profiles() -> None:
    profile = load_profile("opv2v")
    assert grid_shape(profile.lidar_range, profile["pillar"]["voxel_size"]) == (512, 512, 1)
    assert grid_shape(profile.lidar_range, profile["voxel3d"]["voxel_size"]) == \
        profile.voxel_grid("voxel3d")
