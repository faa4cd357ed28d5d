"""Small ROS-free counters for node health: per-stream rates, sizes, drops by reason."""
from __future__ import annotations

import collections
import statistics
from dataclasses import dataclass, field


@dataclass
class StreamStats:
    """Counts, bytes and latency of one stream (e.g. one sending agent)."""

    messages: int = 0
    payload_bytes: int = 0
    raw_bytes: int = 0
    first_s: float | None = None
    last_s: float | None = None
    latencies_ms: collections.deque = field(default_factory=lambda: collections.deque(maxlen=1000))

    def add(self, now_s: float, payload_bytes: int, raw_bytes: int, latency_ms: float) -> None:
        """Record one message received at `now_s`."""
        self.messages += 1
        self.payload_bytes += payload_bytes
        self.raw_bytes += raw_bytes
        self.first_s = now_s if self.first_s is None else self.first_s
        self.last_s = now_s
        self.latencies_ms.append(latency_ms)

    def rate_hz(self) -> float:
        """Mean message rate between the first and last message."""
        if self.messages < 2 or self.last_s == self.first_s:
            return 0.0
        return (self.messages - 1) / (self.last_s - self.first_s)

    def summary(self) -> dict:
        """Plain-dict summary for logs and JSON."""
        n = max(self.messages, 1)
        lat = sorted(self.latencies_ms)
        return {
            "messages": self.messages,
            "rate_hz": round(self.rate_hz(), 2),
            "payload_bytes_per_msg": round(self.payload_bytes / n, 1),
            "raw_bytes_per_msg": round(self.raw_bytes / n, 1),
            "latency_ms_p50": round(statistics.median(lat), 2) if lat else None,
            "latency_ms_p95": round(lat[int(0.95 * (len(lat) - 1))], 2) if lat else None,
        }


class DropCounter(collections.Counter):
    """Dropped inputs counted by reason (e.g. "size", "unknown_code_space")."""

    def drop(self, reason: str) -> int:
        """Count one drop; returns the new count for that reason."""
        self[reason] += 1
        return self[reason]
