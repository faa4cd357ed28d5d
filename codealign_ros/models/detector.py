"""Detection backend of CodeAlign: pyramid fusion + anchor head + targets/loss/post-processing."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from codealign_ros.models.anchors import (DEFAULT_DIR_OFFSET, BoxCoder, build_targets,
                                          make_anchors)
from codealign_ros.models.det_losses import detection_loss
from codealign_ros.models.head import AnchorHead, postprocess
from codealign_ros.config.profiles import Profile, load_profile
from codealign_ros.models.pyramid_fusion import PyramidFusion

__all__ = ["BackendExport", "DetectionBackend"]


class DetectionBackend(nn.Module):
    """Fuse the BEV features (C = profile.channels) of the agents and detect boxes in the ego
    frame of each sample; the BEV grid is the profile's exchanged grid."""

    anchors: Tensor

    def __init__(self, profile: Profile | str) -> None:
        super().__init__()
        self.profile = load_profile(profile) if isinstance(profile, str) else profile
        fus, anc = self.profile["fusion"], self.profile["anchors"]
        self.fusion = PyramidFusion(self.profile.channels, fus["layers"], fus["strides"],
                                    fus["channels"], int(fus["upsample"]), int(fus["out"]),
                                    int(fus["cardinality"]),
                                    int(fus.get("shrink_kernel", 3)))
        self.grid = self.profile.grid
        self.register_buffer("anchors", make_anchors(self.grid, anc), persistent=False)
        self.num_anchors = int(self.anchors.shape[2])
        self.head = AnchorHead(int(fus["out"]), self.num_anchors)
        self.coder = BoxCoder()
        self.pos_iou, self.neg_iou = float(anc["pos_iou"]), float(anc["neg_iou"])
        self.dir_offset = float(anc.get("dir_offset", DEFAULT_DIR_OFFSET))
        self.occupancy_weights = [float(w) for w in fus["occupancy_weights"]]
        if len(self.occupancy_weights) != len(fus["layers"]):
            raise ValueError("fusion.occupancy_weights needs one weight per pyramid level")
        self.post = dict(self.profile["post"])

    def forward(self, features: Tensor, theta: Tensor, sample: Tensor | None = None,
                batch: int = 1) -> dict[str, Any]:
        """dict(cls (B, A, H, W), reg (B, 7A, H, W), dir (B, 2A, H, W), occupancy [(N, 1, h, w)],
        theta, sample) for agents' features (N, C, H, W) in their own frames."""
        if not torch.jit.is_tracing() and tuple(features.shape[-2:]) != (self.grid.height,
                                                                          self.grid.width):
            raise ValueError(f"features must be on the {self.grid.height}x{self.grid.width} "
                             f"grid of profile {self.profile.name}, got {tuple(features.shape)}")
        fused, occupancy = self.fusion(features, theta, sample, batch)
        cls, reg, dir_logits = self.head(fused)
        if sample is None:
            sample = torch.zeros(features.shape[0], dtype=torch.long, device=features.device)
        return {"cls": cls, "reg": reg, "dir": dir_logits, "occupancy": occupancy,
                "theta": theta, "sample": sample}

    def targets(self, gt_boxes: Sequence[Any]) -> dict[str, Any]:
        """Training targets from one (M, 7) GT array per sample in its ego frame."""
        return build_targets(self.anchors, gt_boxes, self.pos_iou, self.neg_iou,
                             self.fusion.level_strides, self.coder, self.grid, self.dir_offset)

    def loss(self, outputs: dict[str, Any], gt_boxes: Sequence[Any]
             ) -> tuple[Tensor, dict[str, Tensor]]:
        """(total, parts) detection + pyramid occupancy loss."""
        if len(gt_boxes) != outputs["cls"].shape[0]:
            raise ValueError(f"{len(gt_boxes)} GT arrays for {outputs['cls'].shape[0]} samples")
        return detection_loss(outputs, self.targets(gt_boxes), self.occupancy_weights)

    def detect(self, outputs: dict[str, Any]) -> list[tuple[Tensor, Tensor]]:
        """Per sample (boxes (K, 7), scores (K,)) in its ego frame."""
        return postprocess(outputs["cls"], outputs["reg"], outputs["dir"], self.anchors,
                           self.post, self.coder, self.dir_offset)

    def export_module(self) -> "BackendExport":
        """ONNX-exportable wrapper (one sample, any number of agents)."""
        return BackendExport(self)


class BackendExport(nn.Module):
    """(features (N, C, H, W), theta (N, 2, 3)) -> (cls, reg, dir) for one sample (batch 1)."""

    def __init__(self, backend: DetectionBackend) -> None:
        super().__init__()
        self.backend = backend

    def forward(self, features: Tensor, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        fused, _ = self.backend.fusion(features, theta, None, 1)
        return self.backend.head(fused)
