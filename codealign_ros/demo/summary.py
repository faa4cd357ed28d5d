"""ROS-free summary of a demo recording (the records of `demo.recording.load_recording`).

AP30/50/70 of the fused and the ego-only detections against the bag's ground truth in the
ego frame (core.metrics.APAccumulator, on the frames both produced), bytes per CodeMap (raw
= decoded packed stream, H x W x bits / 8; coded = the message's data length), end-to-end
latency percentiles, the vehicles' processing times (from the first evaluated frame on: the
lead-in's are left out), drops and skips by reason from the last
/diagnostics of every node, and code maps missing per agent.
"""
from __future__ import annotations

import ast
import collections
from typing import Any, Iterable

import numpy as np

from codealign_ros.core.metrics import APAccumulator
from codealign_ros.demo.scene import BagTruth

SOURCES = ("ego_only", "fused")


def _percentiles(values: Iterable[float]) -> dict[str, float | None]:
    v = np.asarray([x for x in values if x is not None], np.float64)
    if not len(v):
        return {"p50": None, "p95": None, "n": 0}
    return {"p50": round(float(np.percentile(v, 50)), 1),
            "p95": round(float(np.percentile(v, 95)), 1), "n": int(len(v))}


def detections_by_stamp(records: list[dict[str, Any]], source: str) -> dict[int, dict[str, Any]]:
    """stamp -> the first detections record of `source` for that ego frame."""
    out: dict[int, dict[str, Any]] = {}
    for r in records:
        if r["kind"] == "detections" and r["source"] == source:
            out.setdefault(int(r["stamp"]), r)
    return out


def _boxes(rec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray(rec["boxes"], np.float64).reshape(-1, 7),
            np.asarray(rec["scores"], np.float64).reshape(-1))


def average_precision(dets: dict[int, dict[str, Any]], stamps: list[int], truth: BagTruth,
                      ego: str, profile: Any) -> dict[str, float]:
    """AP30/50/70 of `dets` over `stamps` (HEAL protocol, ego-frame GT in the profile range)."""
    acc = APAccumulator((0.3, 0.5, 0.7))
    for stamp in stamps:
        boxes, scores = _boxes(dets[stamp])
        acc.add_frame(boxes, scores, truth.ego_gt(ego, stamp, profile))
    return {f"ap{round(t * 100)}": round(v, 4) for t, v in acc.ap().items()}


def codemap_bytes(records: list[dict[str, Any]], channels: int) -> dict[str, Any]:
    """Mean raw and coded bytes per CodeMap, overall and per sender / space."""
    maps = [r for r in records if r["kind"] == "codemap" and "raw_bytes" in r]
    if not maps:
        return {"maps": 0}
    per: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for r in maps:
        per[f"{r['agent']}:{r['modality']}->{r['space']}"].append(r)
    first = maps[0]
    return {
        "maps": len(maps), "height": first["height"], "width": first["width"],
        "bits": first["bits"], "encoding": first.get("encoding"),
        "raw": round(float(np.mean([r["raw_bytes"] for r in maps])), 1),
        "coded": round(float(np.mean([r["coded_bytes"] for r in maps])), 1),
        "dense_float32": channels * first["height"] * first["width"] * 4,
        "per_sender": {k: {"maps": len(v),
                           "raw": round(float(np.mean([r["raw_bytes"] for r in v])), 1),
                           "coded": round(float(np.mean([r["coded_bytes"] for r in v])), 1)}
                       for k, v in sorted(per.items())},
        "errors": sum(1 for r in records if r["kind"] == "codemap" and "error" in r)}


def _last_diagnostics(records: list[dict[str, Any]], source: str) -> dict[str, dict[str, str]]:
    last: dict[str, dict[str, str]] = {}
    for r in records:
        if r["kind"] == "diagnostics" and r["source"] == source:
            last[r["name"]] = {**r["values"], "_agent": r["hardware_id"]}
    return last


def _by_prefix(values: dict[str, str], prefix: str) -> dict[str, int]:
    return {k[len(prefix):]: int(v) for k, v in sorted(values.items())
            if k.startswith(prefix) and str(v).isdigit() and int(v)}


def _counter(text: str) -> dict[str, int]:
    """A diagnostics value holding a dict of counts ("{'unmatched': 2}"), or {}."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {}
    return {str(k): int(v) for k, v in value.items() if int(v)} if isinstance(value, dict) \
        else {}


def transport_ledger(values: dict[str, str]) -> dict[str, Any]:
    """{"ledger": offered / fused / dropped / held, "balanced"} of a fusion node's diagnostics
    (pipeline.transport), or {} for a node without one."""
    book = {k[len("ledger_"):]: int(v) for k, v in values.items()
            if k.startswith("ledger_") and str(v).isdigit()}
    if not book:
        return {}
    balanced = book.get("offered") == sum(book.get(k, 0) for k in ("fused", "dropped", "held"))
    return {"ledger": book, "balanced": balanced}


def drops(records: list[dict[str, Any]], stamps: list[int], agents: list[str]
          ) -> dict[str, Any]:
    """Drops and skips by reason per node (last diagnostics) and missing maps per agent."""
    nodes: dict[str, Any] = {}
    for name, values in _last_diagnostics(records, "main").items():
        entry = {"drops": _by_prefix(values, "drop_")}
        if "published" in values:  # a vehicle
            entry["sync_dropped"] = _counter(values.get("sync_dropped", "{}"))
        else:
            entry["skipped"] = _by_prefix(values, "skipped_")
            entry.update(transport_ledger(values))
        nodes[name] = entry
    have = collections.defaultdict(set)
    for r in records:
        if r["kind"] == "codemap":
            have[r["agent"]].add(int(r["stamp"]))
    missing = {a: sum(1 for s in stamps if s not in have[a]) for a in agents}
    total = sum(sum(n["drops"].values()) + sum(n.get("sync_dropped", {}).values())
                for n in nodes.values())
    return {"total": total, "nodes": nodes, "maps_missing": missing}


def _fusion_ms(records: list[dict[str, Any]]) -> dict[str, float | None]:
    values = [float(r["values"]["total_ms"]) for r in records
              if r["kind"] == "diagnostics" and r["source"] == "main"
              and "fused" in r["values"] and "total_ms" in r["values"]]
    return _percentiles(values)


STAGE_KEYS = ("preprocess_ms", "inference_ms", "postprocess_ms", "translate_ms", "head_ms",
              "post_ms", "total_ms")


def realtime_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Achieved fused-frame rate (Hz, wall clock), and per node over its /diagnostics from the
    first ego pose to the last fused frame: mean CPU % (of one core) and p50/p95 of the stage
    timings it reports (sampled once per second: the last frame's)."""
    fused_t = [r["t"] for r in records
               if r["kind"] == "detections" and r["source"] == "fused" and "t" in r]
    start = next((r["t"] for r in records if r["kind"] == "pose" and "t" in r), None)
    rate = (len(fused_t) - 1) / (fused_t[-1] - fused_t[0]) \
        if len(fused_t) > 1 and fused_t[-1] > fused_t[0] else None
    nodes: dict[str, dict[str, list[float]]] = collections.defaultdict(
        lambda: collections.defaultdict(list))
    end = fused_t[-1] if fused_t else None  # the player lingers idle after the bag
    for r in records:
        if r["kind"] != "diagnostics" or r["source"] != "main" or start is None \
                or end is None or not start <= r.get("t", -1.0) <= end + 1.0:
            continue
        for key in ("cpu_percent", *STAGE_KEYS):
            try:
                value = float(r["values"][key])
            except (KeyError, ValueError):
                continue
            nodes[r["name"]][key].append(value)
    per_node = {}
    for name, series in sorted(nodes.items()):
        cpu = series.pop("cpu_percent", [])
        per_node[name] = {"cpu_percent": round(float(np.mean(cpu)), 1) if cpu else None,
                          **{k: _percentiles(v) for k, v in series.items()}}
    return {"achieved_hz": None if rate is None else round(rate, 2), "nodes": per_node}


def _first_arrival(records: list[dict[str, Any]], stamps: list[int]) -> float | None:
    """When the first evaluated frame's ego pose reached the recorder (None: not recorded):
    the vehicles' processing times before it are the lead-in's."""
    first = stamps[0] if stamps else None
    return min((r["t"] for r in records if r["kind"] == "pose" and r["stamp"] == first),
               default=None)


def summarize(records: list[dict[str, Any]], truth: BagTruth, ego: str,
              agents: dict[str, str], stamps: list[int], profile: Any) -> dict[str, Any]:
    """The demo summary over the evaluated frame `stamps` (see the module doc)."""
    dets = {s: detections_by_stamp(records, s) for s in SOURCES}
    both = [s for s in stamps if all(s in dets[src] for src in SOURCES)]
    fused = [dets["fused"][s] for s in stamps if s in dets["fused"]]
    processing: dict[str, list[float]] = collections.defaultdict(list)
    start = _first_arrival(records, stamps)
    for r in records:  # topic /<node>/processing_time_ms, from the first evaluated frame on
        if r["kind"] == "processing" and (start is None or r["t"] >= start):
            processing[r["topic"].strip("/").split("/")[0]].append(r["ms"])
    return {
        "frames": {"evaluated_span": len(stamps),
                   "played": sum(1 for r in records if r["kind"] == "gt"),
                   **{s: sum(1 for t in stamps if t in dets[s]) for s in SOURCES},
                   "evaluated": len(both)},
        "ap": {s: average_precision(dets[s], both, truth, ego, profile) for s in SOURCES},
        "agents_fused": dict(sorted(collections.Counter(
            len(r["agents"]) for r in fused if r["agents"]).items())),
        "boxes_per_frame": {s: round(float(np.mean([len(dets[s][t]["boxes"]) for t in both])),
                                     2) if both else 0.0 for s in SOURCES},
        "codemap_bytes": codemap_bytes(records, int(profile.channels)),
        "latency_ms": {"end_to_end": _percentiles(r.get("e2e_ms") for r in fused),
                       "fusion": _fusion_ms(records),
                       **{node: _percentiles(v) for node, v in sorted(processing.items())}},
        "drops": drops(records, stamps, list(agents)),
        "realtime": realtime_stats(records),
    }


def lead_in_latency(records: list[dict[str, Any]], stamps: list[int]) -> dict[str, Any]:
    """End-to-end latency of the fused lead-in frames (played, not evaluated)."""
    fused = detections_by_stamp(records, "fused")
    values = [fused[s].get("e2e_ms") for s in stamps if s in fused]
    values = [v for v in values if v is not None]
    return {"frames": len(stamps), "fused": sum(s in fused for s in stamps),
            "ms": [round(v, 1) for v in values], "max": max(values) if values else None}
