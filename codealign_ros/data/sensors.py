"""Vectorised ray casting against the ground plane z = 0 and upright boxes; LiDAR and camera.

Boxes are (K, 7) [x, y, z_centre, l, w, h, yaw] (see `codealign_ros.core.geometry`). Rays are
tested with the slab method in each box's frame. With one origin shared by all rays (a
sensor), each box is first bounded by an azimuth wedge and an elevation band seen from the
origin, so only the few (ray, box) pairs that can hit are slab-tested.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from codealign_ros.core.geometry import box_corners, wrap_angle

GROUND = -1  # hit_index of a ray that ended on the ground plane
NOTHING = -2  # hit_index of a ray that hit nothing within range (sky)
PAIR_BUDGET = 1 << 19  # (ray, box) pairs slab-tested per chunk: bounds memory to ~50 MB
ELEVATION_BINS = 32  # rays are binned by elevation to cull boxes
RANGE_NOISE_M = 0.02  # LiDAR range noise sigma, clipped at 2 sigma
SUN = np.array([0.4, 0.25, 0.85]) / np.linalg.norm([0.4, 0.25, 0.85])
_VFOV = {64: (2.0, -24.9), 32: (10.0, -30.0)}  # LiDAR beam elevations, degrees (HDL-64 / 32)
# Ground materials: colour and LiDAR reflectivity of off-road, asphalt, white and yellow paint.
GROUND_COLORS = np.array([[0.45, 0.50, 0.40], [0.30, 0.30, 0.32], [0.92, 0.92, 0.90],
                          [0.88, 0.72, 0.20]])
GROUND_REFLECTIVITY = np.array([0.25, 0.12, 0.70, 0.60])
MARKING_HALF_WIDTH = 0.1


@dataclass(frozen=True)
class Scene:
    """What the sensors see: upright boxes standing on z = 0 and roads painted on the ground.

    colors: (K, 3) RGB in [0, 1]; reflectivity: (K,) in [0, 1]; roads: (Q, 6)
    [cx, cy, heading, half_length, half_width, lane_width] (lines every lane_width from the
    centre: yellow centre line, dashed white lane lines, solid white edges).
    """

    boxes: np.ndarray
    colors: np.ndarray
    reflectivity: np.ndarray
    roads: np.ndarray = field(default_factory=lambda: np.zeros((0, 6)))


def _rotate(vectors: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(N, 3) vectors times the 3x3 part of `matrix`, without BLAS (whose threads spin on a
    busy machine: 50x slower for these thin products)."""
    m = np.asarray(matrix, np.float64)[:3, :3]
    return vectors[:, 0:1] * m[:, 0] + vectors[:, 1:2] * m[:, 1] + vectors[:, 2:3] * m[:, 2]


def _box_table(boxes: np.ndarray) -> np.ndarray:
    """(8, K) rows [x, y, z, l/2, w/2, h/2, cos yaw, sin yaw]: contiguous rows gather fast."""
    return np.vstack([boxes[:, :3].T, 0.5 * boxes[:, 3:6].T, np.cos(boxes[:, 6]),
                      np.sin(boxes[:, 6])])


def _slab(origins: np.ndarray, dirs: np.ndarray, table: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Slab test of paired rays and boxes, all (3 or 8, P) columns (`_box_table` rows).

    Returns the entry distance (inf if missed or the origin is inside), the entry axis and
    the ray directions in the box frames (3, P).
    """
    c, s = table[6], table[7]
    rel = origins - table[:3]
    o_local = (c * rel[0] + s * rel[1], c * rel[1] - s * rel[0], rel[2])
    d_local = np.stack([c * dirs[0] + s * dirs[1], c * dirs[1] - s * dirs[0], dirs[2]])
    t_near, t_far = np.full(len(c), -np.inf), np.full(len(c), np.inf)
    axis = np.zeros(len(c), np.int64)
    for k in range(3):  # x, y, z slabs of all pairs at once
        inv = 1.0 / np.where(np.abs(d_local[k]) < 1e-12, 1e-12, d_local[k])  # no 0 * inf
        mid, half = -o_local[k] * inv, table[3 + k] * np.abs(inv)
        enter = mid - half
        axis[enter > t_near] = k
        t_near, t_far = np.maximum(t_near, enter), np.minimum(t_far, mid + half)
    return np.where((t_near <= t_far) & (t_near > 1e-6), t_near, np.inf), axis, d_local


def _box_bounds(origin: np.ndarray, boxes: np.ndarray, max_range: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per box seen from `origin`: whether it is within range, and (4, K) conservative bounds
    [azimuth start in [-pi, pi), azimuth width (2 pi: any), sin elevation low, high]."""
    c, s, v = np.cos(boxes[:, 6]), np.sin(boxes[:, 6]), origin - boxes[:, :3]
    rel = np.column_stack([c * v[:, 0] + s * v[:, 1], c * v[:, 1] - s * v[:, 0], v[:, 2]])
    half = 0.5 * boxes[:, 3:6]
    gap = np.maximum(np.abs(rel) - half, 0.0)
    d_min, d_max = np.hypot(gap[:, 0], gap[:, 1]), np.hypot(*(np.abs(rel[:, :2]) + half[:, :2]).T)
    z_lo, z_hi = -rel[:, 2] - half[:, 2], -rel[:, 2] + half[:, 2]  # box bottom/top above origin
    sin_lo = z_lo / (np.hypot(z_lo, np.where(z_lo < 0, d_min, d_max)) + 1e-12) - 1e-6
    sin_hi = z_hi / (np.hypot(z_hi, np.where(z_hi > 0, d_min, d_max)) + 1e-12) + 1e-6
    to_centre = boxes[:, :2] - origin[:2]
    base = np.arctan2(to_centre[:, 1], to_centre[:, 0])
    corner = box_corners(boxes)[:, :4, :2] - origin[:2]
    ang = wrap_angle(np.arctan2(corner[..., 1], corner[..., 0]) - base[:, None])
    around = d_min < 0.05  # origin above, below or in the footprint: any azimuth
    start = np.where(around, -np.pi, wrap_angle(base + ang.min(axis=1) - 1e-6))
    width = np.where(around, 2 * np.pi, np.ptp(ang, axis=1) + 2e-6)
    return np.linalg.norm(gap, axis=1) <= max_range, np.stack([start, width, sin_lo, sin_hi])


def concat_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(start, start + count) over the ranges."""
    offsets = np.cumsum(counts) - counts
    return np.repeat(starts - offsets, counts) + np.arange(counts.sum())


def _shared_origin_pairs(dirs: np.ndarray, bounds: np.ndarray
                         ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ray, box) candidate pairs in chunks, dirs (3, R): rays are binned by elevation then
    sorted by azimuth, so each box's bounds select a few contiguous runs of rays."""
    az, dz = np.arctan2(dirs[1], dirs[0]) + np.pi, dirs[2]  # az in [0, 2 pi]
    dz0, step = dz.min(), (np.ptp(dz) + 1e-9) / ELEVATION_BINS
    keys = np.minimum(((dz - dz0) / step).astype(np.int64), ELEVATION_BINS - 1) * 8.0 + az
    order = np.argsort(keys)  # by elevation bin, then azimuth (8 > 2 pi keeps bins apart)
    keys = keys[order]
    start, width, sin_lo, sin_hi = bounds
    g_lo = np.clip(np.floor((sin_lo - dz0) / step), 0, ELEVATION_BINS - 1).astype(np.int64)
    g_hi = np.clip(np.floor((sin_hi - dz0) / step), -1, ELEVATION_BINS - 1).astype(np.int64)
    n_groups = np.maximum(g_hi - g_lo + 1, 0)
    box = np.tile(np.repeat(np.arange(len(start)), n_groups), 2)
    cell = np.tile(8.0 * concat_ranges(g_lo, n_groups), 2)
    a0 = start[box] + np.pi
    a1 = a0 + width[box]  # a run [a0, min(a1, 2 pi)] and, past 2 pi, a wrapped run [0, a1 - 2 pi]
    half = len(box) // 2
    a0[half:], a1[:half], a1[half:] = 0.0, np.minimum(a1[:half], 2 * np.pi), a1[half:] - 2 * np.pi
    lo = np.searchsorted(keys, cell + a0)
    counts = np.maximum(np.searchsorted(keys, cell + a1, side="right") - lo, 0)
    ends = np.cumsum(counts)
    cuts = np.searchsorted(ends, np.arange(PAIR_BUDGET, ends[-1] if len(ends) else 0, PAIR_BUDGET))
    for part in np.split(np.arange(len(counts)), cuts):
        yield order[concat_ranges(lo[part], counts[part])], np.repeat(box[part], counts[part])


def _all_pairs(n_rays: int, n_boxes: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every (ray, box) pair, in chunks."""
    step = max(1, PAIR_BUDGET // n_boxes)
    for first in range(0, n_rays, step):
        rays, box = np.divmod(np.arange(min(step, n_rays - first) * n_boxes), n_boxes)
        yield rays + first, box


def _columns(origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """(3, 1 or R) origins, (3, R) directions and whether the origin is shared."""
    dirs = np.ascontiguousarray(np.asarray(dirs, np.float64).reshape(-1, 3).T)
    origins = np.asarray(origins, np.float64)
    shared = origins.ndim == 1
    return np.ascontiguousarray(origins.reshape(-1, 3).T), dirs, shared


def cast_rays(origins: np.ndarray, dirs: np.ndarray, boxes: np.ndarray, max_range: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of unit rays with the ground plane z = 0 and upright boxes.

    origins: (R, 3), or one (3,) origin shared by all rays (much faster: only rays within a
    box's angular bounds are tested against it); dirs: (R, 3) unit vectors; boxes: (K, 7).
    Returns distance (R,) (inf beyond `max_range`) and hit_index (R,): box index, GROUND or
    NOTHING. Boxes that contain a ray's origin are invisible to it.
    """
    origins, dirs, shared = _columns(origins, dirs)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where((dirs[2] < 0) & (origins[2] >= 0), -origins[2] / dirs[2], np.inf)
    dist = np.where(t_ground <= max_range, t_ground, np.inf)
    hit = np.where(np.isfinite(dist), GROUND, NOTHING)
    index = np.arange(len(boxes))
    if shared and len(boxes):
        in_range, bounds = _box_bounds(origins[:, 0], boxes, max_range)
        index = index[in_range]
        pairs = _shared_origin_pairs(dirs, bounds[:, in_range]) if len(index) else iter(())
    else:
        pairs = _all_pairs(dirs.shape[1], len(boxes)) if len(boxes) else iter(())
    table = _box_table(boxes[index])
    for rays, cand in pairs:
        t = _slab(origins if shared else origins[:, rays], dirs[:, rays], table[:, cand])[0]
        near = (t < dist[rays]) & (t <= max_range)
        rays, cand, t = rays[near], cand[near], t[near]
        np.minimum.at(dist, rays, t)
        best = t == dist[rays]
        hit[rays[best]] = index[cand[best]]
    return dist, hit


def surface_normals(origins: np.ndarray, dirs: np.ndarray, hit: np.ndarray, boxes: np.ndarray
                    ) -> np.ndarray:
    """(R, 3) outward unit normals at the surfaces `cast_rays` hit (0 where nothing was hit)."""
    origins, dirs, shared = _columns(origins, dirs)
    normals = np.zeros_like(dirs)
    normals[2, hit == GROUND] = 1.0
    on_box = np.flatnonzero(hit >= 0)
    table = _box_table(np.asarray(boxes, np.float64).reshape(-1, 7)[hit[on_box]])
    _, axis, d_local = _slab(origins if shared else origins[:, on_box], dirs[:, on_box], table)
    pick = (axis, np.arange(len(on_box)))
    local = np.zeros_like(d_local)
    local[pick] = -np.sign(d_local[pick])
    c, s = table[6], table[7]  # rotate back by +yaw
    normals[:, on_box] = c * local[0] - s * local[1], s * local[0] + c * local[1], local[2]
    return normals.T


def ground_material(xy: np.ndarray, roads: np.ndarray) -> np.ndarray:
    """(R,) ground material index into GROUND_COLORS / GROUND_REFLECTIVITY of world points."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    material = np.zeros(len(xy), np.int64)
    covering = np.zeros(len(xy), np.int64)
    paint = np.zeros(len(xy), np.int64)
    for cx, cy, heading, half_length, half_width, lane in np.asarray(roads).reshape(-1, 6):
        u = np.array([np.cos(heading), np.sin(heading)])
        rel_x, rel_y = xy[:, 0] - cx, xy[:, 1] - cy
        along, lat = rel_x * u[0] + rel_y * u[1], rel_y * u[0] - rel_x * u[1]
        on = np.flatnonzero((np.abs(along) <= half_length) & (np.abs(lat) <= half_width))
        lat_on, along_on = np.abs(lat[on]), along[on]
        line = np.rint(lat_on / lane)  # 0: centre, last: edge, others dashed (4.5 m on, off)
        drawn = (line == 0) | (line * lane >= half_width - 0.5) | (along_on % 9.0 < 4.5)
        painted = drawn & (np.abs(lat_on - line * lane) < MARKING_HALF_WIDTH)
        paint[on[painted]] = np.where(line[painted] == 0, 3, 2)
        covering[on] += 1
    material[covering > 0] = 1
    single = covering == 1  # no paint inside intersections
    material[single & (paint > 0)] = paint[single & (paint > 0)]
    return material


def _visible(scene: Scene, origin: np.ndarray, dirs: np.ndarray, max_range: float,
             exclude: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cast_rays without box `exclude` (the sensor's own vehicle): distance, hit, normals."""
    keep = np.flatnonzero(np.arange(len(scene.boxes)) != (-1 if exclude is None else exclude))
    dist, hit = cast_rays(origin, dirs, scene.boxes[keep], max_range)
    normals = surface_normals(origin, dirs, hit, scene.boxes[keep])
    hit[hit >= 0] = keep[hit[hit >= 0]]
    return dist, hit, normals


def beam_elevations(beams: int) -> np.ndarray:
    """Beam elevations (degrees, top first) of a 64-beam (HDL-64) or 32-beam LiDAR."""
    if beams not in _VFOV:
        raise ValueError(f"LiDAR beams must be one of {sorted(_VFOV)}, got {beams}")
    return np.linspace(*_VFOV[beams], beams)


@lru_cache(maxsize=8)
def lidar_directions(beams: int, azimuth_steps: int) -> np.ndarray:
    """(beams * azimuth_steps, 3) unit ray directions in the LiDAR frame, beam-major (read-only)."""
    el = np.radians(beam_elevations(beams))[:, None]
    az = np.linspace(0.0, 2 * np.pi, azimuth_steps, endpoint=False)[None, :]
    dirs = np.stack(np.broadcast_arrays(np.cos(el) * np.cos(az), np.cos(el) * np.sin(az),
                                        np.sin(el)), axis=-1).reshape(-1, 3)
    dirs.flags.writeable = False
    return dirs


def lidar_scan(scene: Scene, pose: np.ndarray, beams: int, azimuth_steps: int,
               max_range: float, rng: np.random.Generator, exclude: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """One LiDAR sweep from `pose` (4x4 LiDAR -> world), ignoring box `exclude` (itself).

    Returns (N, 4) float32 [x, y, z, intensity] in the LiDAR frame for the returns within
    `max_range` (range noise ~2 cm, clipped at 2 sigma; intensity = surface reflectivity
    scaled by the incidence cosine, plus noise) and (N,) the hit index of each point.
    """
    local = lidar_directions(beams, azimuth_steps)
    dirs = _rotate(local, pose)
    dist, hit, normals = _visible(scene, pose[:3, 3], dirs, max_range, exclude)
    ok = np.flatnonzero(hit != NOTHING)
    dist, hit, normals, dirs = dist[ok], hit[ok], normals[ok], dirs[ok]
    ground = hit == GROUND
    refl = np.empty(len(ok))
    refl[~ground] = scene.reflectivity[hit[~ground]]
    ground_xy = pose[:2, 3] + dist[ground, None] * dirs[ground, :2]
    refl[ground] = GROUND_REFLECTIVITY[ground_material(ground_xy, scene.roads)]
    cos_inc = np.abs(np.einsum("ij,ij->i", normals, dirs))
    intensity = refl * (0.35 + 0.65 * cos_inc) + rng.normal(0.0, 0.02, len(ok))
    rng_noise = np.clip(rng.normal(0.0, RANGE_NOISE_M, len(ok)), -2 * RANGE_NOISE_M,
                        2 * RANGE_NOISE_M)
    points = np.empty((len(ok), 4), np.float32)
    points[:, :3] = local[ok] * (dist + rng_noise)[:, None]
    points[:, 3] = np.clip(intensity, 0.0, 1.0)
    return points, hit


def intrinsic_from_fov(width: int, height: int, hfov_deg: float = 100.0) -> np.ndarray:
    """3x3 pinhole K with square pixels and the principal point at the image centre."""
    f = 0.5 * width / np.tan(np.radians(hfov_deg) / 2)
    return np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


@lru_cache(maxsize=8)
def _pixel_rays(width: int, height: int, intrinsic: tuple[float, ...]) -> np.ndarray:
    """(H * W, 3) unit rays through the pixel centres in the camera frame (read-only)."""
    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    cam = _rotate(np.stack([u, v, np.ones_like(u)], axis=-1).reshape(-1, 3),
                  np.linalg.inv(np.reshape(intrinsic, (3, 3))))
    cam /= np.linalg.norm(cam, axis=1, keepdims=True)
    cam.flags.writeable = False
    return cam


def render_camera(scene: Scene, cam_to_world: np.ndarray, intrinsic: np.ndarray,
                  size: tuple[int, int], max_range: float = 150.0,
                  exclude: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ray-cast image of a pinhole camera (OpenCV axes: x right, y down, z forward).

    One ray per pixel centre; size is (W, H). Returns (H, W, 3) uint8 RGB (surface colour
    with Lambertian shading, painted roads, blue sky gradient) and (H, W) float32 depth
    along the optical axis, 0 where nothing was hit.
    """
    width, height = size
    cam = _pixel_rays(width, height, tuple(np.asarray(intrinsic, np.float64).ravel()))
    dirs = _rotate(cam, cam_to_world)
    origin = np.asarray(cam_to_world, np.float64)[:3, 3]
    dist, hit, normals = _visible(scene, origin, dirs, max_range, exclude)
    on_box, ground, sky = hit >= 0, hit == GROUND, hit == NOTHING
    rgb = np.empty((len(hit), 3))
    up = np.sqrt(np.clip(dirs[sky, 2:3], 0.0, 1.0))  # sky: pale at the horizon, deep at the top
    rgb[sky] = (1 - up) * [0.78, 0.86, 0.95] + up * [0.30, 0.50, 0.88]
    rgb[on_box] = scene.colors[hit[on_box]]
    xy = origin[:2] + dist[ground, None] * dirs[ground, :2]
    rgb[ground] = GROUND_COLORS[ground_material(xy, scene.roads)]
    solid = ~sky
    rgb[solid] *= (0.45 + 0.55 * np.clip(np.einsum("ij,j->i", normals[solid], SUN), 0.0, 1.0)
                   )[:, None]
    depth = np.where(solid, dist * cam[:, 2], 0.0)
    image = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8).reshape(height, width, 3)
    return image, depth.astype(np.float32).reshape(height, width)
