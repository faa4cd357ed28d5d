"""rclpy helpers of the counted transport: message-lost events, steady-clock timers, and
the CPU meter every node reports on /diagnostics (`cpu_percent`)."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

from rclpy.clock import Clock, ClockType
from rclpy.event_handler import SubscriptionEventCallbacks, UnsupportedEventTypeError
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.timer import Timer

__all__ = ["CpuMeter", "LostCounter", "steady_timer", "subscribe_counting_lost"]


class LostCounter:
    """Total of the RMW's message-lost events of one subscription (`supported` False when the
    RMW does not report them)."""

    def __init__(self) -> None:
        self.total = 0
        self.supported = False
        self._lock = threading.Lock()

    def __call__(self, info: Any) -> None:
        with self._lock:
            self.total += int(getattr(info, "total_count_change", 0))


def subscribe_counting_lost(node: Node, msg_type: Any, topic: str, callback: Callable,
                            qos: QoSProfile, lost: LostCounter) -> Any:
    """`node.create_subscription` with a message-lost event counted in `lost` where the RMW
    supports it (else a plain subscription, `lost.supported` False)."""
    try:
        sub = node.create_subscription(
            msg_type, topic, callback, qos,
            event_callbacks=SubscriptionEventCallbacks(message_lost=lost))
        lost.supported = True
        return sub
    except UnsupportedEventTypeError:
        node.get_logger().info("this RMW reports no message-lost events; not counted")
        return node.create_subscription(msg_type, topic, callback, qos)


def steady_timer(node: Node, period_s: float, callback: Callable[[], None]) -> Timer:
    """A timer on the steady clock: diagnostics keep their period under sim time (a paused
    or replayed /clock) too."""
    return node.create_timer(period_s, callback, clock=Clock(clock_type=ClockType.STEADY_TIME))


class CpuMeter:
    """CPU use of this process (all threads) since the previous reading, in % of one core."""

    def __init__(self) -> None:
        self._cpu, self._wall = time.process_time(), time.monotonic()

    def percent(self) -> float:
        cpu, wall = time.process_time(), time.monotonic()
        used = 100.0 * (cpu - self._cpu) / max(wall - self._wall, 1e-6)
        self._cpu, self._wall = cpu, wall
        return used
