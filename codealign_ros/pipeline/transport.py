"""Latest-wins hand-over of received maps to the receiver's worker, with every loss counted.

The subscription callback only `put`s a message into one slot per (agent id, code space) and
returns, so the DDS reader queue never fills up and silently overwrites samples; the worker
`take`s whatever is pending (peers before the ego, each in arrival order) and processes it
(`Worker`).
A pending map replaced by a newer one of the same slot before the worker took it is counted:
  superseded  a peer's map replaced by its newer map (only the newest map per peer matters)
  busy        an ego frame replaced by the next ego frame while the node was busy fusing: a
              skipped frame
  echo        (fusion_node) the ego's own map arriving on the V2X topic as well as locally
Together with the RMW's message-lost count (`lost`) and the receiver's own drop reasons
(pipeline/receiver.py) this makes the ledger exact: every map offered to the node is fused,
dropped under one reason, or still held (`TransportLedger`).
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from codealign_ros.core.stats import DropCounter

__all__ = ["TRANSPORT_REASONS", "LatestWins", "Worker", "ledger"]

TRANSPORT_REASONS = ("superseded", "busy", "lost", "echo")
LOG = logging.getLogger("codealign.transport")
T = TypeVar("T")


@dataclass
class _Slot(Generic[T]):
    seq: int
    item: T
    ego: bool


class LatestWins(Generic[T]):
    """Thread-safe latest-wins slots; `put` from the callback, `take` from the worker."""

    def __init__(self) -> None:
        self._slots: dict[Hashable, _Slot[T]] = {}
        self._cond = threading.Condition()
        self._seq = 0
        self.drops = DropCounter()
        self.received = 0
        self.closed = False

    def put(self, key: Hashable, item: T, ego: bool = False) -> str | None:
        """Hold `item` for `key`; the reason ("superseded" / "busy") when it replaced a map
        that was still pending, else None."""
        with self._cond:
            self.received += 1
            self._seq += 1
            old = self._slots.get(key)
            self._slots[key] = _Slot(self._seq, item, ego)
            self._cond.notify()
        if old is None:
            return None
        reason = "busy" if old.ego else "superseded"
        self.drops.drop(reason)
        return reason

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` s until something is pending; False on timeout or close."""
        with self._cond:
            if not self._slots and not self.closed:
                self._cond.wait(timeout)
            return bool(self._slots) and not self.closed

    def take(self) -> list[T]:
        """Everything pending: peers first, then ego maps, each in arrival order."""
        with self._cond:
            slots = sorted(self._slots.values(), key=lambda s: (s.ego, s.seq))
            self._slots.clear()
        return [s.item for s in slots]

    def snapshot(self) -> tuple[int, int, dict[str, int]]:
        """(received, pending, drops by reason), read together."""
        with self._cond:
            return self.received, len(self._slots), dict(self.drops)

    def close(self) -> None:
        """Wake a waiting `wait` for shutdown."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()


class Worker:
    """A daemon thread feeding every map taken from `box` to `handle`, under `lock`.

    Taking a batch and finishing each item happen under `lock`, so a reader holding it sees
    every map either pending, `in_hand` (taken, not yet handled) or handled."""

    def __init__(self, box: LatestWins[Any], handle: Callable[[Any], None],
                 lock: threading.Lock, name: str = "codealign-worker") -> None:
        self.box, self.handle, self.lock = box, handle, lock
        self.in_hand = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.box.wait(timeout=0.2):
                continue
            with self.lock:
                batch = self.box.take()
                self.in_hand = len(batch)
            for item in batch:
                with self.lock:
                    try:
                        if not self._stop.is_set():
                            self.handle(item)
                    except Exception:  # noqa: BLE001 - the worker must outlive one bad map
                        LOG.exception("worker %s: handling a map failed", self.thread.name)
                    finally:
                        self.in_hand -= 1

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self.box.close()
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)


def ledger(received: int, lost: int, transport: dict[str, int], receiver: dict[str, Any],
           pending: int) -> dict[str, Any]:
    """offered = fused + dropped (by reason) + held, from the node's counters.

    received: maps the callback got; lost: RMW message-lost total; transport: superseded /
    busy counts; receiver: `ReceiverPipeline.stats()`; pending: maps waiting in the slots."""
    drops = {**{k: int(v) for k, v in receiver.get("drops", {}).items()},
             **{k: int(v) for k, v in transport.items() if v}}
    if lost:
        drops["lost"] = int(lost)
    fused = int(receiver.get("fused", 0)) + int(receiver.get("peer_maps_fused", 0))
    held = int(pending) + int(receiver.get("held_unused", 0))
    offered = int(received) + int(lost)
    return {"offered": offered, "fused": fused, "dropped": sum(drops.values()), "held": held,
            "drops": dict(sorted(drops.items())),
            "balanced": offered == fused + sum(drops.values()) + held}
