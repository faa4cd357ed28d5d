"""Key set-up of the nodes: the vehicle's signer, the receiver's link checks. A missing or
unusable key ends the node with one line naming `codealign keys generate` (no traceback)."""
from __future__ import annotations

from pathlib import Path

from codealign_ros.config import lookup
from codealign_ros.core.signing import Signer, SigningError, key_paths, keys_hint
from codealign_ros.pipeline.link import LinkChecker

__all__ = ["load_signer", "make_link_checker", "require_valid_id"]


def require_valid_id(agent: str, node: str) -> None:
    """SystemExit unless `agent` is a valid agent id (codemap.yaml fields): receivers would
    drop every map of it as bad_agent_id."""
    from codealign_ros.core.wire import FieldLimits, printable

    if FieldLimits.from_config().reason("agent_id", agent):
        raise SystemExit(f"{node}: agent_id {printable(agent)} is not a valid agent id "
                         f"(codemap.yaml fields: ROS name characters, at most "
                         f"{lookup('codemap', 'fields', 'agent_id', 'max_length')})")


def default_key_dir() -> Path:
    """config/codemap.yaml security.key_dir."""
    return Path(str(lookup("codemap", "security", "key_dir")))


def load_signer(agent: str, path: str, require_signed: bool) -> Signer | None:
    """The agent's signer from `path` ("" = <key_dir>/<agent>.key); None when signing is off.
    SystemExit with one line naming the command that makes the key when it is missing."""
    require_valid_id(agent, "vehicle_node")
    if not require_signed:
        return None
    key = Path(path) if path else key_paths(agent, default_key_dir())[0]
    if not key.is_file():
        raise SystemExit(f"vehicle_node: no signing key {key} for agent {agent} "
                         f"(require_signed is on): create it with "
                         f"`{keys_hint(agent, key.parent)}` or set require_signed:=false")
    try:
        return Signer.from_file(agent, key)
    except SigningError as exc:
        raise SystemExit(f"vehicle_node: {exc}; create a key with "
                         f"`{keys_hint(agent, key.parent)} --force`") from None


def make_link_checker(ego: str, require_signed: bool, trust_store: str) -> LinkChecker:
    """The receiver's LinkChecker; SystemExit with one clear line when the trust store is
    missing or unusable."""
    require_valid_id(ego, "fusion_node")
    try:
        return LinkChecker(ego, require_signed, trust_store or default_key_dir())
    except SigningError as exc:
        raise SystemExit(f"fusion_node: {exc}") from None
