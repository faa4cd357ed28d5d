"""`codealign synth`: generate the mini-V2X world in the OPV2V or DAIR-V2X-C layout."""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from codealign_ros.data.types import CooperativeFrame

DAIR_AGENTS = ("vehicle", "infrastructure")


def _image_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must look like 160x120, got {text!r}")
    if width < 8 or height < 8:
        raise argparse.ArgumentTypeError(f"image size {text} is too small (min 8x8)")
    return width, height


def add_synth_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register the `synth` sub-command."""
    p = subparsers.add_parser("synth", help="generate a cooperative-driving dataset",
                              description=__doc__)
    p.add_argument("--out", type=Path, required=True, help="output dataset root")
    p.add_argument("--format", choices=("opv2v", "dairv2x"), default="opv2v")
    p.add_argument("--scenes", type=int, default=1, help="scenarios to generate")
    p.add_argument("--frames", type=int, default=20, help="10 Hz frames per scenario")
    p.add_argument("--agents", type=int, default=3,
                   help="connected vehicles per scenario, 2..7 (opv2v; dairv2x has 1 + RSU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--world", default=None, metavar="NAME",
                   help="world preset of config/worlds.yaml (open, occluded, ...; "
                        "default: its `default`)")
    p.add_argument("--beams", type=int, choices=(32, 64), default=64, help="LiDAR beams")
    p.add_argument("--image-size", type=_image_size, default=(160, 120), metavar="WxH")
    p.add_argument("--rsu", action="store_true", help="add a road-side unit (opv2v)")
    p.add_argument("--split", choices=("train", "validate", "test"), default="train",
                   help="OPV2V split directory to write into")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_synth)


def as_dair(frame: CooperativeFrame) -> CooperativeFrame:
    """Keep the ego vehicle and the road-side unit, named as in DAIR-V2X-C."""
    ego = frame.agents[frame.ego_id]
    rsu = next(a for a in frame.agents.values() if a.is_rsu)
    agents = {DAIR_AGENTS[0]: dataclasses.replace(ego, agent_id=DAIR_AGENTS[0]),
              DAIR_AGENTS[1]: dataclasses.replace(rsu, agent_id=DAIR_AGENTS[1])}
    return dataclasses.replace(frame, agents=agents)


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """What `codealign synth` generates (the CLI flags, typed)."""

    out: Path
    format: str = "opv2v"
    scenes: int = 1
    frames: int = 20
    agents: int = 3
    seed: int = 0
    world: str | None = None
    beams: int = 64
    image_size: tuple[int, int] = (160, 120)
    rsu: bool = False
    split: str = "train"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "SynthConfig":
        """The config of parsed `codealign synth` arguments."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                      if hasattr(args, f.name)})


def generate(config: SynthConfig) -> Iterator[CooperativeFrame]:
    """All frames of all scenarios, in order."""
    from codealign_ros.data.world import World, WorldConfig

    dair = config.format == "dairv2x"
    world = WorldConfig(seed=config.seed, agents=2 if dair else config.agents,
                        rsu=config.rsu or dair, beams=config.beams,
                        image_size=config.image_size, world=config.world)
    for scene in range(config.scenes):
        name = f"synth_s{config.seed}_{scene:03d}"
        for frame in World(world, scene).frames(config.frames, name):
            yield as_dair(frame) if dair else frame


def synthesize(config: SynthConfig, progress: bool = True) -> int:
    """Generate and write the dataset of `config`; prints throughput. SystemExit on bad
    settings."""
    if config.scenes < 1 or config.frames < 1:
        raise SystemExit("synth: --scenes and --frames must be >= 1")
    from codealign_ros.data.world_presets import world_names

    if config.world is not None and config.world not in world_names():
        raise SystemExit(f"synth: unknown --world {config.world!r}; choose from "
                         f"{', '.join(world_names())} (config/worlds.yaml)")
    start, total = time.perf_counter(), config.scenes * config.frames
    frames = tqdm(generate(config), total=total, unit="frame", disable=not progress,
                  desc=f"synth {config.format}")
    if config.format == "opv2v":
        from codealign_ros.data.opv2v import write_opv2v_frame

        for frame in frames:
            write_opv2v_frame(config.out, config.split, frame)
    else:
        from codealign_ros.data.dairv2x import DairWriter

        rng = np.random.default_rng(config.seed)  # DAIR's infrastructure calibration error
        with DairWriter(config.out) as writer:
            for index, frame in enumerate(frames):
                writer.add(frame, index, system_error_offset=tuple(rng.normal(0.0, 0.3, 2)))
    elapsed = time.perf_counter() - start
    print(f"synth: {total} frames ({config.format}) in {elapsed:.1f} s = "
          f"{total / elapsed:.2f} frames/s -> {config.out}")
    return 0


def run_synth(args: argparse.Namespace) -> int:
    """`codealign synth`: `synthesize` with the parsed arguments."""
    return synthesize(SynthConfig.from_args(args), progress=not args.no_progress)
