"""Errors raised when a ROS message cannot be decoded."""
from __future__ import annotations

from codealign_ros.errors import CodeAlignError


class MalformedMessageError(CodeAlignError, ValueError):
    """A message whose layout is inconsistent or unsupported.

    ``reason`` is a short machine key ("fields", "point_step", "data_size",
    "datatype", "encoding", "dimensions") for counters and diagnostics; the
    message text says what exactly is wrong.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
