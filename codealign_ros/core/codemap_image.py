"""Code maps as pictures (ROS-free): one fixed colour per code index, BEV orientation.

A code map's row r covers +y, column c covers +x (CodeMap.msg). The image is drawn as seen from
above with +x to the right and +y up (row 0 of the image is the grid's last row), the way the
demo's BEV picture and RViz's top view show the grid frame. Colours: config/codemap.yaml
`image_palette`; beyond its length the list repeats at lower brightness (`palette`).
"""
from __future__ import annotations

import functools

import numpy as np

from codealign_ros.config import lookup

MAX_WRAPS = 4  # palette length x 4 codes have distinct colours (16 -> 64 codes)


@functools.lru_cache(maxsize=None)
def palette(codes: int) -> np.ndarray:
    """(codes, 3) uint8 RGB, one distinct colour per code index (ValueError past the limit)."""
    base = np.asarray(lookup("codemap", "image_palette"), np.float64).reshape(-1, 3)
    if not 0 < codes <= len(base) * MAX_WRAPS:
        raise ValueError(f"no palette for {codes} codes (1..{len(base) * MAX_WRAPS})")
    wraps = np.arange(codes) // len(base)
    colours = base[np.arange(codes) % len(base)] * (0.5 ** wraps)[:, None]
    out = np.round(colours).astype(np.uint8)
    out.setflags(write=False)
    return out


def colorize(indices: np.ndarray, bits: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB image of an (H, W) code-index map of `bits` bits per cell."""
    idx = np.asarray(indices)
    if idx.ndim != 2:
        raise ValueError(f"expected an (H, W) index map, got shape {idx.shape}")
    colours = palette(1 << int(bits))
    if idx.size and (idx.min() < 0 or idx.max() >= len(colours)):
        raise ValueError(f"index outside 0..{len(colours) - 1}")
    return np.ascontiguousarray(colours[idx[::-1].astype(np.intp)])


def upscale(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (crisp cells in pictures)."""
    return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)
