"""Bird's-eye-view picture of one demo frame (Pillow, ROS-free).

Everything is in the ego LiDAR frame (x forward drawn to the right, y left drawn up): the ego's
LiDAR points in grey, ground-truth boxes green, fused detections red, ego-only detections thin
dashed blue, the exchanged BEV grid as a dotted square, and every agent as a heading triangle
labelled with its id and modality. A legend and a title line go below the map. Optionally a
panel to the right shows the agents' code maps of the frame (`core.codemap_image`: one colour
per code, +x right, +y up), each labelled with its sender and code space.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from codealign_ros.core.geometry import box_corners

BACKGROUND = (255, 255, 255)
POINTS = (150, 150, 150)
GT = (0, 160, 0)
FUSED = (220, 0, 0)
EGO_ONLY = (30, 90, 255)
AGENT = (0, 0, 0)
GRID = (120, 120, 120)
MAP_PX = 900
LEGEND_PX = 100
MARGIN_M = 5.0  # view: the exchanged grid plus this
BORDER_M = 2.0  # agents outside the view are drawn this far inside its border
DASH_PX = (7, 5)
PANEL_PX = 300  # code-map panel width


@dataclass(frozen=True)
class AgentMark:
    """One agent to draw: its pose in the ego frame and a label (id, modality, sensor)."""

    name: str
    label: str
    x: float
    y: float
    yaw: float
    ego: bool = False


class _View:
    """Metres (ego frame) -> pixels of the square map."""

    def __init__(self, half_extent_m: float) -> None:
        self.half, self.scale = half_extent_m, MAP_PX / (2.0 * half_extent_m)

    def px(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        return np.column_stack([(xy[:, 0] + self.half) * self.scale,
                                (self.half - xy[:, 1]) * self.scale])


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _dashed(draw: ImageDraw.ImageDraw, a: np.ndarray, b: np.ndarray, color: tuple,
            width: int) -> None:
    length = float(np.hypot(*(b - a)))
    on, off = DASH_PX
    pos = 0.0
    while pos < length:
        end = min(pos + on, length)
        p, q = a + (b - a) * pos / length, a + (b - a) * end / length
        draw.line([tuple(p), tuple(q)], fill=color, width=width)
        pos = end + off


def _boxes(draw: ImageDraw.ImageDraw, view: _View, boxes: np.ndarray, color: tuple,
           width: int, dashed: bool = False) -> None:
    if len(boxes) == 0:
        return
    for corners in box_corners(np.asarray(boxes).reshape(-1, 7))[:, :4, :2]:
        poly = view.px(corners)
        for i in range(4):
            a, b = poly[i], poly[(i + 1) % 4]
            if dashed:
                _dashed(draw, a, b, color, width)
            else:
                draw.line([tuple(a), tuple(b)], fill=color, width=width)
        front = view.px(corners[[0, 3]].mean(axis=0))[0]  # heading tick: centre of the front
        centre = view.px(corners.mean(axis=0))[0]
        draw.line([tuple(centre), tuple(front)], fill=color, width=width)


def _points(image: Image.Image, view: _View, points: np.ndarray) -> None:
    px = np.round(view.px(points[:, :2])).astype(int)
    keep = (px[:, 0] >= 0) & (px[:, 0] < MAP_PX) & (px[:, 1] >= 0) & (px[:, 1] < MAP_PX)
    pixels = np.asarray(image).copy()
    pixels[px[keep, 1], px[keep, 0]] = POINTS
    image.paste(Image.fromarray(pixels))


def _agent(draw: ImageDraw.ImageDraw, view: _View, mark: AgentMark,
           placed: list[tuple[float, float, float, float]]) -> None:
    """Heading triangle and label; an agent outside the view sits on its border, its label
    giving the distance. Labels move down until they overlap no earlier one."""
    limit = view.half - BORDER_M
    x_m, y_m = float(np.clip(mark.x, -limit, limit)), float(np.clip(mark.y, -limit, limit))
    outside = (x_m, y_m) != (mark.x, mark.y)
    size = 2.2 if mark.ego else 1.8
    c, s = np.cos(mark.yaw), np.sin(mark.yaw)
    tri = np.array([[size, 0.0], [-size * 0.7, size * 0.6], [-size * 0.7, -size * 0.6]])
    xy = tri @ np.array([[c, s], [-s, c]]) + [x_m, y_m]
    fill = (255, 200, 0) if mark.ego else (255, 255, 255)
    draw.polygon([tuple(p) for p in view.px(xy)], fill=fill, outline=AGENT, width=2)
    label = mark.label + (f" ({np.hypot(mark.x, mark.y):.0f} m away)" if outside else "")
    font = _font(16)
    w = draw.textlength(label, font=font)
    px, py = view.px([x_m, y_m])[0]
    x = min(max(px + 14, 4), MAP_PX - w - 4)
    y = min(max(py - 26, 4), MAP_PX - 24)
    while any(x < r[2] + 8 and r[0] < x + w + 8 and y < r[3] and r[1] < y + 20 for r in placed):
        y += 22
    placed.append((x, y, x + w, y + 20))
    draw.text((x, y), label, fill=AGENT, font=font, stroke_width=3, stroke_fill=BACKGROUND)


def _grid(draw: ImageDraw.ImageDraw, view: _View, grid_range: Sequence[float]) -> None:
    x0, y0, x1, y1 = grid_range
    corners = view.px([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    for i in range(4):
        _dashed(draw, corners[i], corners[(i + 1) % 4], GRID, 1)


def _legend(draw: ImageDraw.ImageDraw, title: str, lines: Sequence[str]) -> None:
    top, font = MAP_PX + 10, _font(16)
    entries = [(GT, "ground truth", False, 2), (FUSED, "fused detections", False, 3),
               (EGO_ONLY, "ego-only detections", True, 1), (POINTS, "ego LiDAR points", False, 4),
               (GRID, "exchanged BEV grid", True, 1)]
    for i, (color, text, dashed, width) in enumerate(entries):
        x = 12 + (i % 3) * 300
        y = top + (i // 3) * 26
        a, b = np.array([x, y + 9.0]), np.array([x + 40, y + 9.0])
        if dashed:
            _dashed(draw, a, b, color, width)
        else:
            draw.line([tuple(a), tuple(b)], fill=color, width=width)
        draw.text((x + 48, y), text, fill=AGENT, font=font)
    draw.text((12, top + 58), title, fill=AGENT, font=_font(17))
    for i, line in enumerate(lines):
        draw.text((12, top + 82 + 20 * i), line, fill=AGENT, font=font)


def _codemaps(image: Image.Image, codemaps: Sequence[tuple[str, np.ndarray]]) -> None:
    """Code-map images (label, (H, W, 3) uint8) stacked in the panel right of the map."""
    draw, font = ImageDraw.Draw(image), _font(15)
    draw.text((MAP_PX + 12, 8), "exchanged code maps (colour = code)", fill=AGENT, font=font)
    size = min(PANEL_PX - 24, (MAP_PX - 40) // max(len(codemaps), 1) - 26)
    for i, (label, rgb) in enumerate(codemaps):
        top = 34 + i * (size + 26)
        draw.text((MAP_PX + 12, top), label, fill=AGENT, font=font)
        tile = Image.fromarray(np.asarray(rgb, np.uint8)).resize((size, size), Image.NEAREST)
        image.paste(tile, (MAP_PX + 12, top + 20))


def render_bev(points: np.ndarray, gt: np.ndarray, fused: np.ndarray, ego_only: np.ndarray,
               agents: Sequence[AgentMark], grid_range: Sequence[float], title: str = "",
               lines: Sequence[str] = (),
               codemaps: Sequence[tuple[str, np.ndarray]] = ()) -> Image.Image:
    """The picture as a Pillow image (see `draw_bev`)."""
    view = _View(max(abs(v) for v in grid_range) + MARGIN_M)
    width = MAP_PX + (PANEL_PX if codemaps else 0)
    image = Image.new("RGB", (width, MAP_PX + LEGEND_PX + 20 * len(lines)), BACKGROUND)
    _points(image, view, np.asarray(points, np.float64).reshape(-1, np.shape(points)[-1]))
    draw = ImageDraw.Draw(image)
    _grid(draw, view, grid_range)
    _boxes(draw, view, gt, GT, 3)
    _boxes(draw, view, ego_only, EGO_ONLY, 1, dashed=True)
    _boxes(draw, view, fused, FUSED, 2)
    placed: list[tuple[float, float, float, float]] = []
    for mark in sorted(agents, key=lambda a: not a.ego):
        _agent(draw, view, mark, placed)
    draw.line([(0, MAP_PX), (width, MAP_PX)], fill=GRID, width=1)
    _legend(draw, title, lines)
    if codemaps:
        _codemaps(image, codemaps)
    return image


def draw_bev(path: Path | str, points: np.ndarray, gt: np.ndarray, fused: np.ndarray,
             ego_only: np.ndarray, agents: Sequence[AgentMark], grid_range: Sequence[float],
             title: str = "", lines: Sequence[str] = (),
             codemaps: Sequence[tuple[str, np.ndarray]] = ()) -> Path:
    """Write the picture to `path` (PNG); returns the path.

    points (N, >=2), boxes (K, 7) and agents are in the ego frame; grid_range is the
    exchanged grid (x_min, y_min, x_max, y_max). The view covers the grid. `codemaps`:
    (label, RGB image) per agent for the panel right of the map (none: no panel).
    """
    image = render_bev(points, gt, fused, ego_only, agents, grid_range, title, lines, codemaps)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    return out
