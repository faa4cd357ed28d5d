"""Tests of the pyramid fusion, anchor head, post-processing and DetectionBackend (mini profile)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from codealign_ros.core.metrics import bev_iou_matrix
from codealign_ros.models.detector import DetectionBackend
from codealign_ros.models.head import postprocess
from codealign_ros.config.profiles import load_profile
from codealign_ros.models.warp import normalized_affine, relative_transform

PROFILE = load_profile("mini")
GRID = PROFILE.grid
C = PROFILE.channels



def pose(x: float = 0.0, y: float = 0.0, yaw: float = 0.0) -> np.ndarray:
    t = np.eye(4)
    t[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    t[:2, 3] = [x, y]
    return t


def theta_of(*poses: np.ndarray) -> torch.Tensor:
    """Theta of each agent pose relative to an ego at the origin."""
    return torch.cat([normalized_affine(relative_transform(np.eye(4), p), GRID) for p in poses])


@pytest.fixture(scope="module")
def backend() -> DetectionBackend:
    torch.manual_seed(0)
    return DetectionBackend("mini").eval()


def feats(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, C, GRID.height, GRID.width, generator=g)


GT = [np.array([[5.0, 3.0, -1.0, 4.2, 1.8, 1.5, 0.3], [-10.0, 8.0, -0.9, 3.9, 1.6, 1.6, -2.0]]),
      np.array([[12.0, -6.0, -1.0, 4.5, 1.9, 1.7, 1.6]])]


def test_shapes_and_every_parameter_gets_gradient() -> None:
    torch.manual_seed(1)
    model = DetectionBackend("mini").train()
    th = theta_of(pose(), pose(), pose(4.0, -2.0, 0.4))
    out = model(feats(3), th, torch.tensor([0, 1, 1]), batch=2)
    a, h, w = model.num_anchors, GRID.height, GRID.width
    assert out["cls"].shape == (2, a, h, w) and a == 2
    assert out["reg"].shape == (2, 7 * a, h, w) and out["dir"].shape == (2, 2 * a, h, w)
    assert [tuple(o.shape) for o in out["occupancy"]] == [(3, 1, h, w), (3, 1, h // 2, w // 2),
                                                          (3, 1, h // 4, w // 4)]
    total, parts = model.loss(out, GT)
    assert set(parts) == {"cls", "reg", "dir", "occ"} and torch.isfinite(total)
    total.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_single_agent_gets_weight_one(backend: DetectionBackend) -> None:
    x = feats(1)
    with torch.no_grad():
        fused, _ = backend.fusion.fuse_levels(x, theta_of(pose()))
        level = x
        for stage, f in zip(backend.fusion.stages, fused):
            level = stage(level)
            torch.testing.assert_close(f, level, atol=1e-5, rtol=1e-4)


def test_identical_agents_equal_one_agent(backend: DetectionBackend) -> None:
    x = feats(1)
    with torch.no_grad():
        one, _ = backend.fusion.fuse_levels(x, theta_of(pose()))
        two, _ = backend.fusion.fuse_levels(x.expand(2, -1, -1, -1), theta_of(pose(), pose()))
    for a, b in zip(one, two):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_samples_are_fused_separately(backend: DetectionBackend) -> None:
    x, th = feats(3), theta_of(pose(), pose(), pose(6.0, 2.0, 0.5))
    with torch.no_grad():
        both = backend(x, th, torch.tensor([0, 1, 1]), batch=2)
        first = backend(x[:1], th[:1])
        second = backend(x[1:], th[1:])
    torch.testing.assert_close(both["cls"][:1], first["cls"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(both["reg"][1:], second["reg"], atol=1e-4, rtol=1e-4)


def test_out_of_view_agent_gets_no_weight(backend: DetectionBackend) -> None:
    x = feats(2)
    far = pose(x=500.0)  # warps entirely off the ego grid
    with torch.no_grad():
        alone, _ = backend.fusion.fuse_levels(x[:1], theta_of(pose()))
        with_far, _ = backend.fusion.fuse_levels(x, theta_of(pose(), far))
    for a, b in zip(alone, with_far):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_all_zero_peer_leaves_the_ego_as_alone(backend: DetectionBackend) -> None:
    x = feats(3)
    x[1:] = 0.0  # two peers that carry nothing (blank maps)
    th = theta_of(pose(), pose(3.0, 1.0, 0.2), pose(-4.0, 2.0, -0.3))
    with torch.no_grad():
        alone = backend(x[:1], th[:1])
        with_zero = backend(x, th)
    for key in ("cls", "reg", "dir"):
        torch.testing.assert_close(with_zero[key], alone[key], atol=1e-5, rtol=1e-5)


def test_zero_cells_of_a_peer_get_no_weight(backend: DetectionBackend) -> None:
    x = feats(2, seed=3)
    x[1, :, :, : GRID.width // 2] = 0.0  # the peer has nothing in the left half
    with torch.no_grad():
        alone, _ = backend.fusion.fuse_levels(x[:1], theta_of(pose()))
        both, _ = backend.fusion.fuse_levels(x, theta_of(pose(), pose()))
    for a, b, stride in zip(alone, both, backend.fusion.level_strides):
        cols = GRID.width // 2 // stride - 1  # clear of the peer's half at this level
        torch.testing.assert_close(a[..., :cols], b[..., :cols], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(a[..., -cols:], b[..., -cols:], atol=1e-3)


def _cell(x: float, y: float) -> tuple[int, int]:
    return (int((y - GRID.y_min) // GRID.resolution), int((x - GRID.x_min) // GRID.resolution))


def _centre(r: int, c: int) -> tuple[float, float]:
    return (GRID.x_min + (c + 0.5) * GRID.resolution, GRID.y_min + (r + 0.5) * GRID.resolution)


@pytest.mark.parametrize("agent_pose", [(8.0, 0.0, 0.0), (-4.0, 6.4, 0.0),
                                        (0.0, 0.0, math.pi / 2), (3.2, -1.6, math.pi)])
def test_blob_lands_at_ego_cells(agent_pose: tuple[float, float, float]) -> None:
    torch.manual_seed(2)
    model = DetectionBackend("mini").eval()
    r, c = 30, 22  # blob cell in the agent's frame
    ax, ay = _centre(r, c)
    px, py, yaw = agent_pose
    ex = px + math.cos(yaw) * ax - math.sin(yaw) * ay
    ey = py + math.sin(yaw) * ax + math.cos(yaw) * ay
    er, ec = _cell(ex, ey)
    x = torch.zeros(2, C, GRID.height, GRID.width)
    base = x.clone()
    x[1, :, r, c] = 5.0
    th = theta_of(pose(), pose(*agent_pose))
    with torch.no_grad():
        for blk in model.fusion.stages[0]:  # level-0 stage -> identity on non-negative input
            blk.body[-1].weight.zero_()
        fused, _ = model.fusion.fuse_levels(x, th)
        level0 = fused[0][0].sum(0)
        assert divmod(int(level0.argmax()), GRID.width) == (er, ec)
        assert float(level0[er, ec]) > 0.4 * 5.0 * C  # weight ~1/2, no bilinear smearing
        # Every level: the response to the blob is centred at the blob's ego position.
        ref, _ = model.fusion.fuse_levels(base, th)
        for s, f, g in zip(model.fusion.level_strides, fused, ref):
            diff = (f - g)[0].abs().sum(0)
            rows, cols = torch.meshgrid(torch.arange(diff.shape[0]), torch.arange(diff.shape[1]),
                                        indexing="ij")
            cr = float((diff * rows).sum() / diff.sum())
            cc = float((diff * cols).sum() / diff.sum())
            assert abs(cr - ((er + 0.5) / s - 0.5)) < 1.0 and abs(cc - ((ec + 0.5) / s - 0.5)) < 1.0


def test_bad_inputs_raise(backend: DetectionBackend) -> None:
    x, th = feats(2), theta_of(pose(), pose())
    with pytest.raises(ValueError):
        backend(x, th[:1])
    with pytest.raises(ValueError):
        backend(x, th, torch.tensor([0, 2]), batch=2)
    with pytest.raises(ValueError):
        backend(x, th, None, batch=2)
    with pytest.raises(ValueError):
        backend(x[:, :, :32], th)
    with pytest.raises(ValueError):
        backend(x[:, :8], th)
    with pytest.raises(ValueError):
        backend.loss(backend(x, th), GT)  # two GT arrays for one sample


def _perfect_outputs(model: DetectionBackend, gt: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """Head outputs that encode the targets exactly (logit +8 on positives, -8 elsewhere)."""
    t = model.targets(gt)
    h, w, a = GRID.height, GRID.width, model.num_anchors
    b = len(gt)
    cls = torch.where(t["labels"] == 1, 8.0, -8.0).reshape(b, h, w, a).permute(0, 3, 1, 2)
    reg = t["reg"].reshape(b, h, w, a * 7).permute(0, 3, 1, 2)
    dirs = torch.nn.functional.one_hot(t["dir"], 2).float() * 8.0
    return {"cls": cls, "reg": reg, "dir": dirs.reshape(b, h, w, a * 2).permute(0, 3, 1, 2),
            "labels": t["labels"]}


def test_postprocess_recovers_gt_and_nms_removes_duplicates(backend: DetectionBackend) -> None:
    gt = [np.array([[5.0, 3.0, -1.0, 4.2, 1.8, 1.5, 0.3], [-10.0, 8.0, -0.9, 3.9, 1.6, 1.6, -2.0],
                    [0.0, -15.0, -1.1, 4.0, 1.7, 1.5, 2.8], [18.0, 12.0, -1.0, 3.9, 1.6, 1.5, -0.8],
                    [6.8, 14.8, -1.0, 3.9, 1.6, 1.56, 0.0]]),  # on an anchor: 3 positives
          np.array([[12.0, -6.0, -1.0, 4.5, 1.9, 1.7, 1.6]])]
    out = _perfect_outputs(backend, gt)
    assert int((out["labels"][0] == 1).sum()) > len(gt[0])  # duplicates exist before NMS
    dets = backend.detect(out)
    assert len(dets) == 2
    for (boxes, scores), g in zip(dets, gt):
        assert boxes.shape == (len(g), 7) and scores.shape == (len(g),)
        iou = bev_iou_matrix(boxes.numpy(), g)
        assert np.all(iou.max(0) > 0.99)
        match = iou.argmax(0)
        dyaw = np.abs(np.angle(np.exp(1j * (boxes.numpy()[match, 6] - g[:, 6]))))
        assert np.all(dyaw < 1e-4)  # direction corrected, not just modulo pi
        np.testing.assert_allclose(boxes.numpy()[match, 2:6], g[:, 2:6], atol=1e-4)


def test_postprocess_thresholds_and_max_boxes(backend: DetectionBackend) -> None:
    h, w, a = GRID.height, GRID.width, backend.num_anchors
    cls = torch.full((1, a, h, w), -8.0)
    cls[0, 0, 10:20:3, 10:50:3] = 3.0  # well separated anchors (2.4 m apart, l 3.9 -> overlap)
    cls[0, 0, 40, 40] = 4.0
    reg = torch.zeros(1, 7 * a, h, w)
    dirs = torch.zeros(1, 2 * a, h, w)
    post = {"score": 0.5, "nms_iou": 0.15, "max_boxes": 3}
    (boxes, scores), = postprocess(cls, reg, dirs, backend.anchors, post)
    assert len(boxes) == 3 and torch.all(scores[:-1] >= scores[1:])
    assert scores[0] == pytest.approx(torch.sigmoid(torch.tensor(4.0)).item())
    post = {"score": 0.99, "nms_iou": 0.15, "max_boxes": 150}
    (boxes, _), = postprocess(cls, reg, dirs, backend.anchors, post)
    assert len(boxes) == 0


def test_onnx_export_matches_torch(backend: DetectionBackend, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    x = feats(3, seed=5)
    th = theta_of(pose(), pose(6.0, -3.0, 0.7), pose(-9.0, 4.0, -2.0))
    module = backend.export_module().eval()
    path = tmp_path / "backend.onnx"
    torch.onnx.export(module, (x, th), str(path), dynamo=False, opset_version=17,
                      input_names=["features", "theta"], output_names=["cls", "reg", "dir"],
                      dynamic_axes={"features": {0: "agents"}, "theta": {0: "agents"}})
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for n in (3, 2):
        with torch.no_grad():
            ref = module(x[:n], th[:n])
        got = sess.run(None, {"features": x[:n].numpy(), "theta": th[:n].numpy()})
        for r, g in zip(ref, got):
            np.testing.assert_allclose(g, r.numpy(), atol=2e-4, rtol=1e-3)


def test_opv2v_parameter_count() -> None:
    model = DetectionBackend("opv2v")
    head = model.head
    assert (head.cls.out_channels, head.reg.out_channels, head.dir.out_channels) == (2, 14, 4)
    assert head.cls.in_channels == 256 and model.anchors.shape == (256, 256, 2, 7)
    total = sum(p.numel() for p in model.parameters())
    fusion = sum(p.numel() for p in model.fusion.parameters())
    print(f"opv2v DetectionBackend parameters: {total:,} (fusion {fusion:,}, "
          f"head {total - fusion:,})")
    assert total - fusion == 256 * 20 + 20
