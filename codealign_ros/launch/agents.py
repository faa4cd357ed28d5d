"""Agents arguments of launch graphs: "agent[:modality],..." or "auto" (the agents of a bag's
pose topics)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from codealign_ros.config import lookup, topic
from codealign_ros.launch.arguments import NAME, ArgSpec, LaunchGraphError

AUTO = "auto"


def bag_agents(bag: str | Path) -> list[str]:
    """Agents of a rosbag2 written by `codealign convert`, in bag order (the ego first):
    those with a pose topic."""
    from rosbags.rosbag2 import Reader
    from rosbags.rosbag2.errors import ReaderError

    pattern = re.escape(topic("pose", agent="\0")).replace("\0", "([^/]+)")
    try:
        with Reader(Path(bag)) as reader:
            names = [c.topic for c in reader.connections]
    except (ReaderError, OSError) as err:
        raise LaunchGraphError(f"agents:=auto needs a readable bag, {bag}: {err}") from None
    agents = [m[1] for m in (re.fullmatch(pattern, n) for n in names) if m]
    if not agents:
        raise LaunchGraphError(f"{bag}: no {topic('pose', agent='<agent>')} topics to take "
                               f"agents from; give agents:=a:m1,b:m4")
    return list(dict.fromkeys(agents))


def _is_rsu(agent: str) -> bool:
    from codealign_ros.data.dairv2x import INFRA
    from codealign_ros.data.opv2v import cav_id_of

    try:
        return cav_id_of(agent) < 0
    except ValueError:
        return agent == INFRA.agent


def parse_agents(text: str, bag: Any = None, spec: ArgSpec | None = None
                 ) -> list[tuple[str, str]]:
    """[(agent, modality)] from "a[:m],b[:m],..." or "auto" (agents of `bag`); missing
    modalities follow the `assignment` of modalities.yaml (ego first)."""
    from codealign_ros.data.assignment import assign_modalities

    label = spec.name if spec else "agents"
    if text.strip() == AUTO:
        if bag is None:
            raise LaunchGraphError(f"argument {label}:=auto needs a bag argument")
        entries = [(agent, "") for agent in bag_agents(bag)]
    else:
        entries = [tuple(e.strip().split(":", 1)) if ":" in e else (e.strip(), "")
                   for e in text.split(",") if e.strip()]
    if not entries:
        raise LaunchGraphError(f"argument {label}:={text!r}: expected agent[:modality],...")
    names = [agent for agent, _ in entries]
    bad = [a for a in names if not NAME.match(a)]
    if bad or len(set(names)) != len(names):
        raise LaunchGraphError(f"argument {label}:={text!r}: agent ids must be unique ROS "
                               f"names (letters, digits, _), got {names}")
    known = lookup("modalities", "modalities")
    unknown = sorted({m for _, m in entries if m and m not in known})
    if unknown:
        raise LaunchGraphError(f"argument {label}:={text!r}: unknown modalities {unknown}; "
                               f"known: {', '.join(known)}")
    default = assign_modalities(names, {a for a in names if _is_rsu(a)})
    return [(agent, modality or default[agent]) for agent, modality in entries]


def format_agents(agents: list[tuple[str, str]]) -> str:
    """Inverse of `parse_agents`: "a:m1,b:m4"."""
    return ",".join(f"{agent}:{modality}" for agent, modality in agents)

