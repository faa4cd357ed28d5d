"""Approximate time synchronisation of several topics.

`make_synchronizer` subscribes N topics and calls `callback(msg_1, ..., msg_N)` with one
message per topic whose header stamps lie within `slop` seconds. It uses
`message_filters.ApproximateTimeSynchronizer` when message_filters is installed and the
pure-Python `ApproximateSync` below otherwise; both take queue_size, slop (seconds) and
allow_headerless, and both report matched and dropped messages for diagnostics.

`ApproximateSync` policy (per-topic streams are assumed to arrive in stamp order):
- each input keeps up to `queue_size` messages sorted by stamp (the oldest is dropped
  beyond that, reason "overflow"; a second message with a queued stamp replaces it,
  "duplicate"; a message not newer than the last one matched on its input, "late");
- while every queue holds a message, the oldest message of each input (the heads) form the
  candidate set: if their stamps span at most `slop_ns` the set is emitted, oldest first;
  otherwise the oldest head cannot match the newest head's input any more and is dropped
  ("unmatched").
message_filters' Python synchroniser instead pairs each arriving message with the
closest-stamped queued ones (span strictly below slop) and leaves unmatched messages queued
until they overflow. With slop below half the shortest message period (the normal
set-up) both emit the same sets.
"""
from __future__ import annotations

import bisect
import functools
import threading
from typing import Any, Callable, Sequence

from codealign_ros.core.stats import DropCounter

try:
    import message_filters
except ImportError:
    message_filters = None

HAVE_MESSAGE_FILTERS = message_filters is not None
NS_PER_S = 1_000_000_000

__all__ = ["HAVE_MESSAGE_FILTERS", "ApproximateSync", "TopicSynchronizer", "header_stamp_ns",
           "make_synchronizer"]


class ApproximateSync:
    """ROS-free approximate-time matcher of `n_inputs` message streams (see module doc)."""

    def __init__(self, n_inputs: int, queue_size: int = 10, slop_ns: int = 50_000_000) -> None:
        if n_inputs < 1:
            raise ValueError(f"n_inputs must be >= 1, got {n_inputs}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if slop_ns < 0:
            raise ValueError(f"slop_ns must be >= 0, got {slop_ns}")
        self.n_inputs, self.queue_size, self.slop_ns = n_inputs, queue_size, int(slop_ns)
        self._stamps: list[list[int]] = [[] for _ in range(n_inputs)]
        self._msgs: list[list[Any]] = [[] for _ in range(n_inputs)]
        self._last: list[int | None] = [None] * n_inputs
        self._lock = threading.Lock()
        self.received = 0
        self.matched = 0
        self.dropped = DropCounter()

    def add(self, index: int, stamp_ns: int, msg: Any) -> list[tuple] | None:
        """Queue `msg` of input `index`; the sets it completed (one message per input, in
        input order, oldest set first), or None."""
        if not 0 <= index < self.n_inputs:
            raise ValueError(f"input index {index} out of range 0..{self.n_inputs - 1}")
        stamp = int(stamp_ns)
        with self._lock:
            self.received += 1
            if self._last[index] is not None and stamp <= self._last[index]:
                self.dropped.drop("late")
                return None
            self._insert(index, stamp, msg)
            return self._match() or None

    def _insert(self, index: int, stamp: int, msg: Any) -> None:
        stamps, msgs = self._stamps[index], self._msgs[index]
        pos = bisect.bisect_left(stamps, stamp)
        if pos < len(stamps) and stamps[pos] == stamp:
            msgs[pos] = msg
            self.dropped.drop("duplicate")
            return
        stamps.insert(pos, stamp)
        msgs.insert(pos, msg)
        if len(stamps) > self.queue_size:
            self._pop(index)
            self.dropped.drop("overflow")

    def _pop(self, index: int) -> Any:
        self._stamps[index].pop(0)
        return self._msgs[index].pop(0)

    def _match(self) -> list[tuple]:
        out: list[tuple] = []
        while all(self._stamps):
            heads = [stamps[0] for stamps in self._stamps]
            oldest = min(heads)
            if max(heads) - oldest <= self.slop_ns:
                self._last = heads
                out.append(tuple(self._pop(i) for i in range(self.n_inputs)))
                self.matched += 1
            else:
                self._pop(heads.index(oldest))
                self.dropped.drop("unmatched")
        return out

    def queue_lengths(self) -> list[int]:
        """Messages waiting per input."""
        return [len(stamps) for stamps in self._stamps]

    def queued_stamps(self) -> list[list[int]]:
        """Stamps waiting per input, oldest first (a copy, for diagnostics)."""
        return [list(stamps) for stamps in self._stamps]

    def reset(self) -> None:
        """Forget queued messages and the last matched stamps (e.g. after a time jump)."""
        with self._lock:
            for stamps, msgs in zip(self._stamps, self._msgs):
                stamps.clear()
                msgs.clear()
            self._last = [None] * self.n_inputs


def header_stamp_ns(msg: Any) -> int | None:
    """`msg.header.stamp` in integer nanoseconds; None for a message without a header."""
    stamp = getattr(getattr(msg, "header", None), "stamp", None)
    if stamp is None:
        return None
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


class TopicSynchronizer:
    """Subscriptions of `make_synchronizer` plus counters: `backend` ("message_filters" or
    "builtin"), `received` per input, `matched` sets, `dropped()` by reason."""

    def __init__(self, node: Any, specs: Sequence[tuple[type, str, Any]],
                 callback: Callable[..., None], queue_size: int, slop: float,
                 allow_headerless: bool) -> None:
        if not specs:
            raise ValueError("make_synchronizer needs at least one (type, topic, qos) spec")
        if slop < 0:
            raise ValueError(f"slop must be >= 0 s, got {slop}")
        self.node, self.callback = node, callback
        self.topics = [spec[1] for spec in specs]
        self.received = [0] * len(specs)
        self.matched = 0
        self._headerless = DropCounter()
        self.allow_headerless = allow_headerless
        if HAVE_MESSAGE_FILTERS:
            self.backend = "message_filters"
            self._init_message_filters(specs, queue_size, slop)
        else:
            self.backend = "builtin"
            self.core = ApproximateSync(len(specs), queue_size, round(slop * NS_PER_S))
            self.subscriptions = [
                node.create_subscription(msg_type, name, functools.partial(self._on_msg, i), qos)
                for i, (msg_type, name, qos) in enumerate(specs)]

    def _init_message_filters(self, specs: Sequence[tuple[type, str, Any]], queue_size: int,
                              slop: float) -> None:
        self.filters = [message_filters.Subscriber(self.node, msg_type, name, qos_profile=qos)
                        for msg_type, name, qos in specs]
        for i, sub in enumerate(self.filters):
            sub.registerCallback(self._count, i)
        self.synchronizer = message_filters.ApproximateTimeSynchronizer(
            self.filters, queue_size, slop, allow_headerless=self.allow_headerless)
        self.synchronizer.registerCallback(self._emit)
        self.subscriptions = [sub.sub for sub in self.filters]

    def _count(self, _msg: Any, index: int) -> None:
        self.received[index] += 1

    def _emit(self, *msgs: Any) -> None:
        self.matched += 1
        self.callback(*msgs)

    def _on_msg(self, index: int, msg: Any) -> None:
        self.received[index] += 1
        stamp = header_stamp_ns(msg)
        if stamp is None:
            if not self.allow_headerless:
                self._headerless.drop("headerless")
                return
            stamp = self.node.get_clock().now().nanoseconds
        for matched in self.core.add(index, stamp, msg) or ():
            self._emit(*matched)

    def queued(self) -> int:
        """Messages waiting for partners."""
        if self.backend == "builtin":
            return sum(self.core.queue_lengths())
        return sum(len(queue) for queue in self.synchronizer.queues)

    def dropped(self) -> dict[str, int]:
        """Dropped messages by reason (message_filters: all under "dropped")."""
        if self.backend == "builtin":
            return dict(self.core.dropped + self._headerless)
        lost = sum(self.received) - self.matched * len(self.topics) - self.queued()
        return {"dropped": lost} if lost else {}

    def stats(self) -> dict[str, Any]:
        """Counters as a plain dict (for diagnostics and logs)."""
        return {"backend": self.backend, "topics": list(self.topics),
                "received": list(self.received), "matched": self.matched,
                "queued": self.queued(), "dropped": self.dropped()}

    def destroy(self) -> None:
        """Remove the subscriptions from the node."""
        for sub in self.subscriptions:
            self.node.destroy_subscription(sub)
        self.subscriptions = []


def make_synchronizer(node: Any, specs: Sequence[tuple[type, str, Any]],
                      callback: Callable[..., None], queue_size: int = 10, slop: float = 0.05,
                      allow_headerless: bool = False) -> TopicSynchronizer:
    """Subscribe `specs` = [(msg_type, topic, qos), ...] on `node`; call
    `callback(msg_1, ..., msg_N)` for every set whose header stamps lie within `slop` s."""
    return TopicSynchronizer(node, specs, callback, queue_size, slop, allow_headerless)
