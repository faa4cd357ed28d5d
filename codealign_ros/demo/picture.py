"""The demo's BEV picture: the frame where fusion helps most (`pick_frame`), drawn with the
agents' code maps (`draw_picture`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from codealign_ros.demo.animation import PICTURE_TOP

__all__ = ["draw_picture", "pick_frame"]


def _covered(boxes: np.ndarray, gt: np.ndarray, iou: float = 0.5) -> int:
    from codealign_ros.core.metrics import bev_iou_matrix

    if not len(boxes) or not len(gt):
        return 0
    return int((bev_iou_matrix(gt, boxes).max(axis=1) >= iou).sum())


def pick_frame(records: list[dict[str, Any]], truth: Any, ego: str, stamps: list[int],
               profile: Any) -> int | None:
    """The evaluated frame where fusion's best-scored boxes find the most ground truth the
    ego's alone miss."""
    from codealign_ros.demo.animation import top_boxes
    from codealign_ros.demo.summary import detections_by_stamp

    fused, alone = (detections_by_stamp(records, s) for s in ("fused", "ego_only"))
    both = [s for s in stamps if s in fused and s in alone]
    if not both:
        return None

    def gain(stamp: int) -> tuple[int, int, int]:
        gt = truth.ego_gt(ego, stamp, profile)
        f, e = (top_boxes(d[stamp]) for d in (fused, alone))
        return _covered(f, gt) - _covered(e, gt), len(gt), -abs(both.index(stamp)
                                                                - len(both) // 2)
    return max(both, key=gain)


def draw_picture(path: Path, records: list[dict[str, Any]], truth: Any,
                 clouds: dict[int, np.ndarray], agents: list[tuple[str, str]],
                 stamps: list[int], profile: Any, summary: dict[str, Any]) -> Path | None:
    """The BEV picture of `pick_frame` with the agents' code maps; None when no frame has
    both detection sources. `clouds`: the ego's recorded LiDAR by stamp."""
    from codealign_ros.demo.animation import frame_scene
    from codealign_ros.demo.bev_picture import draw_bev
    from codealign_ros.demo.summary import detections_by_stamp

    stamp = pick_frame(records, truth, agents[0][0], stamps, profile)
    if stamp is None:
        return None
    counts = {s: len(detections_by_stamp(records, s)[stamp]["boxes"])
              for s in ("fused", "ego_only")}
    ap = summary["ap"]
    lines = [f"AP30 / AP50 over {summary['frames']['evaluated']} frames: fused "
             f"{ap['fused']['ap30']:.3f} / {ap['fused']['ap50']:.3f}, ego-only "
             f"{ap['ego_only']['ap30']:.3f} / {ap['ego_only']['ap50']:.3f}; "
             f"CodeMap {summary['codemap_bytes'].get('raw', 0):.0f} B raw, "
             f"{summary['codemap_bytes'].get('coded', 0):.0f} B coded"]
    title = (f"CodeAlign demo, frame {stamps.index(stamp) + 1}/{len(stamps)}, ego frame: the "
             f"{PICTURE_TOP} best-scored of {counts['fused']} fused / {counts['ego_only']} "
             f"ego-only boxes")
    return draw_bev(path, **frame_scene(records, truth, clouds, agents, stamp, profile),
                    title=title, lines=lines)
