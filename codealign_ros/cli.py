"""`codealign`: the command-line entry point (one sub-command per job)."""
from __future__ import annotations

import argparse
import os
import sys
import time

from codealign_ros import __version__


def _demo(args: argparse.Namespace) -> int:
    """Transport demo: synthetic agents publish CodeMaps, a monitor reports bytes and rates."""
    from codealign_ros.processes import ProcessGroup

    agents = [("cav_1", "m1", "g1", "zstd"), ("cav_2", "m4", "g2", "zlib"),
              ("rsu_1", "m2", "g1", "raw")][: args.agents]
    env = {"ROS_DOMAIN_ID": str(args.domain_id)} if args.domain_id is not None else {}
    with ProcessGroup(env) as group:
        group.start_module("monitor", "codealign_ros.nodes.codemap_monitor")
        for seed, (agent, modality, space, encoding) in enumerate(agents):
            group.start_module(agent, "codealign_ros.nodes.codemap_source", {
                "agent_id": agent, "modality": modality, "code_space": space,
                "encoding": encoding, "seed": seed, "rate_hz": args.rate})
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline and not group.failed():
            time.sleep(0.2)
        failed = group.failed()
    if failed:
        print(f"demo: processes failed: {failed}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `codealign` and its sub-commands."""
    parser = argparse.ArgumentParser(
        prog="codealign", description="CodeAlign V2X cooperative perception on ROS 2.")
    parser.add_argument("--version", action="version", version=f"codealign {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run the transport demo (agents -> DDS -> monitor)",
                          description=_demo.__doc__)
    demo.add_argument("--seconds", type=float, default=8.0, help="how long to run (default 8)")
    demo.add_argument("--agents", type=int, default=3, choices=(1, 2, 3), help="sending agents")
    demo.add_argument("--rate", type=float, default=10.0, help="code maps per second per agent")
    demo.add_argument("--domain-id", type=int, default=None,
                      help="ROS_DOMAIN_ID for the demo graph (default: inherited)")
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
    from codealign_ros.pipeline.export import add_export_parser, run_export

    add_export_parser(sub).set_defaults(func=run_export)
    add_paper_table_parser(sub)


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    """Dataset generation, rosbag conversion and replay."""
    from codealign_ros.data.bag import add_convert_parser
    from codealign_ros.data.synth import add_synth_parser
    from codealign_ros.nodes.bag_player import add_play_parser
    from codealign_ros.nodes.launcher import add_launch_parser

    add_synth_parser(sub)
    add_convert_parser(sub)
    add_play_parser(sub)
    add_launch_parser(sub)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the chosen sub-command."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
