"""A synthetic, spatially coherent code map (payload measurements, tests, demos)."""
from __future__ import annotations

import numpy as np

from codealign_ros.core.codemap import _check_bits, _check_shape

__all__ = ["realistic_code_map"]


def realistic_code_map(height: int, width: int, bits: int = 4, seed: int = 0) -> np.ndarray:
    """A synthetic, spatially coherent BEV code map of a driving scene (0.4 m cells).

    For payload measurements and demos before trained models exist: roads with lane
    and curb codes, parked and driving cars (~11 x 5 cells), buildings with wall codes,
    LiDAR-like visibility falling off with range (unseen cells take the empty code 0)
    and 3 % salt noise. Semantic codes above 2**bits - 1 are clipped.
    """
    bits = _check_bits(bits)
    h, w = _check_shape(height, width)
    rng = np.random.default_rng(seed)
    empty, ground, road, lane, curb, car, car_edge, roof, wall = range(9)
    m = np.full((h, w), ground, np.uint8)

    def cut(start: int, length: int) -> slice:  # clipped at 0 so that nothing wraps around
        return slice(max(start, 0), max(start + length, 0))

    def box(t: np.ndarray, r: int, c: int, rows: int, cols: int, inner: int, edge: int) -> None:
        t[cut(r, rows), cut(c, cols)] = edge
        t[cut(r + 1, rows - 2), cut(c + 1, cols - 2)] = inner

    for _ in range(int(rng.integers(4, 9)) * h * w // 65536 + 1):  # buildings
        box(m, int(rng.integers(-10, h)), int(rng.integers(-10, w)), int(rng.integers(12, 40)),
            int(rng.integers(12, 40)), roof, wall)
    for i in range(int(rng.integers(1, 4))):  # roads of 2-3 lanes (~9 cells), ego on the first
        t = m if rng.random() < 0.5 else m.T  # m.T is a view: drawing on it draws on m
        lanes, mid = int(rng.integers(2, 4)), t.shape[0] // 2
        r0 = int(rng.integers(0, t.shape[0])) if i else mid - 4 - 9 * int(rng.integers(0, lanes))
        box(t, r0, -1, 9 * lanes, t.shape[1] + 2, road, curb)
        for k in range(1, lanes):  # dashed lane markings
            t[cut(r0 + 9 * k, 1), (np.arange(t.shape[1]) // 8) % 2 == 0] = lane
        for _ in range(int(rng.integers(0, 2 + t.shape[1] // 24))):  # cars in random lanes
            box(t, r0 + 2 + 9 * int(rng.integers(0, lanes)), int(rng.integers(-5, t.shape[1])),
                5, 11, car, car_edge)
        if not i:
            box(t, mid - 2, t.shape[1] // 2 - 5, 5, 11, car, car_edge)  # the ego vehicle
    yy, xx = np.mgrid[0:h, 0:w]
    rng_cells = np.hypot(yy - h / 2, xx - w / 2) / (0.35 * min(h, w))
    unseen = rng.random((h, w)) > np.exp(-rng_cells ** 4)  # point density falls off with range
    m[unseen & ((m < car) | (rng_cells > 1.3))] = empty  # tall objects are seen farther
    m = np.minimum(m, (1 << bits) - 1)
    salt = rng.random((h, w)) < 0.03
    m[salt] = rng.integers(0, 1 << bits, int(salt.sum()))
    return m
