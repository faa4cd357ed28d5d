"""`codealign launch GRAPH [arg:=value ...]`: run a launch graph without `ros2 launch`.

Runs the NodeSpecs of config/launch.yaml (the same graphs as launch/*.launch.py) as child
processes, prefixes each output line with the node name, and stops every child (SIGINT,
then SIGTERM, then SIGKILL) on Ctrl-C / SIGTERM or as soon as one child exits, naming it.
Exit code: 0 after a clean stop, 1 when a child failed or did not stop cleanly, 2 for bad
arguments or nodes that are not installed.
"""
from __future__ import annotations

import argparse
import shlex
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Sequence, TextIO

from codealign_ros.launch import (LaunchGraphError, NodeSpec, graph_arguments,
                                  graph_description, graph_names, load_graph, locate,
                                  split_available)

STOP_TIMEOUT_S = 10.0  # per escalation step (SIGINT -> SIGTERM -> SIGKILL); nodes load models
POLL_S = 0.1
_PRINT_LOCK = threading.Lock()


def _say(text: str, stream: TextIO | None = None) -> None:
    with _PRINT_LOCK:
        print(text, file=stream or sys.stdout, flush=True)


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """{"name": "value"} from ["name:=value", ...]; LaunchGraphError for other forms."""
    overrides = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise LaunchGraphError(f"expected name:=value, got {item!r}")
        overrides[name] = value
    return overrides


def graphs_help() -> str:
    """The graphs and their arguments with defaults, for --help."""
    lines = ["graphs (config/launch.yaml) and their arguments:"]
    for graph in graph_names():
        lines.append(f"  {graph}: {graph_description(graph)}")
        for name, spec in graph_arguments(graph).items():
            default = str(spec.default).lower() if isinstance(spec.default, bool) \
                else spec.default
            lines.append(f"      {name}:={default}  {spec.description}")
    return "\n".join(lines)


def _pump(name: str, stream: TextIO) -> None:
    for line in stream:
        _say(f"[{name}] {line.rstrip()}")
    stream.close()


class _Stop:
    """Set by SIGINT / SIGTERM while the graph runs."""

    def __init__(self) -> None:
        self.event, self.signal = threading.Event(), None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "_Stop":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal = signal.Signals(signum).name
        self.event.set()

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def _exited(group: Any) -> dict[str, int]:
    return {name: proc.returncode for name, proc in group.procs.items()
            if proc.poll() is not None}


def _start(group: Any, spec: NodeSpec) -> threading.Thread:
    argv = spec.command(program=locate(spec))
    proc = group.start_command(spec.name, argv, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, errors="replace",
                               bufsize=1, process_group=0)
    _say(f"launch: started {spec.name} (pid {proc.pid}): {shlex.join(argv)}")
    pump = threading.Thread(target=_pump, args=(spec.name, proc.stdout), daemon=True)
    pump.start()
    return pump


def run_specs(specs: list[NodeSpec], env: dict[str, str] | None = None) -> int:
    """Run the nodes until a signal or until one exits; stop all; 0 when all ended cleanly."""
    from codealign_ros.processes import ProcessGroup

    group = ProcessGroup({"PYTHONUNBUFFERED": "1", **(env or {})})
    pumps: list[threading.Thread] = []
    with _Stop() as stop:
        try:
            for spec in specs:
                pumps.append(_start(group, spec))
            while not stop.event.wait(POLL_S) and not _exited(group):
                pass
        finally:
            first = _exited(group)
            cause = f"got {stop.signal}" if stop.signal else ", ".join(
                f"{name} exited with code {code}" for name, code in first.items())
            _say(f"launch: {cause or 'stopping'}; stopping {len(group.procs)} node(s)")
            codes = group.stop(STOP_TIMEOUT_S)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for pump in pumps:
        pump.join(max(deadline - time.monotonic(), 0.0))
    _say("launch: exit codes: " + ", ".join(f"{n}={c}" for n, c in codes.items()))
    return 0 if codes and all(code == 0 for code in codes.values()) else 1


def run_launch(args: argparse.Namespace) -> int:
    """`codealign launch`: 0 clean stop, 1 a node failed, 2 bad arguments / not installed."""
    assignments = list(args.assignments)
    if {"-h", "--help"} & set(assignments):
        args.launch_parser.print_help()
        return 0
    dry_run = args.dry_run or "--dry-run" in assignments
    try:
        specs = load_graph(args.graph, parse_assignments(
            [a for a in assignments if a != "--dry-run"]))
    except LaunchGraphError as err:
        _say(f"launch: error: {err}", sys.stderr)
        return 2
    run, skipped = split_available(specs)
    for spec in skipped:
        _say(f"launch: skipping {spec.name}: {spec.executable} is not installed")
    missing = [s for s in run if locate(s) is None]
    if dry_run:
        for spec in run:
            note = "  # not installed" if spec in missing else ""
            _say(shlex.join(spec.command(program=locate(spec))) + note)
        return 0
    if missing:
        names = ", ".join(f"{s.name} ({s.module or s.executable})" for s in missing)
        _say(f"launch: error: not installed: {names}", sys.stderr)
        return 2
    if not run:
        _say("launch: nothing to run", sys.stderr)
        return 2
    return run_specs(run)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("graph", choices=graph_names(), metavar="GRAPH",
                        help=f"one of: {', '.join(graph_names())}")
    parser.add_argument("assignments", nargs=argparse.REMAINDER, metavar="NAME:=VALUE",
                        help="graph arguments, as for `ros2 launch`")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the node commands instead of running them (may also "
                             "follow GRAPH)")
    parser.set_defaults(launch_parser=parser)


def add_launch_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `launch` sub-command to a sub-parser collection."""
    parser = subparsers.add_parser(
        "launch", help="run a launch graph (vehicle, receiver, demo, ...) without ros2 launch",
        description=__doc__.split("\n\n")[1], epilog=graphs_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    parser.set_defaults(func=run_launch)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: `python -m codealign_ros.nodes.launcher GRAPH [name:=value ...]`."""
    parser = argparse.ArgumentParser(
        prog="codealign launch", description=__doc__.split("\n\n")[1], epilog=graphs_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    return run_launch(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
