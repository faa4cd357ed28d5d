"""Tests of codealign_ros.models.warp (BEV feature warping)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from codealign_ros.config.grid import BevGrid
from codealign_ros.config.profiles import load_profile
from codealign_ros.models.warp import (normalized_affine, relative_transform,
                                       warp_features, warp_with_theta)

GRID = BevGrid(-40.0, -40.0, 100, 100, 0.8)


def pose(x: float = 0.0, y: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    """4x4 world pose with a yaw rotation."""
    t = np.eye(4)
    c, s = math.cos(yaw), math.sin(yaw)
    t[:2, :2] = [[c, -s], [s, c]]
    t[:2, 3] = [x, y]
    return t


def one_hot(grid: BevGrid, row: int, col: int, channels: int = 2) -> torch.Tensor:
    f = torch.zeros(1, channels, grid.height, grid.width)
    f[:, :, row, col] = 1.0
    return f


def argmax_cell(f: torch.Tensor) -> tuple[int, int]:
    idx = int(f[0, 0].argmax())
    return divmod(idx, f.shape[-1])


def test_identity_returns_input() -> None:
    f = torch.rand(2, 3, 20, 30)
    g = BevGrid(-12.0, -8.0, 30, 20, 0.8)
    out = warp_features(f, relative_transform(np.eye(4), np.eye(4)).expand(2, 4, 4), g)
    assert torch.allclose(out, f, atol=1e-5)


def test_relative_transform_batch_numpy_and_torch() -> None:
    ego, agent = pose(3, 4, 0.5), pose(-1, 2, -0.3)
    t = relative_transform(ego, torch.tensor(agent))
    assert t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), np.linalg.inv(ego) @ agent, atol=1e-5)
    tb = relative_transform(np.stack([ego, ego]), np.stack([agent, agent]))
    assert tb.shape == (2, 4, 4)


@pytest.mark.parametrize("grid", [GRID, BevGrid(-20.0, -40.0, 100, 100, 0.8),
                                  BevGrid(-51.2, -25.6, 128, 64, 0.8)])
def test_shift_x_moves_columns(grid: BevGrid) -> None:
    t = relative_transform(pose(), pose(x=8.0))
    out = warp_features(one_hot(grid, 30, 40), t, grid)
    assert argmax_cell(out) == (30, 50)
    assert out[0, 0, 30, 50] == pytest.approx(1.0, abs=1e-5)
    assert float(out.sum()) == pytest.approx(2.0, abs=1e-4)


@pytest.mark.parametrize("grid", [GRID, BevGrid(-40.0, -10.0, 100, 50, 0.8)])
def test_shift_y_moves_rows(grid: BevGrid) -> None:
    t = relative_transform(pose(), pose(y=-8.0))
    out = warp_features(one_hot(grid, 30, 40), t, grid)
    assert argmax_cell(out) == (20, 40)
    assert out[0, 0, 20, 40] == pytest.approx(1.0, abs=1e-5)


def test_ego_pose_enters_inverted() -> None:
    # Ego 8 m ahead of a static agent: objects appear 10 columns further back.
    out = warp_features(one_hot(GRID, 30, 40), relative_transform(pose(x=8.0), pose()), GRID)
    assert argmax_cell(out) == (30, 30)


def test_yaw_90_rotates() -> None:
    # Square grid of 10 x 10 one-metre cells centred on the sensor; agent yawed +90 deg.
    # Agent cell (r=1, c=6): centre (x, y) = (1.5, -3.5); ego: (-y, x) = (3.5, 1.5) -> (6, 8).
    g = BevGrid(-5.0, -5.0, 10, 10, 1.0)
    out = warp_features(one_hot(g, 1, 6), relative_transform(pose(), pose(yaw=math.pi / 2)), g)
    assert argmax_cell(out) == (6, 8)
    assert out[0, 0, 6, 8] == pytest.approx(1.0, abs=1e-5)


def test_same_theta_at_coarser_level() -> None:
    t = relative_transform(pose(), pose(x=8.0))
    coarse = GRID.scaled(2)
    assert coarse == BevGrid(-40.0, -40.0, 50, 50, 1.6)
    theta = normalized_affine(t, GRID)
    assert torch.allclose(theta, normalized_affine(t, coarse))
    out = warp_with_theta(one_hot(coarse, 10, 20), theta)
    assert argmax_cell(out) == (10, 25)


def test_matches_torch_affine_grid() -> None:
    f = torch.rand(2, 3, 16, 24)
    theta = normalized_affine(relative_transform(np.stack([pose(), pose(1, 2, 0.2)]),
                                                 np.stack([pose(3, -1, 0.7), pose(-2, 0, 1)])),
                              BevGrid(-10.0, -4.0, 24, 16, 0.5))
    ref = F.grid_sample(f, F.affine_grid(theta, list(f.shape), align_corners=False),
                        align_corners=False)
    assert torch.allclose(warp_with_theta(f, theta), ref, atol=1e-5)


def test_round_trip_restores_interior() -> None:
    a, b = pose(10.0, 5.0, 0.3), pose(10.0 + 4.0 * math.cos(0.3), 5.0 + 4.0 * math.sin(0.3),
                                      0.3 + math.pi / 2)
    f = torch.rand(1, 4, 40, 40)
    g = BevGrid(-16.0, -16.0, 40, 40, 0.8)
    back = warp_features(warp_features(f, relative_transform(b, a), g),
                         relative_transform(a, b), g)
    assert torch.allclose(back[..., 8:32, 8:32], f[..., 8:32, 8:32], atol=1e-4)


def test_gradients_flow() -> None:
    f = torch.rand(1, 2, 10, 10, requires_grad=True)
    warp_features(f, relative_transform(pose(), pose(0.5, 0.3, 0.1)),
                  BevGrid(-5.0, -5.0, 10, 10, 1.0)).sum().backward()
    assert f.grad is not None and float(f.grad.abs().sum()) > 0


def test_onnx_export_matches(tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")

    class Warp(torch.nn.Module):
        def forward(self, features: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
            return warp_with_theta(features, theta)

    f = torch.rand(2, 3, 16, 24)
    theta = normalized_affine(relative_transform(np.stack([pose(), pose()]),
                                                 np.stack([pose(2, 1, 0.4), pose(-3, 0, -1)])),
                              BevGrid(-8.0, -4.0, 24, 16, 0.5))
    path = tmp_path / "warp.onnx"
    torch.onnx.export(Warp(), (f, theta), str(path), opset_version=17, dynamo=False,
                      input_names=["features", "theta"], output_names=["out"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(None, {"features": f.numpy(), "theta": theta.numpy()})
    np.testing.assert_allclose(got, Warp()(f, theta).numpy(), atol=1e-5)


def test_from_config() -> None:
    assert load_profile("dairv2x").grid == BevGrid(-102.4, -51.2, 256, 128, 0.8)
