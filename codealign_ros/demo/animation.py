"""Demo pictures from the recording: the layers of one frame, and the animated BEV (GIF).

`frame_scene` gathers what `bev_picture.render_bev` draws for one ego frame: the ego's
recorded LiDAR cloud, ground truth, the best-scored fused / ego-only boxes, every agent's pose
and the code maps each agent sent for that frame (colourised, `core.codemap_image`).
`draw_animation` renders every evaluated frame that has detections into a looping GIF
(Pillow) at the recording's 10 Hz frame period.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from codealign_ros.config import lookup
from codealign_ros.core.codemap_image import colorize

PICTURE_TOP = 10  # boxes per source in the picture: the mini model's scores are flat (~0.1)
FRAME_MS = 100  # 10 Hz, the datasets' frame rate
GIF_SCALE = 0.5


def top_boxes(rec: dict[str, Any] | None, k: int = PICTURE_TOP) -> np.ndarray:
    """The k highest-scored boxes of a detections record (none: an empty array)."""
    if rec is None:
        return np.zeros((0, 7))
    order = np.argsort(-np.asarray(rec["scores"], np.float64), kind="stable")[:k]
    return np.asarray(rec["boxes"], np.float64).reshape(-1, 7)[order]


def codemap_tiles(records: list[dict[str, Any]], stamp: int, agents: list[tuple[str, str]]
                  ) -> list[tuple[str, np.ndarray]]:
    """(label, RGB) of every agent's first decoded code map of frame `stamp`, bag order."""
    found: dict[str, tuple[str, np.ndarray]] = {}
    for r in records:
        if r["kind"] == "codemap" and r.get("stamp") == stamp and "indices" in r \
                and r["agent"] not in found:
            found[r["agent"]] = (f"{r['agent']} ({r['modality']}) -> {r['space']}",
                                 colorize(r["indices"], r["bits"]))
    return [found[a] for a, _ in agents if a in found]


def frame_scene(records: list[dict[str, Any]], truth: Any, clouds: dict[int, np.ndarray],
                agents: list[tuple[str, str]], stamp: int, profile: Any) -> dict[str, Any]:
    """Keyword arguments of `render_bev` (without title and lines) for frame `stamp`."""
    from codealign_ros.demo.bev_picture import AgentMark
    from codealign_ros.demo.summary import detections_by_stamp

    ego = agents[0][0]
    marks = []
    for i, (agent, modality) in enumerate(agents):
        if stamp not in truth.poses.get(agent, {}):
            continue
        pose = truth.in_ego_frame(ego, agent, stamp)
        desc = lookup("modalities", "modalities", modality).get("description", "")
        marks.append(AgentMark(agent, f"{agent}{' (ego)' if i == 0 else ''}: {modality} ({desc})",
                               float(pose[0, 3]), float(pose[1, 3]),
                               float(np.arctan2(pose[1, 0], pose[0, 0])), i == 0))
    r = profile.lidar_range
    return {"points": clouds.get(stamp, np.zeros((0, 4), np.float32)),
            "gt": truth.ego_gt(ego, stamp, profile),
            "fused": top_boxes(detections_by_stamp(records, "fused").get(stamp)),
            "ego_only": top_boxes(detections_by_stamp(records, "ego_only").get(stamp)),
            "agents": marks, "grid_range": (r[0], r[1], r[3], r[4]),
            "codemaps": codemap_tiles(records, stamp, agents)}


def gif_palette() -> Any:
    """A Pillow "P" image whose palette holds exactly the picture's colours (the BEV layers,
    greys for text and the code palette): frames mapped onto it keep every colour true and
    compress well."""
    from PIL import Image

    from codealign_ros.demo import bev_picture as bp
    from codealign_ros.core.codemap_image import palette

    colours = [bp.BACKGROUND, bp.POINTS, bp.GT, bp.FUSED, bp.EGO_ONLY, bp.AGENT, bp.GRID,
               (255, 200, 0), *[(g, g, g) for g in (60, 100, 200, 230)],
               *[tuple(int(v) for v in c) for c in palette(16)]]
    flat = [v for c in colours for v in c]
    image = Image.new("P", (1, 1))
    image.putpalette(flat + flat[:3] * (256 - len(colours)))
    return image


def draw_animation(path: Path, records: list[dict[str, Any]], truth: Any,
                   clouds: dict[int, np.ndarray], agents: list[tuple[str, str]],
                   stamps: list[int], profile: Any, progress: bool = True) -> Path | None:
    """The animated BEV of every frame of `stamps` with fused detections (GIF, loops);
    None when there is none."""
    from PIL import Image

    from codealign_ros.demo.bev_picture import render_bev
    from codealign_ros.demo.summary import detections_by_stamp

    fused = detections_by_stamp(records, "fused")
    shown = [s for s in stamps if s in fused]
    if not shown:
        return None
    frames, pal = [], gif_palette()
    for stamp in tqdm(shown, desc="animated BEV", unit="frame", disable=not progress):
        title = (f"CodeAlign demo, frame {stamps.index(stamp) + 1}/{len(stamps)} (ego frame): "
                 f"the {PICTURE_TOP} best-scored fused / ego-only boxes")
        image = render_bev(**frame_scene(records, truth, clouds, agents, stamp, profile),
                           title=title)
        size = (int(image.width * GIF_SCALE), int(image.height * GIF_SCALE))
        frames.append(image.resize(size, Image.BOX).quantize(palette=pal,
                                                            dither=Image.Dither.NONE))
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=FRAME_MS, loop=0,
                   optimize=True)
    return path
