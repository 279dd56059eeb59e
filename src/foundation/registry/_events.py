"""Change-event fan-out shared by every local backend.

Writers call :meth:`Listeners.notify` synchronously, after the table is
consistent and outside any lock, so a listener may read the registry (or even
write to it) without deadlocking. The facade's ``watch()`` is one such
listener; it must never raise, but a user's ``subscribe`` callback might, and
the write it reports has already happened, so an error is logged, not raised.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ._types import RegistryEvent

__all__ = ["Listeners", "logger"]

logger = logging.getLogger("foundation.registry")

_Listener = Callable[[RegistryEvent], None]


class Listeners:
    """An ordered set of subscriptions to registry events.

    Subscribing and unsubscribing replace an immutable tuple under a lock;
    :meth:`notify` iterates whatever tuple was current when it started. So a
    listener may subscribe or unsubscribe (itself or another) while being
    notified, from any thread, and no write path ever waits on this lock.
    """

    __slots__ = ("_lock", "subscriptions")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (token, listener) pairs: a token per subscription lets the same
        # callable be subscribed twice and unsubscribed once. Public for
        # reading: ``if listeners.subscriptions:`` is the writers' cheap "is
        # anyone listening" test (``bool(listeners)`` costs a Python call).
        self.subscriptions: tuple[tuple[object, _Listener], ...] = ()

    def __bool__(self) -> bool:
        """True when anyone listens; writers skip building events otherwise."""
        return bool(self.subscriptions)

    def __len__(self) -> int:
        return len(self.subscriptions)

    def add(self, listener: _Listener) -> Callable[[], None]:
        """Subscribe ``listener``; it is called with each :class:`RegistryEvent`.

        Args:
            listener: called synchronously by the writing thread, in
                subscription order relative to other listeners.

        Returns:
            An unsubscribe function; calling it more than once is harmless.

        Raises:
            TypeError: ``listener`` is not callable.
        """
        if not callable(listener):
            raise TypeError(f"listener must be callable, not {type(listener).__name__}")
        token = object()
        with self._lock:
            self.subscriptions = (*self.subscriptions, (token, listener))

        def unsubscribe() -> None:
            with self._lock:
                self.subscriptions = tuple(sub for sub in self.subscriptions if sub[0] is not token)

        return unsubscribe

    def clear(self) -> None:
        """Drop every subscription."""
        with self._lock:
            self.subscriptions = ()

    def notify(self, event: RegistryEvent) -> None:
        """Call every listener with ``event``, in subscription order.

        A listener that raises is logged (logger ``foundation.registry``) and
        the others still run: the write the event reports already stands.
        ``BaseException`` (``KeyboardInterrupt``, ``trio.Cancelled``) is not
        an ``Exception`` and propagates.
        """
        for _token, listener in self.subscriptions:
            try:
                listener(event)
            except Exception:
                logger.exception(
                    "registry listener %r raised on %s event for %r; the write stands",
                    listener,
                    event.kind,
                    (event.registration.namespace, event.registration.name),
                )
