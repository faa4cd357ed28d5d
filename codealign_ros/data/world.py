"""A deterministic mini cooperative-driving world rendered into `CooperativeFrame`s.

Layout: 2-4 straight roads on a grid (2 lanes per direction, 3.5 m lanes, right-hand
traffic) crossing at intersections, buildings and walls off the road, background traffic and
a platoon of connected vehicles (CAVs) in lanes, optionally a road-side unit (RSU) on a pole
at the central intersection. Every lane pair of a road forms a closed loop (U-turns at the
road ends); all vehicles of a loop share its speed, so they keep their spawn spacing.
Vehicle ids are 3-digit ints; the CAVs' ascend, so the ego (first) has the smallest, as
OPV2V readers choose it.

Time: frame k of a scenario has the OPV2V-like key `"%06d" % (tick0 + 2 k)` with tick0 a
seed-dependent even number, 0.05 s per tick (10 Hz frames), and
`stamp_ns = int(key) * 50_000_000 + (1_600_000_000 + 1000 * scenario_index) * NS_PER_S`.
Everything is a function of (seed, scenario_index): np.random.default_rng(seed +
7919 * scenario_index) lays the world out; sensor noise of frame k uses (that seed, k).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from codealign_ros.core.geometry import box_corners, rt_to_matrix, wrap_angle, yaw_matrix
from codealign_ros.data.sensors import Scene, intrinsic_from_fov, lidar_scan, render_camera
from codealign_ros.data.types import NS_PER_S, AgentFrame, CameraFrame, CooperativeFrame, agent_name
from codealign_ros.data.world_presets import SIZES, WorldPreset, default_world, load_world

LANE_WIDTH = 3.5
ROAD_HALF_WIDTH = 2 * LANE_WIDTH  # 2 lanes per direction
ROAD_HALF_LENGTH = 100.0
SIDEWALK = 3.0
SLOT = 13.0  # minimum spawn spacing along a lane (longest truck + gap)
FRAME_DT = 0.1
TICKS_PER_FRAME = 2
NS_PER_TICK = 50_000_000
BASE_STAMP_S = 1_600_000_000
SCENARIO_STAMP_STEP_S = 1000
VEHICLE_LIDAR_HEIGHT = 1.9
CAMERA_HFOV_DEG = 100.0
CAMERA_RANGE = 150.0
REFLECTIVITY = {"vehicle": 0.55, "building": 0.30, "wall": 0.25}
# Camera mounts (x, y, z offset from the LiDAR, yaw deg, pitch-down deg): front, right, left, back.
VEHICLE_CAMERAS = [(1.0, 0.0, -0.2, 0.0, 0.0), (0.0, -0.6, -0.2, -90.0, 0.0),
                   (0.0, 0.6, -0.2, 90.0, 0.0), (-1.2, 0.0, -0.2, 180.0, 0.0)]
RSU_CAMERAS = [(0.0, 0.0, -0.3, yaw, 15.0) for yaw in (0.0, -90.0, 90.0, 180.0)]


@dataclass
class WorldConfig:
    """World size and sensor settings (agents: connected vehicles, 2..7; beams: 32 or 64).

    world: a preset of config/worlds.yaml (None: its default); background_vehicles: moving
    traffic, None for the preset's number."""

    seed: int
    agents: int = 3
    rsu: bool = False
    beams: int = 64
    azimuth_steps: int = 1024
    image_size: tuple[int, int] = (160, 120)
    lidar_range: float = 100.0
    background_vehicles: int | None = None
    world: str | None = None

    def __post_init__(self) -> None:
        if self.world is None:
            self.world = default_world()
        self.preset: WorldPreset = load_world(self.world)  # ConfigError for an unknown name
        if self.background_vehicles is None:
            self.background_vehicles = self.preset.background_vehicles
        if self.seed < 0:
            raise ValueError(f"WorldConfig.seed must be >= 0, got {self.seed}")
        if not 2 <= self.agents <= 7:
            raise ValueError(
                f"WorldConfig.agents must be 2..7 connected vehicles, got {self.agents}")
        if self.beams not in (32, 64):
            raise ValueError(f"WorldConfig.beams must be 32 or 64, got {self.beams}")
        if self.azimuth_steps < 8 or self.background_vehicles < 0 or self.lidar_range <= 0:
            raise ValueError("WorldConfig: azimuth_steps >= 8, background_vehicles >= 0 and "
                             "lidar_range > 0 are required")
        if min(self.image_size) < 8:
            raise ValueError(f"WorldConfig.image_size too small: {self.image_size}")


def _aabb(boxes: np.ndarray) -> np.ndarray:
    """(M, 4) [xmin, ymin, xmax, ymax] of boxes' footprints."""
    xy = box_corners(boxes)[:, :4, :2]
    return np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1)


def _overlaps(a: np.ndarray, b: np.ndarray, margin: float = 0.0) -> np.ndarray:
    """(len(a), len(b)) whether AABBs overlap with `margin` to spare."""
    return ((a[:, None, :2] < b[None, :, 2:] + margin).all(-1)
            & (b[None, :, :2] < a[:, None, 2:] + margin).all(-1))


def _hsv_colors(hue: np.ndarray, sat: float, val: float) -> np.ndarray:
    """(M, 3) RGB of hues in [0, 1)."""
    k = (np.array([5.0, 3.0, 1.0]) + hue[:, None] * 6) % 6
    return val - val * sat * np.clip(np.minimum(k, 4 - k), 0, 1)


def _camera_rig(mounts: list[tuple[float, float, float, float, float]]) -> list[np.ndarray]:
    """Camera -> LiDAR transforms (camera in OpenCV axes) of (x, y, z, yaw, pitch-down) mounts."""
    rig = []
    for x, y, z, yaw, pitch in mounts:
        cy, sy = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
        cp, sp = np.cos(np.radians(pitch)), np.sin(np.radians(pitch))
        forward, right = np.array([cp * cy, cp * sy, -sp]), np.array([sy, -cy, 0.0])
        rig.append(rt_to_matrix(np.column_stack([right, np.cross(forward, right), forward]),
                                [x, y, z]))
    return rig


class World:
    """Roads, occluders, traffic and sensing agents of one scenario (see the module doc).

    static_boxes: (S, 7) buildings and walls; box_ids / box_classes: every vehicle, the CAVs
    first (box i of `vehicle_boxes` belongs to CAV cav_ids[i] for i < agents); roads: (Q, 6)
    [cx, cy, heading, half_length, half_width, lane_width].
    """

    def __init__(self, config: WorldConfig, scenario_index: int = 0) -> None:
        self.config, self.scenario_index = config, scenario_index
        self._seed = config.seed + 7919 * scenario_index
        rng = np.random.default_rng(self._seed)
        self.roads = self._make_roads(rng)
        self.static_boxes, static_colors, static_refl = self._make_occluders(rng)
        self._make_traffic(rng)
        self._make_parked()
        self.box_ids = rng.choice(np.arange(100, 1000), len(self.box_classes), replace=False)
        self.box_ids[:self.config.agents].sort()
        self.cav_ids = [int(i) for i in self.box_ids[:self.config.agents]]
        count = len(self.box_ids)
        self._colors = np.concatenate(
            [_hsv_colors((self.box_ids * 0.618034) % 1.0, 0.65, 0.85), static_colors])
        self._reflectivity = np.concatenate([np.full(count, REFLECTIVITY["vehicle"]), static_refl])
        self.rsu_pose = self._make_rsu(rng) if config.rsu else None
        self.tick0 = 2 * int(rng.integers(20, 500))
        width, height = config.image_size
        self.intrinsic = intrinsic_from_fov(width, height, CAMERA_HFOV_DEG)
        self._rigs = {False: _camera_rig(VEHICLE_CAMERAS), True: _camera_rig(RSU_CAMERAS)}

    # -- layout -------------------------------------------------------------------------
    def _make_roads(self, rng: np.random.Generator) -> np.ndarray:
        """A cross at the origin, plus up to two more roads forming a grid."""
        preset = self.config.preset
        gap = rng.uniform(*preset.block)
        grid = [(0.0, 0.0, 0.0), (0.0, 0.0, np.pi / 2), (0.0, gap, 0.0), (gap, 0.0, np.pi / 2)]
        chosen = np.array(grid[:int(rng.integers(preset.roads[0], preset.roads[1] + 1))])
        return np.column_stack([chosen, np.tile([ROAD_HALF_LENGTH, ROAD_HALF_WIDTH, LANE_WIDTH],
                                                (len(chosen), 1))])

    def _road_frames(self, road: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre (.., 2), direction (.., 2) and left normal (.., 2) of road rows."""
        u = np.stack([np.cos(road[..., 2]), np.sin(road[..., 2])], axis=-1)
        return road[..., :2], u, np.stack([-u[..., 1], u[..., 0]], axis=-1)

    def _roadside_boxes(self, rng: np.random.Generator, n: int, setback: np.ndarray,
                        size: np.ndarray) -> np.ndarray:
        """n boxes (l along the road, w, h) beside random roads, `setback` from the centre line."""
        road = self.roads[rng.integers(0, len(self.roads), n)]
        centre, u, left = self._road_frames(road)
        along = rng.uniform(-road[:, 3], road[:, 3])
        lat = rng.choice([-1.0, 1.0], n) * (setback + size[:, 1] / 2)
        xy = centre + along[:, None] * u + lat[:, None] * left
        return np.column_stack([xy, size[:, 2] / 2, size, road[:, 2]])

    def _make_occluders(self, rng: np.random.Generator
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Buildings set back behind the sidewalk and low walls along it, none overlapping
        each other, a road, or (walls) an intersection. Returns boxes, colours, reflectivity."""
        preset = self.config.preset
        n_b, n_w = preset.buildings_per_road * len(self.roads), preset.walls_per_road * len(self.roads)
        buildings = self._roadside_boxes(
            rng, 20 * n_b, ROAD_HALF_WIDTH + SIDEWALK + rng.uniform(*preset.building_setback, 20 * n_b),
            rng.uniform(*preset.building_size, (20 * n_b, 3)))
        walls = self._roadside_boxes(rng, 20 * n_w, np.full(20 * n_w, ROAD_HALF_WIDTH + 2.0),
                                     rng.uniform([6, 0.4, 1.5], [20, 0.4, 3.0], (20 * n_w, 3)))
        centre, u, left = self._road_frames(self.roads)
        ends = (ROAD_HALF_LENGTH + 8) * np.abs(u) + ROAD_HALF_WIDTH * np.abs(left)
        road_aabb = np.concatenate([centre - ends, centre + ends], axis=1)
        clear = road_aabb + [-SIDEWALK, -SIDEWALK, SIDEWALK, SIDEWALK]
        building_ok = ~_overlaps(_aabb(buildings), clear).any(axis=1)
        wall_ok = _overlaps(_aabb(walls), clear + [-6, -6, 6, 6]).sum(axis=1) <= 1
        candidates = np.concatenate([buildings[building_ok], walls[wall_ok]])
        kind = np.repeat([0, 1], [building_ok.sum(), wall_ok.sum()])  # 0 building, 1 wall
        clash = _overlaps(_aabb(candidates), _aabb(candidates), 0.5)
        taken: list[int] = []
        for i in range(len(candidates)):  # greedy: keep a candidate if it clashes with none kept
            if (kind[taken] == kind[i]).sum() < (n_b, n_w)[kind[i]] and not clash[i, taken].any():
                taken.append(i)
        boxes, is_wall = candidates[taken], kind[taken] == 1
        shade = rng.uniform(0, 1, (len(boxes), 1))
        colors = np.where(is_wall[:, None], [0.62, 0.62, 0.60],
                          (1 - shade) * [0.84, 0.74, 0.56] + shade * [0.55, 0.38, 0.26])
        refl = np.where(is_wall, REFLECTIVITY["wall"], REFLECTIVITY["building"])
        return boxes, colors, refl

    def _make_traffic(self, rng: np.random.Generator) -> None:
        """Lane loops (two per road) with speeds, then CAVs and background vehicles in slots
        on the straight lanes, clear of U-turns and intersections (no overlaps at spawn)."""
        n_roads = len(self.roads)
        self._loop_road = np.repeat(np.arange(n_roads), 2)
        self._loop_radius = np.tile([LANE_WIDTH / 2, 1.5 * LANE_WIDTH], n_roads)
        self._loop_length = 4 * ROAD_HALF_LENGTH + 2 * np.pi * self._loop_radius
        self._loop_speed = np.clip(np.repeat(rng.uniform(5.0, 14.0, n_roads), 2)
                                   + rng.uniform(-1.0, 1.0, 2 * n_roads), 5.0, 14.0)
        # ego on road 0 heading +x, 30-55 m before the central intersection
        near, far = self.config.preset.ego_before_intersection
        ego_s = ROAD_HALF_LENGTH + rng.uniform(-far, -near)
        phase = rng.uniform(0, SLOT, 2 * n_roads)
        phase[:2] = ego_s
        per_loop = np.floor(self._loop_length / SLOT).astype(int)
        loop = np.repeat(np.arange(2 * n_roads), per_loop)
        k = np.arange(len(loop)) - np.repeat(np.cumsum(per_loop) - per_loop, per_loop)
        s = (phase[loop] + k * self._loop_length[loop] / per_loop[loop]) % self._loop_length[loop]
        xy, _ = self._loop_pose(loop, s)
        run = np.where(s < 2 * ROAD_HALF_LENGTH, s, s - 2 * ROAD_HALF_LENGTH - np.pi
                       * self._loop_radius[loop])  # in (0, 2 L) on the straight lanes
        straight = (run > SLOT / 2) & (run < 2 * ROAD_HALF_LENGTH - SLOT / 2)
        free = straight & ~self._in_other_road(xy, self._loop_road[loop], 6.0)
        # CAVs: slots of the ego's direction (segment A of road 0's loops) within 45 m of it
        ego_loop = int(rng.integers(0, 2))
        ego = np.flatnonzero((loop == ego_loop) & (k == 0))[0]
        along = s - ROAD_HALF_LENGTH
        gap = np.abs(along - along[ego])
        near = free & (loop < 2) & (gap < 45) & (s < 2 * ROAD_HALF_LENGTH)
        near[ego] = False
        weight = np.where(near, np.exp(-gap / 25.0), 0.0)
        cavs = rng.choice(len(loop), self.config.agents - 1, replace=False, p=weight / weight.sum())
        chosen = np.concatenate([[ego], cavs])
        free[chosen] = False
        dist = np.linalg.norm(xy - xy[ego], axis=1)
        weight = np.where(free, np.exp(-dist / self.config.preset.traffic_spread), 0.0)
        if np.count_nonzero(weight) < self.config.background_vehicles:
            raise ValueError(f"WorldConfig.background_vehicles={self.config.background_vehicles}"
                             f" exceeds the {np.count_nonzero(weight)} free lane slots")
        background = rng.choice(len(loop), self.config.background_vehicles, replace=False,
                                p=weight / weight.sum())
        mix = self.config.preset.traffic_mix
        classes = ["car"] * self.config.agents + list(
            rng.choice(list(mix), len(background), p=list(mix.values())))
        lo, hi = (np.array([SIZES[c][i] for c in classes]) for i in (0, 1))
        self.box_classes: list[str] = [str(c) for c in classes]
        self._sizes = rng.uniform(lo, hi)
        self._loop = loop[np.concatenate([chosen, background])]
        jitter = np.concatenate([np.zeros(len(chosen)), rng.uniform(-1.0, 1.0, len(background))])
        self._s0 = s[np.concatenate([chosen, background])] + jitter
        # ids (drawn after the parked vehicles): 3 digits (at most 7 CAVs + 264 lane slots +
        # parked), CAVs ascending: the ego has the smallest, as OPV2V readers pick it (numeric
        # and string order agree)

    def _make_parked(self) -> None:
        """Vehicles parked bumper to bumper along both curbs (preset `parked`), facing the
        traffic of their side, clear of intersections, walls and buildings. Drawn from their
        own random stream, so a preset without them lays out exactly as before."""
        parked = self.config.preset.parked
        self._parked = np.zeros((0, 7))
        if parked.fill <= 0.0:
            return
        rng = np.random.default_rng((self._seed, 1))
        mix = list(parked.mix)
        per_side = int(2 * ROAD_HALF_LENGTH / (SIZES["car"][0][0] + parked.gap[0])) + 1
        n_sides = 2 * len(self.roads)
        classes = rng.choice(mix, (n_sides, per_side), p=list(parked.mix.values()))
        lo = np.array([[SIZES[c][0] for c in row] for row in classes])
        hi = np.array([[SIZES[c][1] for c in row] for row in classes])
        size = rng.uniform(lo, hi)  # (sides, per_side, 3)
        gaps = rng.uniform(*parked.gap, (n_sides, per_side))
        end = -ROAD_HALF_LENGTH + np.cumsum(size[..., 0] + gaps, axis=1)
        along = end - size[..., 0] / 2
        side = np.repeat([[-1.0], [1.0]], len(self.roads), axis=1).T.reshape(n_sides, 1)
        road = np.repeat(np.arange(len(self.roads)), 2)
        lat = side * (ROAD_HALF_WIDTH + parked.offset + size[..., 1] / 2)
        centre, u, left = self._road_frames(self.roads[road])
        xy = centre[:, None] + along[..., None] * u[:, None] + lat[..., None] * left[:, None]
        yaw = np.broadcast_to(wrap_angle(self.roads[road, 2, None] + np.where(side > 0, np.pi, 0.0)),
                              along.shape)
        boxes = np.concatenate([xy, size[..., 2:] / 2, size, yaw[..., None]], -1).reshape(-1, 7)
        keep = ((end.ravel() < ROAD_HALF_LENGTH) & (rng.uniform(0, 1, boxes.shape[0]) < parked.fill)
                & ~self._in_other_road(boxes[:, :2], np.repeat(road, per_side),
                                       parked.corner_clearance))
        if len(self.static_boxes):
            keep &= ~_overlaps(_aabb(boxes), _aabb(self.static_boxes), 0.3).any(axis=1)
        boxes, kinds = boxes[keep], classes.ravel()[keep]
        clash = np.triu(_overlaps(_aabb(boxes), _aabb(boxes), 0.3), 1)  # rows of two roads at a corner
        self._parked = boxes[~clash.any(axis=0)]
        self.box_classes += [str(c) for c in kinds[~clash.any(axis=0)]]

    def _loop_pose(self, loop: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World xy (.., 2) and yaw of arc length s on lane loops: the +direction lane at
        lat -r from along -L to L, a left U-turn, the -direction lane at +r, a U-turn back."""
        r, length, half = self._loop_radius[loop], self._loop_length[loop], ROAD_HALF_LENGTH
        s = s % length
        centre, u, left = self._road_frames(self.roads[self._loop_road[loop]])
        turn1, back, turn2 = 2 * half, 2 * half + np.pi * r, 4 * half + np.pi * r
        phi = np.where(s >= turn2, s - turn2, s - turn1) / r
        segment = [s < turn1, s < back, s < turn2]  # else: the U-turn back to the start
        along = np.select(segment, [s - half, half + r * np.sin(phi), half - (s - back)],
                          -half - r * np.sin(phi))
        lat = np.select(segment, [-r, -r * np.cos(phi), r], r * np.cos(phi))
        heading = np.select(segment, [0.0, phi, np.pi], np.pi + phi)
        xy = centre + along[..., None] * u + lat[..., None] * left
        return xy, wrap_angle(self.roads[self._loop_road[loop], 2] + heading)

    def _in_other_road(self, xy: np.ndarray, own: np.ndarray, margin: float) -> np.ndarray:
        """Whether points lie within `margin` of a road other than `own` (an intersection)."""
        centre, u, left = self._road_frames(self.roads)
        rel = xy[:, None, :] - centre[None]
        inside = ((np.abs(np.einsum("pqi,qi->pq", rel, u)) <= ROAD_HALF_LENGTH)
                  & (np.abs(np.einsum("pqi,qi->pq", rel, left)) <= ROAD_HALF_WIDTH + margin))
        inside[np.arange(len(xy)), own] = False
        return inside.any(axis=1)

    def _make_rsu(self, rng: np.random.Generator) -> np.ndarray:
        """LiDAR -> world pose of a pole at a corner of the central intersection."""
        corner = rng.choice([-1.0, 1.0], 2) * (ROAD_HALF_WIDTH + 2.5)
        return yaw_matrix(corner[0], corner[1], rng.uniform(5.0, 6.0),
                          float(np.arctan2(-corner[1], -corner[0])))

    # -- time ---------------------------------------------------------------------------
    def vehicle_boxes(self, time_s: float) -> np.ndarray:
        """(M, 7) world boxes of all vehicles `time_s` seconds after the first frame."""
        xy, yaw = self._loop_pose(self._loop, self._s0 + self._loop_speed[self._loop] * time_s)
        moving = np.column_stack([xy, self._sizes[:, 2] / 2, self._sizes, yaw])
        return np.concatenate([moving, self._parked]) if len(self._parked) else moving

    def stamp_ns(self, timestamp: str) -> int:
        """Capture time of a frame key (see the module doc)."""
        base_s = BASE_STAMP_S + SCENARIO_STAMP_STEP_S * self.scenario_index
        return int(timestamp) * NS_PER_TICK + base_s * NS_PER_S

    def _sense(self, scene: Scene, pose: np.ndarray, exclude: int | None,
               rng: np.random.Generator, is_rsu: bool, name: str) -> AgentFrame:
        cfg = self.config
        points, _ = lidar_scan(scene, pose, cfg.beams, cfg.azimuth_steps, cfg.lidar_range,
                               rng, exclude)
        cameras = []
        for cam_to_lidar in self._rigs[is_rsu]:
            image, depth = render_camera(scene, pose @ cam_to_lidar, self.intrinsic,
                                         cfg.image_size, CAMERA_RANGE, exclude)
            cameras.append(CameraFrame(image, self.intrinsic.copy(),
                                       np.linalg.inv(cam_to_lidar), depth))
        return AgentFrame(name, points, pose, cameras, is_rsu)

    def frames(self, n: int, name: str) -> Iterator[CooperativeFrame]:
        """n consecutive 10 Hz frames of scenario `name`: sensor data of every agent
        (CAVs ego first, then the RSU) and the ground-truth boxes of all vehicles."""
        for k in range(n):
            boxes = self.vehicle_boxes(k * FRAME_DT)
            scene = Scene(np.concatenate([boxes, self.static_boxes]), self._colors,
                          self._reflectivity, self.roads)
            rng = np.random.default_rng((self._seed, k))
            agents = {}
            for i, cav_id in enumerate(self.cav_ids):
                x, y, _, _, _, _, yaw = boxes[i]
                pose = yaw_matrix(x, y, VEHICLE_LIDAR_HEIGHT, yaw)
                agents[agent_name(cav_id)] = self._sense(scene, pose, i, rng, False,
                                                         agent_name(cav_id))
            if self.rsu_pose is not None:
                agents[agent_name(-1)] = self._sense(scene, self.rsu_pose, None, rng, True,
                                                     agent_name(-1))
            timestamp = f"{self.tick0 + TICKS_PER_FRAME * k:06d}"
            yield CooperativeFrame(name, timestamp, self.stamp_ns(timestamp), agents, boxes,
                                   self.box_ids.copy(), list(self.box_classes))
