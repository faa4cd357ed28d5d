"""A node asked to stop while it is still starting counts as a clean stop, not a failure."""
from __future__ import annotations

import sys
import time

import pytest
import rclpy
from rclpy.node import Node

from codealign_ros.processes import ProcessGroup
from codealign_ros.ros.runner import run_node


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_stop_counts_our_sigint_as_a_clean_stop_and_keeps_real_failures() -> None:
    group = ProcessGroup()
    # Python's own SIGINT handler, as in a node still importing (a test run started in the
    # background inherits SIGINT ignored, which a child would keep)
    group.start_command("importing", _python(
        "import signal, time; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "time.sleep(60)"))
    group.start_command("failed", _python("import sys; sys.exit(3)"))
    group.start_command("handler", _python(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, lambda *_: sys.exit(5))\n"
        "print('up', flush=True); time.sleep(60)"))
    deadline = time.monotonic() + 30
    while group.procs["failed"].poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # let the handler install before the stop
    codes = group.stop(timeout_s=10)
    assert codes == {"importing": 0, "failed": 3, "handler": 5}


def _shut_down_then_build() -> Node:
    rclpy.try_shutdown()  # what rclpy's SIGINT handler does mid start-up
    return Node("stopped_while_starting")


def _fails_to_build() -> Node:
    raise ValueError("bad value for max_age_s")


def test_a_node_stopped_while_it_is_built_exits_cleanly() -> None:
    assert run_node(_shut_down_then_build, [], "probe_node") == 0


def test_a_node_that_cannot_be_built_still_says_why() -> None:
    with pytest.raises(SystemExit, match="probe_node: cannot start: bad value for max_age_s"):
        run_node(_fails_to_build, [], "probe_node")
