"""Where the package's shipped files are: the source checkout or the ament share directory.

A relative path the working directory lacks (the `model_dir` default `models/mini`, say)
resolves against the checkout root, then against `share/codealign_ros` of the installed
package (found through the ament index), so `codealign launch vehicle` and `ros2 launch` work
from any directory. ROS-free apart from the optional ament_index_python lookup; no torch.
"""
from __future__ import annotations

from pathlib import Path

PACKAGE = "codealign_ros"


def checkout_root() -> Path | None:
    """The repository root when running from a source checkout (it holds package.xml)."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "package.xml").is_file() and (root / PACKAGE).is_dir() else None


def share_dir() -> Path | None:
    """`share/codealign_ros` of the installed package (ament index); None when not found."""
    try:
        from ament_index_python.packages import (PackageNotFoundError,
                                                 get_package_share_directory)
    except ImportError:
        return None
    try:
        return Path(get_package_share_directory(PACKAGE))
    except (PackageNotFoundError, ValueError, LookupError):
        return None


def resolve_shipped(path: Path | str) -> Path:
    """`path` as given when absolute or present from the working directory, else the first
    of <checkout root>/path and <share dir>/path that exists; unchanged when none does (the
    caller's error then names the path as given)."""
    given = Path(path).expanduser()
    if given.is_absolute() or given.exists():
        return given
    for base in (checkout_root(), share_dir()):
        if base is not None and (base / given).exists():
            return base / given
    return given
