"""m4 / m5: Lift-Splat-Shoot camera encoders (ResNet / EfficientNet image backbones).

Lift: a 1x1 head on the image features gives depth logits over linear-increasing (LID) bins
and a context vector; their outer product is a frustum of features. The frustum's LiDAR-frame
points come from the intrinsics and camera -> LiDAR transforms *inside* the model (the ONNX
graph takes calibrations as inputs). Splat: sum-pool into the LiDAR pseudo-image grid (pillar
voxel size), keeping only points within +-camera_range of the LiDAR in x and y (the camera BEV
zero-padded to the LiDAR grid) and within the z band. Then the shared BEV backbone.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from codealign_ros.models.encoders import Encoder
from codealign_ros.models.encoders.bev_backbone import BevBackbone, bev_canvas, scatter_sum
from codealign_ros.models.encoders.image_backbones import EfficientNet, ResNet
from codealign_ros.models.encoders.pointpillars import bev_stride
from codealign_ros.config.profiles import Profile

__all__ = ["CameraEncoder", "Lss", "LssEfficientNet", "LssResNet", "lid_edges", "Z_RANGE"]

# Height band (m, LiDAR frame) of frustum points kept by the splat (HEAL's LSS zbound
# [-10, 10]); a profile may override it with camera.z_range.
Z_RANGE = (-10.0, 10.0)


def lid_edges(d_min: float, d_max: float, bins: int) -> Tensor:
    """(bins + 1,) linear-increasing depth bin edges: d_min + (d_max - d_min) i(i+1)/(D(D+1))."""
    if bins < 1 or not 0 <= d_min < d_max:
        raise ValueError(f"depth bins need 0 <= min < max and bins >= 1, got {d_min}, "
                         f"{d_max}, {bins}")
    i = torch.arange(bins + 1, dtype=torch.float64)
    return (d_min + (d_max - d_min) * i * (i + 1) / (bins * (bins + 1))).to(torch.float32)


class CameraEncoder(Encoder):
    """Base of the camera encoders: images (B, N, 3, H, W) normalised, intrinsics (B, N, 3, 3)
    at that image size, cam_to_lidar (B, N, 4, 4) (camera in OpenCV axes)."""

    sensor = "camera"
    input_names = ["images", "intrinsics", "cam_to_lidar"]

    def __init__(self, profile: Profile, num_cameras: int = 4) -> None:
        super().__init__(profile)
        if num_cameras < 1:
            raise ValueError(f"{type(self).__name__}: num_cameras must be >= 1")
        self.num_cameras = num_cameras
        self.image_size = tuple(int(v) for v in profile["camera"]["image_size"])  # (W, H)

    @classmethod
    def from_profile(cls, profile: Profile, spec: dict[str, Any] | None = None) -> "Encoder":
        return cls(profile, int((spec or {}).get("cameras", 4)))

    def example_inputs(self, batch: int = 1) -> dict[str, Tensor]:
        from codealign_ros.models.encoders.inputs import synthetic_rig

        width, height = self.image_size
        gen = torch.Generator().manual_seed(0)
        k, pose = synthetic_rig(self.num_cameras, self.image_size)
        return {"images": torch.randn(batch, self.num_cameras, 3, height, width, generator=gen),
                "intrinsics": torch.from_numpy(k).float().expand(batch, -1, -1, -1).clone(),
                "cam_to_lidar": torch.from_numpy(pose).float().expand(batch, -1, -1, -1).clone()}

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        axes = {name: {0: "batch"} for name in self.input_names}
        return {**axes, self.output_name: {0: "batch"}}


class Lss(CameraEncoder):
    """Lift-Splat-Shoot over an image `backbone` with `out_channels`, `stride`, `output_size`."""

    def __init__(self, profile: Profile, backbone: nn.Module, num_cameras: int = 4) -> None:
        super().__init__(profile, num_cameras)
        cam = profile["camera"]
        depth = cam["depth"]
        self.backbone = backbone
        self.bins, self.context = int(depth["bins"]), int(cam["feature_channels"])
        self.head = nn.Conv2d(backbone.out_channels, self.bins + self.context, 1)
        edges = lid_edges(float(depth["min"]), float(depth["max"]), self.bins)
        self.register_buffer("depth_edges", edges, persistent=False)
        self.register_buffer("depth_values", (edges[:-1] + edges[1:]) / 2, persistent=False)
        self.register_buffer("pixels", self._pixel_grid(), persistent=False)
        self._set_bev_geometry(profile, cam)
        self.bev = BevBackbone(self.context, profile.channels,
                               int(profile["bev_backbone"]["blocks"]),
                               bev_stride(profile, self.nx, self.ny))
        self.last_depth_logits: Tensor | None = None

    def _pixel_grid(self) -> Tensor:
        """(h, w, 2) image coordinates (u, v) of the feature cell centres (pixel edges at ints)."""
        width, height = self.image_size
        h, w = self.backbone.output_size(height, width)
        u = (torch.arange(w, dtype=torch.float32) + 0.5) * (width / w)
        v = (torch.arange(h, dtype=torch.float32) + 0.5) * (height / h)
        vv, uu = torch.meshgrid(v, u, indexing="ij")
        return torch.stack([uu, vv], dim=-1)

    def _set_bev_geometry(self, profile: Profile, cam: dict[str, Any]) -> None:
        r = profile.lidar_range
        self.nx, self.ny, _ = profile.voxel_grid("pillar")
        self.cell = tuple(float(v) for v in profile["pillar"]["voxel_size"][:2])
        self.origin = (r[0], r[1])
        self.camera_range = float(cam["camera_range"])
        self.z_range = tuple(float(v) for v in cam.get("z_range", Z_RANGE))

    @property
    def last_depth(self) -> Tensor | None:
        """Depth distribution (B, N, D, h, w) of the last forward pass, or None."""
        logits = self.last_depth_logits
        return None if logits is None else logits.softmax(dim=2)

    def lift(self, images: Tensor) -> Tensor:
        """(B, N, 3, H, W) -> frustum features (B, N, D, h*w, context)."""
        b, n = images.shape[0], images.shape[1]
        x = images.flatten(0, 1).contiguous(memory_format=torch.channels_last)  # faster on CPU
        out = self.head(self.backbone(x))  # (B*N, D + Cf, h, w)
        h, w = out.shape[2], out.shape[3]
        logits = out[:, :self.bins].reshape(b, n, self.bins, h, w)
        self.last_depth_logits = logits
        ctx = out[:, self.bins:].reshape(b, n, 1, self.context, h * w).transpose(3, 4)
        return logits.softmax(dim=2).reshape(b, n, self.bins, h * w, 1) * ctx

    def frustum(self, intrinsics: Tensor, cam_to_lidar: Tensor) -> Tensor:
        """LiDAR-frame points (B, N, D, h*w, 3) of every depth bin centre of every feature cell."""
        k = intrinsics.to(torch.float32)
        fx, skew, cx = k[..., 0, 0:1], k[..., 0, 1:2], k[..., 0, 2:3]
        fy, cy = k[..., 1, 1:2], k[..., 1, 2:3]
        uv = self.pixels.reshape(1, 1, -1, 2)
        y = (uv[..., 1] - cy) / fy
        x = (uv[..., 0] - cx - skew * y) / fx
        rays = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # (B, N, hw, 3)
        pose = cam_to_lidar.to(torch.float32)
        dirs = rays @ pose[..., :3, :3].transpose(-1, -2)
        return dirs[:, :, None] * self.depth_values.view(1, 1, -1, 1, 1) \
            + pose[..., None, None, :3, 3]

    def splat(self, volume: Tensor, points: Tensor) -> Tensor:
        """Sum-pool (B, N, D, hw, C) features at (B, N, D, hw, 3) points -> (B, C, ny, nx)."""
        b = volume.shape[0]
        x, y, z = points[..., 0], points[..., 1], points[..., 2]
        ix = torch.floor((x - self.origin[0]) / self.cell[0])
        iy = torch.floor((y - self.origin[1]) / self.cell[1])
        rng = self.camera_range
        inside = (x >= -rng) & (x < rng) & (y >= -rng) & (y < rng) \
            & (z >= self.z_range[0]) & (z < self.z_range[1]) \
            & (ix >= 0) & (ix < self.nx) & (iy >= 0) & (iy < self.ny)
        cells = self.nx * self.ny
        batch = torch.arange(b, device=volume.device).view(-1, 1, 1, 1)
        index = batch * cells + (iy * self.nx + ix).long()
        index = torch.where(inside, index, torch.full_like(index, 2 ** 62))
        canvas = scatter_sum(volume.reshape(-1, self.context), index.reshape(-1), b, cells)
        return bev_canvas(canvas, self.ny, self.nx)

    def forward(self, images: Tensor, intrinsics: Tensor, cam_to_lidar: Tensor) -> Tensor:
        width, height = self.image_size
        if not torch.jit.is_tracing() and tuple(images.shape[-2:]) != (height, width):
            raise ValueError(f"{type(self).__name__}: images must be {width}x{height} (profile "
                             f"camera.image_size), got {images.shape[-1]}x{images.shape[-2]}")
        volume = self.lift(images)
        return self.bev(self.splat(volume, self.frustum(intrinsics, cam_to_lidar))).contiguous()

    def depth_targets(self, depth_gt: Tensor) -> Tensor:
        """(B, N, h, w) int64 bin of the nearest depth in each feature cell; -1 where none."""
        logits = self.last_depth_logits
        if logits is None:
            raise ValueError("depth_loss: run forward first")
        b, n, _, h, w = logits.shape
        d = depth_gt.to(torch.float32).reshape(b * n, 1, *depth_gt.shape[-2:])
        far = torch.where(torch.isfinite(d) & (d > 0), d, torch.full_like(d, float("inf")))
        nearest = -F.adaptive_max_pool2d(-far, (h, w)).reshape(b, n, h, w)
        target = torch.bucketize(nearest, self.depth_edges, right=True) - 1
        valid = (nearest >= self.depth_edges[0]) & (nearest < self.depth_edges[-1])
        return torch.where(valid, target, torch.full_like(target, -1))

    def depth_loss(self, depth_gt: Tensor) -> Tensor:
        """Cross-entropy of the last depth logits vs binned `depth_gt` (B, N, H, W) metres.

        Depth 0 (or non-finite) means no measurement; a feature cell takes the nearest depth
        inside it, and cells without one (or outside [min, max)) are ignored.
        """
        target = self.depth_targets(depth_gt)
        logits = self.last_depth_logits
        if not bool((target >= 0).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits.transpose(1, 2), target, ignore_index=-1)


class LssResNet(Lss):
    """m4: LSS with a ResNet trunk (profile camera.resnet; ResNet-101 at opv2v)."""

    kind = "lss_resnet101"

    def __init__(self, profile: Profile, num_cameras: int = 4) -> None:
        cam = profile["camera"]
        spec = cam["resnet"]
        backbone = ResNet(spec["block"], spec["layers"], spec["widths"], int(spec["stem"]),
                          int(cam["feature_stride"]))
        super().__init__(profile, backbone, num_cameras)


class LssEfficientNet(Lss):
    """m5: LSS with an EfficientNet trunk (profile camera.efficientnet; B0 at opv2v)."""

    kind = "lss_efficientnet_b0"

    def __init__(self, profile: Profile, num_cameras: int = 4) -> None:
        cam = profile["camera"]
        spec = cam["efficientnet"]
        backbone = EfficientNet(float(spec["width"]), float(spec["depth"]),
                                int(cam["feature_stride"]))
        super().__init__(profile, backbone, num_cameras)

