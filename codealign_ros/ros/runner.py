"""Run a node until Ctrl-C / SIGINT / SIGTERM or until it asks to stop."""
from __future__ import annotations

import signal
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """Create the node from `factory`, spin it, always shut down cleanly.

    A node stops early by calling `rclpy.try_shutdown()` or by raising SystemExit.
    """
    rclpy.init(args=args)
    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
    node = None
    try:
        node = factory()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        # A signal can land while the executor takes a message: rclpy then raises a bare
        # RuntimeError from the torn-down handle. Only a shutdown in progress excuses it.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            finish = getattr(node, "on_shutdown", None)
            if finish is not None:
                finish()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
