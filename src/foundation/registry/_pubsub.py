"""Pub/sub over a registry: topics per namespace, subscribers local to one instance.

``registry.subscribe(ns, topic)`` opens a :class:`Subscription` (a bounded
buffer and an async iterator over it); ``registry.publish(ns, topic, msg)``
hands ``msg`` to every subscription of ``(ns, topic)`` in this instance
through :meth:`Topics.deliver`. Subscriptions are not group members and
write nothing anywhere: they are the instance's own. An etcd backend also
carries each message to the other instances, whose watch hands it to their
:meth:`Topics.deliver` (see ``_etcd_pubsub.py``).

**A slow subscriber never blocks a publisher.** Each subscription buffers
at most ``max_buffer`` messages; a message that finds the buffer full is
dropped for that subscriber only and counted (``stats().dropped_messages``),
which is what Phoenix.PubSub and syn do too (a mailbox that grows without
bound is the other choice, and it is the one that takes a node down).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

import trio

from .. import errors

__all__ = ["Subscription", "Topics"]


class _Waker:
    """Runs a callback in the Trio thread that made it, from any thread."""

    __slots__ = ("_thread", "_token")

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()

    def call(self, fn: Callable[[], object]) -> None:
        if threading.get_ident() == self._thread:
            fn()
            return
        try:
            self._token.run_sync_soon(fn)
        except trio.RunFinishedError:
            return  # the run that was waiting has ended: nobody to wake


class Subscription:
    """The messages published to one ``(namespace, topic)``, as an async iterator.

    Made by :meth:`foundation.registry.Registry.subscribe`. Each message
    comes once, in publish order per publisher. Iterating blocks until a
    message arrives; it ends (``StopAsyncIteration``) when the registry
    closes or the ``subscribe()`` block is left.
    """

    __slots__ = ("_buffer", "_ended", "_lot", "_topics", "_waker", "dropped", "key", "max_buffer")

    def __init__(self, topics: Topics, key: tuple[Any, Any], max_buffer: int) -> None:
        self._topics = topics
        #: The ``(namespace, topic)`` this subscription receives.
        self.key = key
        #: Messages buffered at most; more are dropped for this subscriber.
        self.max_buffer = max_buffer
        #: Messages this subscriber missed because its buffer was full.
        self.dropped = 0
        self._buffer: deque[Any] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._ended = False
        self._waker = _Waker()

    def __repr__(self) -> str:
        ns, topic = self.key
        return (
            f"<Subscription ns={ns!r} topic={topic!r} buffered={len(self._buffer)}"
            f" dropped={self.dropped}{' ended' if self._ended else ''}>"
        )

    def _offer(self, message: Any) -> bool:
        """Buffer ``message`` if there is room (any thread); False if it was dropped."""
        if self._ended:
            return False
        if len(self._buffer) >= self.max_buffer:
            self.dropped += 1
            return False
        self._buffer.append(message)
        self._waker.call(self._lot.unpark_all)
        return True

    def _end(self) -> None:
        self._ended = True
        self._waker.call(self._lot.unpark_all)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Any:
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while not self._buffer:
            if self._ended:
                raise StopAsyncIteration
            parked = True
            await self._lot.park()
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return self._buffer.popleft()

    def receive_nowait(self) -> Any:
        """The next buffered message without waiting.

        Raises:
            trio.WouldBlock: nothing is buffered now.
            trio.EndOfChannel: the subscription has ended and is drained.
        """
        if self._buffer:
            return self._buffer.popleft()
        if self._ended:
            raise trio.EndOfChannel
        raise trio.WouldBlock


class Topics:
    """Every open subscription of one registry instance, by ``(namespace, topic)``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # key -> its subscriptions (a tuple, replaced on change: deliver()
        # reads it without the lock)
        self._subs: dict[tuple[Any, Any], tuple[Subscription, ...]] = {}
        self._dropped_gone = 0  # drops counted by subscriptions that ended

    @property
    def dropped(self) -> int:
        """Messages dropped by full buffers, per subscriber, ever."""
        with self._lock:
            live = sum(sub.dropped for subs in self._subs.values() for sub in subs)
            return self._dropped_gone + live

    def __bool__(self) -> bool:
        return bool(self._subs)

    def open(self, ns: Hashable, topic: Hashable, max_buffer: int) -> Subscription:
        """A new subscription to ``(ns, topic)``.

        Raises:
            InvalidKey: ``ns`` or ``topic`` cannot be hashed.
            ConfigError: ``max_buffer`` is not an int >= 1.
        """
        if isinstance(max_buffer, bool) or not isinstance(max_buffer, int) or max_buffer < 1:
            raise errors.ConfigError(f"max_buffer={max_buffer!r}: use an int >= 1")
        key = topic_key(ns, topic)
        sub = Subscription(self, key, max_buffer)
        with self._lock:
            self._subs[key] = (*self._subs.get(key, ()), sub)
        return sub

    def close(self, sub: Subscription) -> None:
        """End ``sub`` and forget it (idempotent)."""
        with self._lock:
            subs = self._subs.get(sub.key, ())
            if sub in subs:
                kept = tuple(s for s in subs if s is not sub)
                if kept:
                    self._subs[sub.key] = kept
                else:
                    del self._subs[sub.key]
                self._dropped_gone += sub.dropped
        sub._end()

    def end_all(self) -> None:
        """The registry closed: every subscription ends (after what it buffered)."""
        with self._lock:
            subs = [s for group in self._subs.values() for s in group]
        for sub in subs:
            sub._end()

    def deliver(self, ns: Hashable, topic: Hashable, message: Any) -> int:
        """Offer ``message`` to every subscription of ``(ns, topic)``; how many took it.

        Never blocks: a full buffer drops the message for that subscriber.
        The key was checked by the caller (:func:`topic_key`).
        """
        subs = self._subs.get((ns, topic))
        if not subs:
            return 0
        taken = 0
        for sub in subs:
            if sub._offer(message):
                taken += 1
        return taken


def topic_key(ns: Hashable, topic: Hashable) -> tuple[Any, Any]:
    """``(ns, topic)``, checked to be hashable.

    Raises:
        InvalidKey: ``ns`` or ``topic`` cannot be hashed (or its hash raises).
    """
    key = (ns, topic)
    try:
        hash(key)
    except Exception as exc:
        what = "unhashable" if isinstance(exc, TypeError) else "unusable"
        raise errors.InvalidKey(
            key,
            f"the topic is {what} ({type(exc).__name__}: {exc}); namespaces and topics"
            " must be hashable, e.g. str, int or tuples of them",
        ) from exc
    return key
