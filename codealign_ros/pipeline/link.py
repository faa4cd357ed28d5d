"""ROS-free link checks of the receiver: what a map must pass before anything is decoded.

In order, each failure a drop reason (README "Drop reasons"):
  bad_<field>         a text field over its length limit or outside the ROS name character
                      set (core.wire, config/codemap.yaml `fields`)
  ego_broadcast       a map on the broadcast topic claiming the ego's own id: the ego's maps
                      come only from its local vehicle node (topics.yaml `codemap_local`).
                      The ego vehicle's own broadcast copy (validly signed by the ego's
                      key, or from the DDS participant of the accepted local publisher) is
                      not a drop: ECHO, counted in `echoes`; it is discarded as well.
  local_not_ego       a map on the ego's local topic from another agent id
  unsigned ... replayed  with require_signed: core.signing.LINK_REASONS
`commit(ticket)` is called once the receiver accepted the map (replay protection).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from codealign_ros.config import lookup
from codealign_ros.core.signing import (LINK_REASONS, LinkVerifier, SigningError, Ticket,
                                        TrustStore, keys_hint)
from codealign_ros.core.wire import FIELD_REASONS, FieldLimits, WireFields, field_reason

__all__ = ["CHANNEL_REASONS", "LinkChecker", "link_reasons"]

CHANNEL_REASONS = ("ego_broadcast", "local_not_ego")
ECHO = "ego_echo"  # not a drop: the own vehicle's broadcast copy of a map taken locally
_PREFIX_HEX = 24  # a DDS GUID: 12-byte participant prefix + 4-byte entity id


def link_reasons() -> tuple[str, ...]:
    """Every reason LinkChecker.check can return, in check order."""
    return FIELD_REASONS + CHANNEL_REASONS + LINK_REASONS


class LinkChecker:
    """Field bounds, the ego's local channel and (optionally) signatures of received maps."""

    def __init__(self, ego_id: str, require_signed: bool, trust_store: Path | str | None,
                 limits: FieldLimits | None = None) -> None:
        self.ego_id, self.require_signed = ego_id, bool(require_signed)
        self.limits = limits or FieldLimits.from_config()
        self.verifier: LinkVerifier | None = None
        self.local_participant: str | None = None  # of the accepted local ego publisher
        self.echoes = 0
        if self.require_signed:
            store = Path(trust_store or lookup("codemap", "security", "key_dir"))
            trust = TrustStore.from_dir(store) if store.is_dir() else TrustStore({})
            if not len(trust):
                raise SigningError(
                    f"require_signed is on but the trust store {store} holds no <agent>.pub "
                    f"key: create keys with `{keys_hint('<agent>', store)}` (one per agent), "
                    f"or set require_signed:=false")
            self.verifier = LinkVerifier(trust, int(lookup("codemap", "security",
                                                           "replay_entries")))

    def check(self, fields: WireFields, signature: bytes, local: bool,
              source: str | None = None) -> tuple[str | None, Ticket | None]:
        """(None, ticket or None) when the map may be decoded, else (reason, None); ECHO
        for the own vehicle's broadcast copy. `source`: publisher GID (hex) if known."""
        reason = field_reason(fields, self.limits)
        if reason is None and not local and fields.agent_id == self.ego_id:
            if self._is_echo(fields, signature, source):
                self.echoes += 1
                return ECHO, None
            reason = "ego_broadcast"
        if reason is None and local and fields.agent_id != self.ego_id:
            reason = "local_not_ego"
        if reason is not None or self.verifier is None:
            return reason, (Ticket("", fields.code_space, fields.stamp_ns, source, local)
                            if reason is None else None)
        reason, ticket = self.verifier.check(fields, signature)
        return reason, ticket and dataclasses.replace(ticket, source=source, local=local)

    def _is_echo(self, fields: WireFields, signature: bytes, source: str | None) -> bool:
        """Our own vehicle's broadcast copy: its signature verifies under the ego's key (the
        same stamp as the local copy: "replayed"), or it comes from the participant of the
        accepted local publisher."""
        if source and self.local_participant == source[:_PREFIX_HEX]:
            return True
        if self.verifier is None:
            return False
        return self.verifier.check(fields, signature)[0] in (None, "replayed")

    def commit(self, ticket: Ticket | None) -> None:
        """Record an accepted map: its stamp (replay) and, for the ego's local maps, the DDS
        participant of their publisher (to recognise its broadcast echo)."""
        if ticket is None:
            return
        if ticket.local and ticket.source:
            self.local_participant = ticket.source[:_PREFIX_HEX]
        if self.verifier is not None and ticket.key_id:
            self.verifier.commit(ticket)
