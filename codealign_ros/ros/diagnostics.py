"""Node helpers shared by the nodes: rate-limited warnings and /diagnostics statuses."""
from __future__ import annotations

import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

__all__ = ["RateLimitedLog", "diagnostic_status"]


class RateLimitedLog:
    """Logs each key at most once per `period_s` (per drop reason)."""

    def __init__(self, logger: Any, period_s: float = 1.0) -> None:
        self.logger, self.period, self.last = logger, period_s, {}

    def warning(self, key: str, text: str) -> None:
        now = time.monotonic()
        if now - self.last.get(key, -1e9) >= self.period:
            self.last[key] = now
            self.logger.warning(text)


def diagnostic_status(name: str, agent: str, values: dict[str, Any], problem: str = ""
                      ) -> DiagnosticStatus:
    """An OK (or WARN with `problem`) status with `values` as key/value strings."""
    level = DiagnosticStatus.WARN if problem else DiagnosticStatus.OK
    return DiagnosticStatus(level=level, name=name, hardware_id=agent,
                            message=problem or "OK",
                            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
