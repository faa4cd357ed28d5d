"""The BEV grid geometry (a plain dataclass; torch- and numpy-free).

Grid convention (as codealign_msgs/CodeMap): cell (r, c) has lower corner
(x_min + c * res, y_min + r * res); rows run along +y, columns along +x.
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BevGrid"]


@dataclass(frozen=True)
class BevGrid:
    """Geometry of a BEV grid in its sensor frame (metres, cells)."""

    x_min: float
    y_min: float
    width: int
    height: int
    resolution: float

    def scaled(self, factor: int) -> "BevGrid":
        """The same extent at a `factor` times coarser resolution (a pyramid level)."""
        return BevGrid(self.x_min, self.y_min, self.width // factor, self.height // factor,
                       self.resolution * factor)
