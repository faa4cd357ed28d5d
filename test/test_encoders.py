"""Modality encoders m1..m5 (mini profile): shapes, gradients, scatter and frustum geometry,
ONNX export parity, inputs and collation, opv2v-scale parameter counts."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from codealign_ros import config
from codealign_ros.data.types import AgentFrame, CameraFrame
from codealign_ros.models.encoders import Encoder, build_encoder
from codealign_ros.models.encoders.bev_backbone import BevBackbone
from codealign_ros.models.encoders.image_backbones import EfficientNet, ResNet
from codealign_ros.models.encoders.inputs import (IMAGENET_MEAN, IMAGENET_STD, camera_depths,
                                                  collate, encoder_inputs)
from codealign_ros.models.encoders.lss import Lss, LssEfficientNet, LssResNet, lid_edges
from codealign_ros.models.encoders.pointpillars import PointPillars, VfeLayer
from codealign_ros.models.encoders.second import PlaneConv3d
from codealign_ros.config.profiles import Profile, load_profile

MODALITIES = ["m1", "m2", "m3", "m4", "m5"]
W, H = 160, 120


@pytest.fixture(scope="module")
def mini() -> Profile:
    return load_profile("mini")


def camera_pose(x: float, y: float, z: float, yaw_deg: float) -> np.ndarray:
    """Camera (OpenCV axes: x right, y down, z forward) -> LiDAR of a level camera."""
    yaw = math.radians(yaw_deg)
    forward = np.array([math.cos(yaw), math.sin(yaw), 0.0])
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    pose = np.eye(4)
    pose[:3, :3] = np.column_stack([right, [0.0, 0.0, -1.0], forward])
    pose[:3, 3] = [x, y, z]
    return pose


def make_agent(seed: int, points: int = 300, size: tuple[int, int] = (W, H),
               name: str = "cav_1") -> AgentFrame:
    """A few hundred points (some out of range / NaN) and 4 random cameras around the car."""
    rng = np.random.default_rng(seed)
    pts = np.column_stack([rng.uniform(-30, 30, (points, 2)), rng.uniform(-3.5, 1.5, points),
                           rng.uniform(0, 1, points)]).astype(np.float32)
    pts[0, 0] = np.nan
    f = 0.5 * size[0] / math.tan(math.radians(45))
    k = np.array([[f, 0.0, size[0] / 2], [0.0, f, size[1] / 2], [0.0, 0.0, 1.0]])
    cams = [CameraFrame(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8), k,
                        np.linalg.inv(camera_pose(x, y, -0.2, yaw)),
                        rng.uniform(0, 40, (size[1], size[0])).astype(np.float32))
            for x, y, yaw in [(1.0, 0.0, 0.0), (0.0, -0.6, -90.0), (0.0, 0.6, 90.0),
                              (-1.2, 0.0, 180.0)]]
    return AgentFrame(name, pts, np.eye(4), cams)


def batch_inputs(modality: str, profile: Profile, batch: int = 2) -> dict[str, torch.Tensor]:
    return collate([encoder_inputs(modality, make_agent(10 + b, name=f"cav_{b}"), profile)
                    for b in range(batch)])


def build(modality: str, profile: Profile) -> Encoder:
    torch.manual_seed(0)
    return build_encoder(modality, profile)


# -- registry and shapes --------------------------------------------------------------------

@pytest.mark.parametrize("modality", MODALITIES)
def test_build_follows_modalities_yaml(modality: str, mini: Profile) -> None:
    spec = config.lookup("modalities", "modalities", modality)
    enc = build(modality, mini)
    assert enc.kind == spec["encoder"] and enc.sensor == spec["sensor"]
    assert set(enc.example_inputs(1)) == set(enc.input_names)


def test_unknown_modality_and_ambiguous_sensor(mini: Profile) -> None:
    with pytest.raises(ValueError, match="unknown modality"):
        build_encoder("m99", mini)
    with pytest.raises(ValueError, match="ambiguous"):
        encoder_inputs("lidar", make_agent(0), mini)


@pytest.mark.parametrize("modality", MODALITIES)
def test_output_shape_on_the_exchanged_grid(modality: str, mini: Profile) -> None:
    enc = build(modality, mini).eval()
    with torch.no_grad():
        out = enc(**batch_inputs(modality, mini))
    grid = mini.grid
    assert out.shape == (2, mini.channels, grid.height, grid.width) == (2, 32, 64, 64)
    assert enc.output_shape == tuple(out.shape[1:]) and torch.isfinite(out).all()


@pytest.mark.parametrize("modality", MODALITIES)
def test_gradient_reaches_every_parameter(modality: str, mini: Profile) -> None:
    enc = build(modality, mini).train()
    out = enc(**batch_inputs(modality, mini))
    weights = torch.randn(out.shape[1:], generator=torch.Generator().manual_seed(1))
    (out * weights).sum().backward()
    missing = [name for name, p in enc.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, f"no gradient: {missing}"


# -- LiDAR scatter ---------------------------------------------------------------------------

def single_point_inputs(profile: Profile, cells: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
    """One point per agent at the same in-cell offset of pillar cell (col, row)."""
    r, size = profile.lidar_range, profile["pillar"]["voxel_size"]
    agents = []
    for b, (col, row) in enumerate(cells):
        pts = np.array([[r[0] + (col + 0.3) * size[0], r[1] + (row + 0.6) * size[1], -1.2, 0.5]],
                       np.float32)
        agents.append(encoder_inputs("pointpillars", AgentFrame(f"a{b}", pts, np.eye(4)), profile))
    return collate(agents)


def active_cells(image: torch.Tensor) -> list[tuple[int, int, int]]:
    """(b, row, col) of cells with any non-zero channel."""
    return [tuple(v) for v in (image.abs().sum(dim=1) > 0).nonzero().tolist()]


def test_pillar_scatter_moves_with_the_point(mini: Profile) -> None:
    enc = build("m1", mini).eval()
    assert isinstance(enc, PointPillars)
    (c0, r0), (dc, dr) = (17, 40), (5, -3)
    with torch.no_grad():
        img = enc.pseudo_image(**single_point_inputs(mini, [(c0, r0), (c0 + dc, r0 + dr)]))
    assert img.shape == (2, 32, 128, 128)
    assert active_cells(img) == [(0, r0, c0), (1, r0 + dr, c0 + dc)]


def test_empty_agent_keeps_its_batch_slot(mini: Profile) -> None:
    enc = build("m1", mini).eval()
    empty = AgentFrame("empty", np.zeros((0, 4), np.float32), np.eye(4))
    items = [encoder_inputs("m1", make_agent(1), mini), encoder_inputs("m1", empty, mini)]
    batch = collate(items)
    with torch.no_grad():
        img = enc.pseudo_image(**batch)
        out = enc(**batch)
    assert img.shape[0] == out.shape[0] == 2 and not img[1].any() and img[0].any()


@pytest.mark.parametrize("modality", ["m2", "m3"])
def test_dense_voxel_grid_placement(modality: str, mini: Profile) -> None:
    enc = build(modality, mini)
    feats = torch.arange(1.0, 7.0).reshape(3, 2)
    top = mini.voxel_grid("voxel3d")[2] - 1  # the highest z plane (4 planes of 1 m at mini)
    coords = torch.tensor([[0, 1, 2, 3], [1, top, 127, 0], [1, 0, 5, 6]], dtype=torch.int32)
    grid = enc.dense_grid(feats, coords).reshape(2, enc.nz, 2, enc.ny, enc.nx)  # z planes
    assert grid.shape == (2, top + 1, 2, 128, 128) and top >= 1
    assert grid[0, 1, :, 2, 3].tolist() == [1.0, 2.0] and grid[1, top, :, 127, 0].tolist() == [3, 4]
    assert grid[1, 0, :, 5, 6].tolist() == [5.0, 6.0] and grid.abs().sum() == 21.0


@pytest.mark.parametrize("nz, stride", [(8, (1, 1)), (8, (2, 2)), (5, (2, 1)), (1, (1, 2))])
def test_plane_conv_equals_conv3d(nz: int, stride: tuple[int, int]) -> None:
    torch.manual_seed(0)
    conv = PlaneConv3d(3, 4, nz, stride)
    x = torch.randn(2, 3, nz, 9, 10)
    expected = F.conv3d(x, conv.weight, stride=(stride[0], stride[1], stride[1]), padding=1)
    planes = x.permute(0, 2, 1, 3, 4).reshape(2 * nz, 3, 9, 10)
    got = conv(planes).reshape(2, conv.out_nz, 4, *expected.shape[-2:]).permute(0, 2, 1, 3, 4)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


# -- LSS geometry and depth -----------------------------------------------------------------

def test_lid_depth_bins(mini: Profile) -> None:
    depth = mini["camera"]["depth"]
    edges = lid_edges(depth["min"], depth["max"], depth["bins"])
    widths = edges.diff()
    assert len(edges) == depth["bins"] + 1 and (widths > 0).all() and (widths.diff() > 0).all()
    assert edges[0].item() == pytest.approx(depth["min"]) and edges[-1].item() == pytest.approx(
        depth["max"])


def lss_with_camera_range(profile: Profile, camera_range: float) -> Lss:
    spec = dict(profile.spec, camera=dict(profile["camera"], camera_range=camera_range))
    torch.manual_seed(0)
    return LssResNet(Profile(profile.name, spec), num_cameras=1).eval()


@pytest.mark.parametrize("yaw", [0.0, 90.0])
def test_lss_point_ahead_of_camera_lands_in_its_cell(yaw: float, mini: Profile) -> None:
    enc = lss_with_camera_range(mini, 12.8)  # camera BEV zero-padded inside the LiDAR grid
    stride = enc.backbone.stride
    h, w = enc.backbone.output_size(H, W)
    row, col = 7, 10
    k = torch.tensor([[[[80.0, 0.0, (col + 0.5) * stride], [0.0, 80.0, (row + 0.5) * stride],
                        [0.0, 0.0, 1.0]]]])
    pose = torch.from_numpy(camera_pose(1.0, 0.2, -0.2, yaw)).float()[None, None]
    points = enc.frustum(k, pose)
    assert points.shape == (1, 1, enc.bins, h * w, 3)
    forward = np.array([math.cos(math.radians(yaw)), math.sin(math.radians(yaw)), 0.0])
    r, cell = mini.lidar_range, mini["pillar"]["voxel_size"][0]
    hits = 0
    for i, d in enumerate(enc.depth_values.tolist()):
        where = np.array([1.0, 0.2, -0.2]) + d * forward
        np.testing.assert_allclose(points[0, 0, i, row * w + col].numpy(), where, atol=1e-4)
        fx, fy = (where[0] - r[0]) / cell, (where[1] - r[1]) / cell
        if min(fx % 1, fy % 1, 1 - fx % 1, 1 - fy % 1) < 0.01:
            continue  # too close to a cell edge for a float32 check
        volume = torch.zeros(1, 1, enc.bins, h * w, enc.context)
        volume[0, 0, i, row * w + col] = 1.0
        canvas = enc.splat(volume, points)
        inside = abs(where[0]) < 12.8 and abs(where[1]) < 12.8
        expected = [(0, int(fy), int(fx))] if inside else []
        assert active_cells(canvas) == expected, f"bin {i} at depth {d:.2f}"
        hits += inside
    assert hits >= 5


def test_lss_frustum_off_axis_pixels(mini: Profile) -> None:
    enc = build("m4", mini)
    stride = enc.backbone.stride
    h, w = enc.backbone.output_size(H, W)
    fx, fy, cx, cy = 70.0, 75.0, 81.0, 57.0
    k = torch.tensor([[[[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]]]])
    pose = camera_pose(1.0, 0.0, -0.2, 0.0)  # front camera
    points = enc.frustum(k, torch.from_numpy(pose).float()[None, None])[0, 0]
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    u, v = (cols.ravel() + 0.5) * stride, (rows.ravel() + 0.5) * stride
    for i, d in enumerate(enc.depth_values.tolist()):
        cam = np.stack([(u - cx) / fx * d, (v - cy) / fy * d, np.full(u.shape, d), np.ones(u.shape)])
        np.testing.assert_allclose(points[i].numpy(), (pose @ cam)[:3].T, rtol=1e-5, atol=1e-4)
    right_low = points[0, (h - 1) * w + w - 1]  # bottom-right cell: right of and below the axis
    assert right_low[1] < 0.0 and right_low[2] < -0.2


def test_lss_depth_loss(mini: Profile) -> None:
    enc = build("m4", mini).train()
    assert isinstance(enc, Lss)
    out = enc(**batch_inputs("m4", mini, batch=1))
    assert enc.last_depth.shape == (1, 4, enc.bins, 15, 20)
    torch.testing.assert_close(enc.last_depth.sum(dim=2), torch.ones(1, 4, 15, 20))
    gt = torch.full((1, 4, H, W), 10.0)
    gt[:, :, :8, :8] = 0.0  # top-left cell: no depth -> ignored
    targets = enc.depth_targets(gt)
    expected = int(torch.bucketize(torch.tensor(10.0), enc.depth_edges, right=True)) - 1
    assert targets[0, 0, 0, 0] == -1 and (targets[..., 1:] == expected).all()
    loss = enc.depth_loss(gt)
    assert torch.isfinite(loss) and loss > 0
    (loss + out.sum() * 0).backward()
    assert enc.head.weight.grad.abs().sum() > 0
    assert enc.depth_loss(torch.zeros(1, 4, H, W)).item() == 0.0


def test_vfe_layer_eval_folds_batchnorm_exactly() -> None:
    torch.manual_seed(0)
    layer = VfeLayer(10, 32, concat=True)
    x, mask = torch.randn(50, 8, 10) * 3 + 1, (torch.rand(50, 8) > 0.3).float()
    layer.train()(x, mask)  # running statistics away from (0, 1)
    with torch.no_grad():
        layer.bn.weight.uniform_(0.5, 2.0)
        layer.bn.bias.uniform_(-1.0, 1.0)
    layer.eval()
    with torch.no_grad():
        got, agg = layer(x, mask)
        bn = layer.bn
        ref = ((layer.linear(x) - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)
               * bn.weight + bn.bias).relu() * mask[..., None]
    np.testing.assert_allclose(got[..., :16].numpy(), ref.numpy(), atol=1e-5)
    np.testing.assert_allclose(agg.numpy(), ref.max(dim=1).values.numpy(), atol=1e-5)
    assert not torch.allclose(ref, layer.linear(x).relu() * mask[..., None])  # BN mattered


# -- ONNX ------------------------------------------------------------------------------------

@pytest.mark.parametrize("modality", MODALITIES)
def test_onnx_export_matches_pytorch(modality: str, mini: Profile, tmp_path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")
    enc = build(modality, mini)
    inputs = batch_inputs(modality, mini)
    with torch.no_grad():
        enc.train()(**inputs)  # non-trivial BN running statistics
        enc.eval()
        example = enc.example_inputs(1)
        path = tmp_path / f"{modality}.onnx"
        torch.onnx.export(enc, tuple(example[n] for n in enc.input_names), str(path),
                          dynamo=False, opset_version=17, input_names=enc.input_names,
                          output_names=[enc.output_name], dynamic_axes=enc.dynamic_axes())
        expected = enc(**inputs).numpy()  # batch 2 through a graph traced at batch 1
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    scale = max(1.0, float(np.abs(expected).max()))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * scale)
    onnx = pytest.importorskip("onnx", reason="onnx not installed")
    ops = {n.op_type: n for n in onnx.load(str(path)).graph.node}
    assert "ScatterElements" not in ops  # the BEV scatter moves whole rows (ScatterND)
    reductions = {a.s for a in ops["ScatterND"].attribute if a.name == "reduction"}
    # the camera splat sums rays into cells; LiDAR voxels own their cell (TensorRT builds it)
    camera = config.lookup("modalities", "modalities", modality, "sensor") == "camera"
    assert reductions == ({b"add"} if camera else set())


# -- inputs ----------------------------------------------------------------------------------

def test_camera_inputs_resize_scale_intrinsics_and_normalise(mini: Profile) -> None:
    agent = make_agent(2, size=(2 * W, 2 * H))
    agent.cameras[1].image[:] = 128
    out = encoder_inputs("m5", agent, mini)
    assert out["images"].shape == (4, 3, H, W) and out["images"].dtype == np.float32
    np.testing.assert_allclose(out["intrinsics"][0][:2], agent.cameras[0].intrinsic[:2] / 2,
                               rtol=1e-6)
    np.testing.assert_allclose(out["cam_to_lidar"][2], np.linalg.inv(agent.cameras[2].extrinsic),
                               atol=1e-6)
    expected = (128 / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    np.testing.assert_allclose(out["images"][1].mean(axis=(1, 2)), expected, atol=1e-5)
    depths = camera_depths(agent, mini)
    assert depths.shape == (4, H, W)
    np.testing.assert_array_equal(depths[0], agent.cameras[0].depth[::2, ::2])  # nearest
    batch = collate([out, encoder_inputs("camera", make_agent(3), mini)])
    assert batch["images"].shape == (2, 4, 3, H, W) and batch["cam_to_lidar"].shape == (2, 4, 4, 4)


def test_wrong_camera_count_names_the_agent(mini: Profile) -> None:
    agent = make_agent(4, name="cav_77")
    agent.cameras = agent.cameras[:3]
    with pytest.raises(ValueError, match="cav_77.*3 cameras"):
        encoder_inputs("m4", agent, mini)
    agent.cameras = []
    with pytest.raises(ValueError, match="cav_77"):
        encoder_inputs("camera", agent, mini)


def test_lidar_collate_adds_batch_column(mini: Profile) -> None:
    items = [encoder_inputs("m2", make_agent(b), mini) for b in range(3)]
    batch = collate(items)
    counts = [len(d["num_points"]) for d in items]
    assert batch["coords"].shape == (sum(counts), 4)
    assert batch["coords"][:, 0].tolist() == sum(([b] * n for b, n in enumerate(counts)), [])
    np.testing.assert_array_equal(batch["coords"][:, 1:].numpy(),
                                  np.concatenate([d["coords"] for d in items]))
    assert batch["voxels"].shape[1:] == (mini["voxel3d"]["max_points"], 4)
    with pytest.raises(ValueError, match="collate"):
        collate([items[0], encoder_inputs("m4", make_agent(0), mini)])


def test_agent_with_bad_points_is_named(mini: Profile) -> None:
    agent = AgentFrame("rsu_3", np.zeros((5, 3), np.float32), np.eye(4))
    with pytest.raises(ValueError, match="rsu_3"):
        encoder_inputs("m1", agent, mini)


# -- backbones and paper-scale sizes --------------------------------------------------------

@pytest.mark.parametrize("size", [(120, 160), (121, 163)])
def test_image_backbone_output_size(size: tuple[int, int]) -> None:
    x = torch.zeros(1, 3, *size)
    for net in (ResNet("basic", [1, 1, 1], [8, 8, 8], 8, 8), EfficientNet(0.25, 0.34, 16)):
        with torch.no_grad():
            assert tuple(net.eval()(x).shape[2:]) == net.output_size(*size)
    with pytest.raises(ValueError):
        ResNet("bottleneck", [1, 1], [8, 8], 8, 16)  # two stages reach stride 8 only
    with pytest.raises(ValueError):
        BevBackbone(8, 8, blocks=1, stride=4)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_opv2v_scale_parameter_counts() -> None:
    profile = load_profile("opv2v")
    sizes = {}
    for modality in MODALITIES:
        enc = build_encoder(modality, profile)
        assert enc.output_shape == (64, 256, 256)
        sizes[modality] = count(enc)
    resnet = build_encoder("m4", profile)
    effnet = build_encoder("m5", profile)
    assert isinstance(resnet, LssResNet) and isinstance(effnet, LssEfficientNet)
    trunks = count(resnet.backbone), count(effnet.backbone)
    print("opv2v encoder parameters:", sizes, "image trunks:", trunks)
    assert 20e6 < trunks[0] < 35e6  # ResNet-101 up to layer3: ~27.5M
    assert 3e6 < trunks[1] < 4.5e6  # EfficientNet-B0 trunk without the 1280-ch head: ~3.6M
    assert resnet.backbone.out_channels == 1024 and effnet.backbone.out_channels == 320
    assert all(5e4 < sizes[m] < 2e6 for m in ("m1", "m2", "m3"))
