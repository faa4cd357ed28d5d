"""The ego-only baseline of the demo, computed afterwards from the ego's recorded code maps.

No second live receiver: the demo's MCAP recording holds every code map the recorder received
(demo.recording); after the run `ego_only_records` feeds each map of the ego agent in its own
space alone to a `ReceiverPipeline` (same weights, backend and post-processing as the live
fusion node, no peers) and returns `detections` records of source `ego_only`, exactly what
demo.summary evaluates. ROS-free (the recording is read with rosbags).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from codealign_ros.core.codemap import CodeMap, CodeMapError, GridPose

__all__ = ["ego_maps", "ego_only_records"]


def ego_maps(recording: Path | str, ego: str) -> Iterator[CodeMap]:
    """The ego agent's code maps in a demo recording, in arrival order (invalid ones skipped:
    the live receiver counted them)."""
    from codealign_ros.config import topic
    from codealign_ros.demo.recording import iter_messages

    for _, _, msg in iter_messages(recording, {topic("codemap")}):
        if msg.agent_id != ego:
            continue
        p, q, o = msg.pose.position, msg.pose.orientation, msg.origin
        stamp = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
        try:
            yield CodeMap.from_payload(
                bytes(msg.data), int(msg.encoding), bits=int(msg.bits), height=int(msg.height),
                width=int(msg.width), agent_id=msg.agent_id, modality=msg.modality,
                code_space=msg.code_space, codebook_hash=msg.codebook_hash, stamp_ns=stamp,
                frame_id=msg.header.frame_id, resolution=float(msg.resolution),
                origin=(o.x, o.y, o.z), pose=GridPose((p.x, p.y, p.z), (q.x, q.y, q.z, q.w)))
        except CodeMapError:
            continue


def ego_only_records(maps: Iterable[CodeMap], model_dir: Path | str, ego: str,
                     modality: str, backend: str = "auto", profile: str | None = None,
                     threads: int | None = 1) -> list[dict[str, Any]]:
    """`detections` records (source ego_only) of the ego's maps fused alone, one per stamp."""
    from codealign_ros.pipeline.configs import ReceiverConfig
    from codealign_ros.pipeline.receiver import ReceiverPipeline

    receiver = ReceiverPipeline(ReceiverConfig(model_dir, ego, modality, backend=backend,
                                               profile=profile, threads=threads))
    out, seen = [], set()
    for cm in maps:
        if cm.agent_id != ego or cm.code_space != receiver.ego_group or cm.stamp_ns in seen:
            continue
        seen.add(cm.stamp_ns)
        result = receiver.fuse(cm)
        out.append({"kind": "detections", "source": "ego_only", "stamp": int(cm.stamp_ns),
                    "frame_id": cm.frame_id,
                    "boxes": np.round(result.boxes.astype(np.float64), 4).tolist(),
                    "scores": np.round(result.scores.astype(np.float64), 4).tolist(),
                    "agents": result.agents, "e2e_ms": None,
                    "post_ms": round(result.timings["total_ms"], 2)})
    return out
