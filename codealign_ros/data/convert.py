"""`codealign convert`: OPV2V / DAIR-V2X frames -> rosbag2 (`ConvertConfig`, `convert`)."""
from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator

from rosbags.rosbag2.errors import WriterError
from tqdm import tqdm

from codealign_ros.data.bag import STORAGES, write_bag
from codealign_ros.data.types import CooperativeFrame, DatasetError

DATASETS = ("opv2v", "dairv2x")
OPV2V_SPLITS = ("train", "validate", "test")
Loaders = list[tuple[str, Callable[[], CooperativeFrame]]]  # (frame label, load function)


def iter_dataset_frames(dataset: str, root: Path, scenario: str | None = None,
                        skip_bad: bool = False,
                        on_skip: Callable[[str, Exception], None] | None = None,
                        split: str = "train") -> Iterator[CooperativeFrame]:
    """Frames of an OPV2V split (optionally one scenario) or of DAIR-V2X, in order.

    The dataset is opened now (a bad root raises DatasetError here); frames load lazily.
    With `skip_bad`, a frame whose load raises DatasetError is passed to `on_skip(label,
    error)` and skipped; otherwise the error propagates.
    """
    root = Path(root)
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    if not root.is_dir():
        raise DatasetError(root, "dataset root is not a directory")
    loaders = _opv2v_loaders(root, split, scenario) if dataset == "opv2v" \
        else _dairv2x_loaders(root, scenario)
    return _load_frames(loaders, skip_bad, on_skip)


def _opv2v_loaders(root: Path, split: str, scenario: str | None) -> Loaders:
    from codealign_ros.data.opv2v import OPV2VDataset

    data = OPV2VDataset(root, split)
    scenarios = list(data.scenarios())
    if scenario is not None:
        if scenario not in scenarios:
            raise DatasetError(root, f"split {split!r} has no scenario {scenario!r}; "
                                     f"available: {', '.join(scenarios) or 'none'}")
        scenarios = [scenario]
    return [(f"{name}/{ts}", functools.partial(data.load, name, ts))
            for name in scenarios for ts in data.timestamps(name)]


def _dairv2x_loaders(root: Path, scenario: str | None) -> Loaders:
    if scenario is not None:
        raise ValueError("--scenario applies to opv2v only")
    from codealign_ros.data.dairv2x import DairV2XDataset

    data = DairV2XDataset(root)
    return [(str(fid), functools.partial(data.load, fid)) for fid in data.frame_ids()]


def _load_frames(loaders: Loaders, skip_bad: bool,
                 on_skip: Callable[[str, Exception], None] | None) -> Iterator[CooperativeFrame]:
    for label, load in loaders:
        try:
            frame_ = load()
        except DatasetError as err:
            if not skip_bad:
                raise
            if on_skip is not None:
                on_skip(label, err)
            continue
        yield frame_


def add_convert_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `convert` sub-command (dataset -> rosbag2) to a sub-parser collection."""
    parser = subparsers.add_parser(
        "convert", help="convert OPV2V / DAIR-V2X frames into a rosbag2 (mcap or sqlite3)",
        description="Write every frame of a dataset as sensor_msgs (PointCloud2, Image, "
                    "CameraInfo), PoseStamped, TF (/tf, /tf_static), ground-truth "
                    "Detection3DArray and MarkerArray topics into a new rosbag2, stamped "
                    "with the frames' capture times. "
                    "Play it back with `codealign play BAG` (no `ros2 bag` needed).",
        epilog="example: codealign convert --dataset opv2v --root ~/OPV2V --split test "
               "--scenario 2021_08_18_19_48_05 --out bags/opv2v_test")
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="dataset format")
    parser.add_argument("--root", required=True, type=Path, help="dataset root directory")
    parser.add_argument("--out", required=True, type=Path,
                        help="bag directory to create (must not exist)")
    parser.add_argument("--scenario", default=None,
                        help="convert only this scenario (opv2v; default: all of the split)")
    parser.add_argument("--split", default="train", choices=OPV2V_SPLITS,
                        help="opv2v split (default: train, as `codealign synth`)")
    parser.add_argument("--storage", default="mcap", choices=tuple(STORAGES),
                        help="rosbag2 storage plugin (default: mcap)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip frames with missing or malformed files instead of failing")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar")
    parser.set_defaults(func=run_convert)
    return parser


@dataclass(frozen=True)
class ConvertConfig:
    """What `codealign convert` converts (the CLI flags, typed)."""

    dataset: str
    root: Path
    out: Path
    scenario: str | None = None
    split: str = "train"
    storage: str = "mcap"
    skip_bad: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "ConvertConfig":
        """The config of parsed `codealign convert` arguments."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def convert(config: ConvertConfig, progress: bool = True) -> int:
    """Convert the dataset of `config` into a bag; prints a summary. 0 ok, 1 nothing
    converted, 2 error."""
    skipped: list[str] = []

    def on_skip(label: str, err: Exception) -> None:
        skipped.append(label)
        tqdm.write(f"convert: skipped {label}: {err}", file=sys.stderr)

    try:
        frames = iter_dataset_frames(config.dataset, config.root, config.scenario,
                                     config.skip_bad, on_skip, split=config.split)
        stats = write_bag(frames, config.out, storage=config.storage, progress=progress)
    except (DatasetError, WriterError, ValueError) as err:
        print(f"convert: error: {err}", file=sys.stderr)
        return 2
    print(f"convert: wrote {config.out} ({config.storage})\n"
          f"  frames:    {stats.frames} ({len(skipped)} skipped), "
          f"{stats.agent_seconds:.1f} agent-seconds, {stats.duration_s:.1f} s bag time\n"
          f"  messages:  {stats.messages}\n"
          f"  size:      {stats.bytes / 1e6:.1f} MB, "
          f"{stats.bytes_per_agent_second / 1e6:.2f} MB per agent-second\n"
          f"  speed:     {stats.frames_per_s:.1f} frames/s")
    if not stats.frames:
        print("convert: no frames converted", file=sys.stderr)
        return 1
    return 0


def run_convert(args: argparse.Namespace) -> int:
    """Run `codealign convert`: `convert` with the parsed arguments."""
    return convert(ConvertConfig.from_args(args), progress=getattr(args, "progress", True))
