"""TensorBoard event files of training runs (rank 0 only) and a reader for tests / reports."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping

__all__ = ["RunLog", "run_dir", "read_scalars"]


def run_dir(logdir: Path, name: str) -> Path:
    """One TensorBoard run per stage job: `logdir/<component name>`."""
    return Path(logdir) / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


class RunLog:
    """Scalars of one run; a no-op when `path` is None (no --logdir, or not rank 0)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._writer = None
        if path is not None:
            from torch.utils.tensorboard import SummaryWriter

            path.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(path))

    def scalars(self, step: int, values: Mapping[str, float], prefix: str = "") -> None:
        if self._writer is not None:
            for k, v in values.items():
                self._writer.add_scalar(f"{prefix}{k}", float(v), step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


def read_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of the event files under `path` (one run directory)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
            for tag in acc.Tags()["scalars"]}
