"""Learning curves of a training run: the plateau (early-stop) rule, a Markdown table and a
small PNG (Pillow) of loss and validation AP against the step, for the model cards.

A run's history (train/loop.py) is one record per step; the steps at which the validation
split was evaluated carry "val_ap30" / "val_ap50" / "val_ap70" (fractions in 0..1).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Plateau", "val_points", "curve_table", "curve_png"]
VAL_KEYS = ("val_ap30", "val_ap50", "val_ap70")


@dataclass(frozen=True)
class Plateau:
    """Early stop when the validation curve has flattened: after at least `evals` + 1
    evaluations, the best `key` of the last `evals` evaluations is not more than `min_gain`
    (AP as a fraction: 0.005 = 0.5 AP points) above the best of all evaluations before them.
    `evals` = 0 disables the rule."""

    evals: int = 0
    min_gain: float = 0.005
    key: str = "val_ap50"

    def reached(self, values: list[float]) -> bool:
        """Whether the curve `values` (one per evaluation, in order) has plateaued."""
        if self.evals <= 0 or len(values) <= self.evals:
            return False
        return max(values[-self.evals:]) <= max(values[:-self.evals]) + self.min_gain

    def describe(self) -> str:
        if self.evals <= 0:
            return "off"
        return (f"stop when the best {self.key} of the last {self.evals} evaluations is at most "
                f"{100 * self.min_gain:.1f} AP above the best before them")


def val_points(history: list[dict]) -> list[dict]:
    """The history records that carry validation AP."""
    return [h for h in history if "val_ap50" in h]


def curve_table(history: list[dict]) -> list[str]:
    """Markdown rows: evaluation step, mean loss since the previous evaluation, AP30/50/70."""
    points = val_points(history)
    if not points:
        return []
    rows = ["| step | loss (mean since previous) | val AP30 | val AP50 | val AP70 |",
            "|---:|---:|---:|---:|---:|"]
    start = 0
    for p in points:
        losses = [h["loss"] for h in history if start <= h["step"] <= p["step"] and "loss" in h]
        start = p["step"] + 1
        aps = " | ".join(f"{100 * p[k]:.1f}" for k in VAL_KEYS)
        rows.append(f"| {p['step'] + 1} | {np.mean(losses):.3f} | {aps} |")
    return rows


def curve_png(history: list[dict], path: Path, title: str = "",
              size: tuple[int, int] = (480, 300)) -> Path | None:
    """Loss (grey, smoothed; left scale) and val AP30/50/70 (colours; right scale 0..100)
    against the step; None when the history is empty."""
    from PIL import Image, ImageDraw

    losses = [(h["step"], h["loss"]) for h in history if "loss" in h]
    if not losses:
        return None
    w, h = size
    left, right, top, bottom = 44, 36, 22, 26
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    steps = np.array([s for s, _ in losses], float)
    values = np.array([v for _, v in losses], float)
    window = max(1, len(values) // 40)
    smooth = np.convolve(values, np.ones(window) / window, mode="valid")
    smooth_steps = steps[window - 1:]
    x_max = max(float(steps[-1]) + 1.0, 1.0)
    lo, hi = float(np.min(smooth)), float(np.max(smooth))
    hi = hi if hi > lo else lo + 1.0

    def xy(step: float, frac: float) -> tuple[float, float]:
        return (left + (w - left - right) * (step + 1) / x_max,
                top + (h - top - bottom) * (1.0 - frac))

    draw.rectangle([left, top, w - right, h - bottom], outline="black")
    draw.line([xy(s, (v - lo) / (hi - lo)) for s, v in zip(smooth_steps, smooth)] or
              [xy(0, 0)], fill=(120, 120, 120), width=2)
    colours = {"val_ap30": (40, 120, 220), "val_ap50": (220, 120, 20),
               "val_ap70": (30, 160, 60)}
    points = val_points(history)
    for key, colour in colours.items():
        line = [xy(p["step"], p[key]) for p in points]
        if len(line) > 1:
            draw.line(line, fill=colour, width=2)
        for x, y in line:
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    draw.text((4, top - 4), f"{hi:.2f}", fill="black")
    draw.text((4, h - bottom - 8), f"{lo:.2f}", fill="black")
    draw.text((w - right + 3, top - 4), "100", fill="black")
    draw.text((w - right + 3, h - bottom - 8), "0", fill="black")
    draw.text((left, h - bottom + 6), "step 0", fill="black")
    draw.text((w - right - 40, h - bottom + 6), f"{int(x_max)}", fill="black")
    draw.text((left + 4, 4), f"{title}  loss (grey)  AP30 AP50 AP70 (blue orange green)",
              fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
