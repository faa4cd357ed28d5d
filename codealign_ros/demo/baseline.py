"""The ego-only baseline of the demo, computed afterwards from the ego's recorded code maps.

No second live receiver: the recorder stores every code map of the ego agent in the ego's
own space (`ego_codemap` records: metadata + base64 of the RAW packed indices); after the
run `ego_only_records` feeds each one alone to a `ReceiverPipeline` (same weights, backend
and post-processing as the live fusion node, no peers) and returns `detections` records of
source `ego_only`, exactly what demo.summary evaluates. ROS-free.
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from codealign_ros.core.codemap import CodeMap, Encoding, GridPose

__all__ = ["codemap_from_record", "codemap_record_fields", "ego_only_records"]


def codemap_record_fields(cm: CodeMap) -> dict[str, Any]:
    """JSON-able fields of a code map (lossless: RAW packed payload in base64)."""
    return {"agent": cm.agent_id, "modality": cm.modality, "space": cm.code_space,
            "codebook_hash": cm.codebook_hash, "stamp": int(cm.stamp_ns),
            "frame_id": cm.frame_id, "bits": int(cm.bits), "height": cm.height,
            "width": cm.width, "resolution": float(cm.resolution),
            "origin": [float(v) for v in cm.origin],
            "position": [float(v) for v in cm.pose.position],
            "orientation": [float(v) for v in cm.pose.orientation],
            "payload": base64.b64encode(cm.payload(Encoding.RAW)).decode("ascii")}


def codemap_from_record(rec: dict[str, Any]) -> CodeMap:
    """The CodeMap of a `codemap_record_fields` dict (CodeMapError when it is invalid)."""
    return CodeMap.from_payload(
        base64.b64decode(rec["payload"]), int(Encoding.RAW), bits=rec["bits"],
        height=rec["height"], width=rec["width"], agent_id=rec["agent"],
        modality=rec["modality"], code_space=rec["space"], codebook_hash=rec["codebook_hash"],
        stamp_ns=int(rec["stamp"]), frame_id=rec["frame_id"],
        resolution=float(rec["resolution"]), origin=tuple(rec["origin"]),
        pose=GridPose(tuple(rec["position"]), tuple(rec["orientation"])))


def ego_only_records(maps: Iterable[dict[str, Any]], model_dir: Path | str, ego: str,
                     modality: str, backend: str = "auto", profile: str | None = None,
                     threads: int | None = 1) -> list[dict[str, Any]]:
    """`detections` records (source ego_only) of the ego's maps fused alone, one per stamp."""
    from codealign_ros.pipeline.receiver import ReceiverPipeline

    receiver = ReceiverPipeline(model_dir, ego, modality, backend=backend, profile=profile,
                                threads=threads)
    out, seen = [], set()
    for rec in maps:
        if rec["agent"] != ego or rec["space"] != receiver.ego_group or rec["stamp"] in seen:
            continue
        seen.add(rec["stamp"])
        result = receiver.fuse(codemap_from_record(rec))
        out.append({"kind": "detections", "source": "ego_only", "stamp": int(rec["stamp"]),
                    "frame_id": rec["frame_id"],
                    "boxes": np.round(result.boxes.astype(np.float64), 4).tolist(),
                    "scores": np.round(result.scores.astype(np.float64), 4).tolist(),
                    "agents": result.agents, "e2e_ms": None,
                    "post_ms": round(result.timings["total_ms"], 2)})
    return out
