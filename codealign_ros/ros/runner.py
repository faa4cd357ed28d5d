"""Run a node until Ctrl-C / SIGINT / SIGTERM or until it asks to stop."""
from __future__ import annotations

import signal
from typing import Callable

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node

# what a node's set-up raises for missing weights / config / files (OSError, ConfigError is a
# KeyError), a bad parameter value (ValueError, incl. PipelineError) or type (rclpy)
STARTUP_ERRORS = (OSError, LookupError, ValueError, RuntimeError, ParameterException)


def startup_failure(node: str, exc: BaseException) -> SystemExit:
    """One line naming why `node` cannot start and the fix (no traceback), exit status 1."""
    cause = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    cause = cause.strip() or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and "run " in cause:
        fix = ""  # the store's message names the command that makes the file
    else:
        from codealign_ros.ros.params import param_file

        what = "the path / model_dir" if isinstance(exc, (OSError, RuntimeError)) else "the"
        defaults = f", defaults in {param_file(node)}" if param_file(node).is_file() else ""
        fix = f"; fix: correct {what} parameter (`--ros-args -p name:=value`{defaults})"
    return SystemExit(f"{node}: cannot start: {cause}{fix}")


def run_node(factory: Callable[[], Node], args: list[str] | None = None,
             name: str | None = None) -> int:
    """Create the node from `factory`, spin it, always shut down cleanly.

    A node stops early by calling `rclpy.try_shutdown()` or by raising SystemExit; one that
    cannot start (STARTUP_ERRORS while `factory` runs) exits with one line naming `name`
    (the executable), the cause and the fix; one asked to stop while it starts exits 0.
    """
    rclpy.init(args=args)
    signal.signal(signal.SIGTERM, lambda *_: rclpy.try_shutdown())
    node = None
    try:
        try:
            node = factory()
        except Exception as exc:
            if not rclpy.ok():  # Ctrl-C / SIGINT landed while the node was being built
                return 0
            if isinstance(exc, STARTUP_ERRORS):
                raise startup_failure(name or getattr(factory, "__name__", "node"),
                                      exc) from None
            raise
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
