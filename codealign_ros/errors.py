"""The one error base of the package (torch- and ROS-free).

Every error class of codealign_ros derives from `CodeAlignError` (and, for callers that
catch the builtin kind, from the builtin it always was: ValueError, KeyError, ...).
`reason` is a short machine-readable key (for drop counters, diagnostics and tests);
`str(error)` is the human message, never quoted (not even for the KeyError kinds).
"""
from __future__ import annotations

__all__ = ["CodeAlignError"]


class CodeAlignError(Exception):
    """Base of the package's errors: `reason` (machine key) and a message."""

    reason: str = "error"

    def __str__(self) -> str:
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()
