"""`codealign`: the command-line entry point (one sub-command per job)."""
from __future__ import annotations

import argparse
import os
import sys

from codealign_ros import __version__


def _demo(args: argparse.Namespace) -> int:
    """The demo graph on the embedded default: a generated mini-V2X scene replayed from a
    rosbag2 into one vehicle node per agent (ego m1 LiDAR, a camera vehicle, an m2 road-side
    unit) and the ego's fusion node over DDS, with the shipped mini weights. Prints a status
    line each second and a summary (AP ego-only vs fused, bytes per CodeMap, latency,
    drops); writes out/demo/summary.json and a BEV picture."""
    from codealign_ros.demo.cli import run_demo_cli

    return run_demo_cli(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `codealign` and its sub-commands."""
    parser = argparse.ArgumentParser(
        prog="codealign", description="CodeAlign V2X cooperative perception on ROS 2.")
    parser.add_argument("--version", action="version", version=f"codealign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    from codealign_ros.demo.cli import add_demo_arguments

    demo = sub.add_parser("demo", help="run the node graph on a generated scene with a summary",
                          description=_demo.__doc__)
    add_demo_arguments(demo)
    demo.set_defaults(func=_demo)
    _add_data_commands(sub)
    _add_model_commands(sub)
    return parser


def _add_model_commands(sub: argparse._SubParsersAction) -> None:
    """Training and evaluation (imported lazily: torch is slow to import)."""
    from codealign_ros.train.cli import add_eval_parser, add_train_parser, run_eval_cli, run_train

    from codealign_ros.train.paper_table import add_paper_table_parser

    add_train_parser(sub).set_defaults(func=run_train)
    add_eval_parser(sub).set_defaults(func=run_eval_cli)
    from codealign_ros.pipeline.stages import add_export_parser, run_export

    add_export_parser(sub).set_defaults(func=run_export)
    add_paper_table_parser(sub)


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    """Dataset generation, rosbag conversion and replay."""
    from codealign_ros.data.convert import add_convert_parser
    from codealign_ros.data.synth import add_synth_parser
    from codealign_ros.data.visibility import add_stats_parser
    from codealign_ros.nodes.bag_player import add_play_parser
    from codealign_ros.nodes.launcher import add_launch_parser

    add_synth_parser(sub)
    add_stats_parser(sub)
    add_convert_parser(sub)
    add_play_parser(sub)
    add_launch_parser(sub)
    from codealign_ros.keys_cli import add_keys_parser

    add_keys_parser(sub)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the chosen sub-command."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
