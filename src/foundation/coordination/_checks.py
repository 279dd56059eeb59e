"""Argument checks shared by every coordinator (local and etcd).

Each raises :class:`~foundation.errors.ConfigError` naming the argument and
what it takes, before anything is waited for or written.
"""

from __future__ import annotations

import math
from collections.abc import Collection

import trio

from ..errors import ConfigError

__all__ = [
    "check_limit",
    "check_member",
    "check_name",
    "check_parties",
    "check_quorum",
    "check_seconds",
    "deadline",
]


def check_name(what: str, name: object) -> str:
    """``name`` if it is a non-empty str (a lock, election, barrier... name)."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{what} must be a non-empty str, got {name!r}")
    return name


def check_seconds(what: str, value: float | None) -> float | None:
    """``value`` as float seconds (>= 0, not NaN), or None for no limit."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or math.isnan(value)
        or value < 0
    ):
        raise ConfigError(f"{what}={value!r}: use a number of seconds >= 0, or None")
    return float(value)


def check_parties(parties: object) -> int:
    """``parties`` of a barrier: an int >= 1."""
    if isinstance(parties, bool) or not isinstance(parties, int) or parties < 1:
        raise ConfigError(f"parties={parties!r}: use an int >= 1")
    return parties


def check_limit(limit: object) -> int:
    """``limit`` of a semaphore: an int >= 1."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"limit={limit!r}: use an int >= 1")
    return limit


def check_member(member: object) -> str:
    """A membership's member id: a non-empty str without ``/``.

    ``/`` separates a group's name from its members' ids in etcd keys, so
    an id with one could be read as a member of another group.
    """
    check_name("member", member)
    assert isinstance(member, str)
    if "/" in member:
        raise ConfigError(f"member={member!r}: a member id may not contain '/'")
    return member


def deadline(timeout: float | None) -> float:
    """The Trio deadline ``timeout`` seconds from now (``inf`` for None)."""
    return math.inf if timeout is None else trio.current_time() + timeout


def check_quorum(
    participants: Collection[str], quorum: int | None, unanimous: bool
) -> tuple[frozenset[str], int]:
    """The participants of a ballot as a set, and the ACCEPT votes that carry it.

    ``quorum`` defaults to a majority (``len // 2 + 1``); ``unanimous=True``
    makes it every participant.
    """
    if isinstance(participants, str | bytes):
        # A str is a collection of its letters: refuse it rather than hold a
        # ballot among "a", "b" and "c" for participants="abc".
        raise ConfigError(
            f"participants={participants!r}: give a collection of names, such as"
            f" [{participants!r}], not a single {type(participants).__name__}"
        )
    names = frozenset(participants)
    if not names or not all(isinstance(p, str) and p for p in names):
        raise ConfigError(f"participants={participants!r}: give one or more non-empty str")
    if unanimous:
        if quorum is not None and quorum != len(names):
            raise ConfigError(
                f"unanimous=True needs all {len(names)} participants; drop quorum={quorum}"
            )
        return names, len(names)
    if quorum is None:
        return names, len(names) // 2 + 1
    if isinstance(quorum, bool) or not isinstance(quorum, int) or not 1 <= quorum <= len(names):
        raise ConfigError(f"quorum={quorum!r}: use an int from 1 to {len(names)}")
    return names, quorum
