"""Model cards: the Markdown file beside each trained component (run, curve, metrics)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codealign_ros.train import stages

__all__ = ["PAPER_TABLE", "git_commit", "refresh_metrics", "write_card"]


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=False).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def write_card(path: Path, result: "stages.StageResult", run: dict[str, Any]) -> None:
    """Model card beside a component."""
    lines = [f"# {result.name}", "", f"- Stage: {run['stage']} ({run['kwargs']})",
             f"- Profile: {run['profile']}", f"- Data: {run['data']} (split {run['split']}), "
             f"scenarios of group(s) {', '.join(run['groups_used'])}: "
             f"{', '.join(run['scenarios'])}",
             f"- Steps: {result.steps} (batch {run['batch']}, lr {run['lr']}), "
             f"{result.seconds:.0f} s on {run['host']}",
             f"- Loss (mean of first / last 20 steps): {result.loss_first:.3f} -> "
             f"{result.loss_last:.3f}",
             f"- Trainable parameters: {result.trainable:,}",
             f"- File size: {result.path.stat().st_size / 1e6:.2f} MB",
             f"- Code commit: {run['commit']}"]
    if run.get("logdir"):
        lines.append(f"- TensorBoard run: {Path(run['logdir']) / result.name} "
                     f"(`tensorboard --logdir {run['logdir']}`)")
    lines += [f"- {k}: {v}" for k, v in result.extra.items()]
    lines += _curve_lines(path, result, run)
    lines += [""] + _metrics_section(result.name)
    path.with_suffix(".md").write_text("\n".join(lines))


def refresh_metrics(card: Path, name: str) -> bool:
    """Replace the Metrics section of an existing card (a component shipped without its
    training checkpoint) by the current paper table's rows; False if the card has none."""
    text = card.read_text()
    at = text.find("\n## Metrics\n")
    if at < 0:
        return False
    card.write_text(text[:at + 1] + "\n".join(_metrics_section(name)))
    return True


def _metrics_section(name: str) -> list[str]:
    return ["## Metrics", ""] + _metrics_lines(name) + [
        "", "Full comparison under the paper's protocol: benchmarks/results/paper_table.md "
        "(`make paper-table`).", ""]


PAPER_TABLE = Path("benchmarks/results/paper_table.json")


def _curve_lines(path: Path, result: "stages.StageResult", run: dict[str, Any]) -> list[str]:
    """Learning-curve section of a card: PNG beside the component + table (when the run
    evaluated the validation split)."""
    from codealign_ros.train.curves import curve_png, curve_table

    table = curve_table(result.history)
    if not table:
        return []
    png = curve_png(result.history, path.with_name(f"{result.name}_curve.png"), result.name)
    stopped = any(h.get("stopped_early") for h in result.history)
    rule = run.get("plateau", "off")
    return ["", "## Learning curve", "",
            f"Validation AP {'every %s steps and ' % run['eval_every'] if run.get('eval_every') else ''}"
            f"at the last step on "
            f"{run.get('val_frames', '?')} frames of split {run.get('val_split', '?')}; "
            f"early stop: {rule}{' (stopped early)' if stopped else ''}.", "",
            f"![learning curve]({png.name})" if png else "", "", *table]


def _metrics_lines(name: str) -> list[str]:
    """Held-out AP rows of the paper table that use component `name` (when computed)."""
    if not PAPER_TABLE.exists():
        return ["(run `make paper-table`)"]
    res = json.loads(PAPER_TABLE.read_text())
    rows = []
    for setting, methods in res["settings"].items():
        ego = methods["single"]["setting"]["ego"]
        uses = {"single": name == f"base_{ego}",
                "codealign": name.startswith(("codespace_", "uct_")) and not name.endswith(
                    ("_k4", "_k64", "_multi_head", "_one_to_one")),
                "heal": name.startswith("heal_")}
        for method, used in uses.items():
            if used:
                r = methods[method]
                rows.append(f"- {setting}, {method}: AP30/50/70 = {100 * r['ap30']:.1f} / "
                            f"{100 * r['ap50']:.1f} / {100 * r['ap70']:.1f} "
                            f"({res['frames']} test frames)")
    return rows or ["- not part of a Table-4 setting; see the ablation tables"]
