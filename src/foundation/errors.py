"""Typed errors of trio-foundation.

Every error the library raises on purpose is a :class:`FoundationError`. Each
also inherits from the builtin with the same meaning, so code that already
catches ``LookupError`` or ``TypeError`` keeps working::

    FoundationError
    ├── RegistryError
    │   ├── AlreadyRegistered          (+ ValueError)
    │   ├── NotRegistered              (+ LookupError)
    │   ├── InvalidKey                 (+ TypeError)
    │   ├── InvalidMetadata            (+ TypeError)
    │   ├── InvalidValue               (+ TypeError)
    │   ├── InvalidQuery               (+ ValueError)
    │   ├── RegistryClosed             (+ trio.ClosedResourceError)
    │   ├── BackendIsAsync             (+ trio.WouldBlock)
    │   ├── BackendUnavailable         (+ ImportError)
    │   └── WatchOverflow
    └── ConfigError                    (+ ValueError)

Errors carry their data as attributes (``err.key``, ``err.holder``) and pass
it to ``Exception.__init__`` so they print and pickle.
"""

from __future__ import annotations

from typing import Any

import trio

__all__ = [
    "AlreadyRegistered",
    "BackendIsAsync",
    "BackendUnavailable",
    "ConfigError",
    "FoundationError",
    "InvalidKey",
    "InvalidMetadata",
    "InvalidQuery",
    "InvalidValue",
    "NotRegistered",
    "RegistryClosed",
    "RegistryError",
    "WatchOverflow",
]


class FoundationError(Exception):
    """Root of every error trio-foundation raises on purpose."""


class ConfigError(FoundationError, ValueError):
    """A configuration value (argument or ``FOUNDATION_*`` variable) is invalid."""


class RegistryError(FoundationError):
    """Root of the registry's errors."""


class AlreadyRegistered(RegistryError, ValueError):
    """``register`` found the key held by another value or owner.

    Raised by ``register``/``register_nowait``; nothing was written.
    """

    #: The ``(namespace, name)`` key that is taken.
    key: tuple[Any, Any]
    #: The :class:`~foundation.registry.Registration` that holds it now.
    holder: Any

    def __init__(self, key: tuple[Any, Any], holder: Any) -> None:
        super().__init__(key, holder)
        self.key = key
        self.holder = holder

    def __str__(self) -> str:
        ns, name = self.key
        owner = getattr(self.holder, "owner", None)
        return (
            f"{name!r} is already registered in namespace {ns!r}"
            f" (owner {owner!r}); unregister it first, or pick another name"
        )


class NotRegistered(RegistryError, LookupError):
    """The key has no registration (``lookup``, ``metadata``, ``update_metadata``)."""

    #: The ``(namespace, name)`` key that was not found.
    key: tuple[Any, Any]

    def __init__(self, key: tuple[Any, Any]) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        ns, name = self.key
        return (
            f"{name!r} is not registered in namespace {ns!r}; use get() for a"
            " default, or wait_for() to block until it appears"
        )


class InvalidKey(RegistryError, TypeError):
    """A namespace or name cannot be used as a key.

    Unhashable objects, keys whose ``__hash__`` or ``__eq__`` raise (the
    original error is the ``__cause__``), and, on etcd, keys that are not
    portable (``str``, ``int`` or tuples of them).
    """

    #: The offending namespace or name.
    key: Any
    #: Why it was refused.
    reason: str

    def __init__(self, key: Any, reason: str) -> None:
        super().__init__(key, reason)
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid registry key {self.key!r}: {self.reason}"


class InvalidMetadata(RegistryError, TypeError):
    """Metadata is not a mapping (or, on etcd, not JSON); nothing was written."""

    #: The rejected metadata object.
    metadata: Any
    #: Why it was refused.
    reason: str

    def __init__(self, metadata: Any, reason: str) -> None:
        super().__init__(metadata, reason)
        self.metadata = metadata
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid metadata ({type(self.metadata).__name__}): {self.reason}"


class InvalidValue(RegistryError, TypeError):
    """A value cannot be stored by this backend (on etcd: not JSON-able)."""

    #: The rejected value.
    value: Any
    #: Why it was refused.
    reason: str

    def __init__(self, value: Any, reason: str) -> None:
        super().__init__(value, reason)
        self.value = value
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid value ({type(self.value).__name__}): {self.reason}"


class InvalidQuery(RegistryError, ValueError):
    """A ``select`` criterion is malformed (unknown operator, bad operand)."""

    #: The criterion that was refused.
    criterion: Any
    #: Why it was refused.
    reason: str

    def __init__(self, criterion: Any, reason: str) -> None:
        super().__init__(criterion, reason)
        self.criterion = criterion
        self.reason = reason

    def __str__(self) -> str:
        return f"invalid select criterion {self.criterion!r}: {self.reason}"


class RegistryClosed(RegistryError, trio.ClosedResourceError):
    """A write (or a wait) on a registry that was closed.

    ``unregister`` never raises it: removing from a closed registry is a no-op
    that returns ``False``.
    """

    def __init__(self, message: str = "the registry is closed; open a new one") -> None:
        super().__init__(message)


class BackendIsAsync(RegistryError, trio.WouldBlock):
    """An ``X_nowait`` write on a backend whose writes must wait (etcd).

    Use the async form (``await registry.register(...)``) instead.
    """

    def __init__(self, operation: str, backend: str) -> None:
        super().__init__(operation, backend)
        self.operation = operation
        self.backend = backend

    def __str__(self) -> str:
        return (
            f"{self.operation}_nowait() cannot run on the {self.backend!r} backend,"
            f" whose writes are asynchronous; use 'await registry.{self.operation}(...)'"
        )


class BackendUnavailable(RegistryError, ImportError):
    """The requested backend cannot be used here (e.g. native not built)."""


class WatchOverflow(RegistryError):
    """A ``watch()`` consumer fell more than ``max_buffer`` events behind.

    Events were dropped, so the consumer's view is stale: re-read the
    registry (or open a new watch with ``initial=True``) to re-sync.
    """

    #: The buffer size that was exceeded.
    max_buffer: int

    def __init__(self, max_buffer: int) -> None:
        super().__init__(max_buffer)
        self.max_buffer = max_buffer

    def __str__(self) -> str:
        return (
            f"watch fell more than {self.max_buffer} events behind and events were"
            " dropped; re-sync with watch(initial=True) or a larger max_buffer"
        )
