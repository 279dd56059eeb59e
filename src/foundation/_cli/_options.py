"""Argument types and option tables shared by the commands.

Each type raises :class:`argparse.ArgumentTypeError` with a sentence that
says what to write instead; argparse turns it into the subcommand's usage
and exit status 2. :func:`add_options` adds a table of :class:`Option` rows,
for the families of options that differ only in name, type and default
(``bench --scale-*``, ``--threads-*``, ``--etcd-*``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Option",
    "add_options",
    "count",
    "endpoints",
    "non_negative",
    "positive",
    "seconds",
    "sizes",
]


def sizes(text: str) -> list[int]:
    """Parse ``1000,100000`` (also ``1e3,1e6`` and ``1_000``) into ints >= 1."""
    out: list[int] = []
    for part in text.split(","):
        part = part.strip().replace("_", "")
        if not part:
            continue
        try:
            value = float(part) if any(c in part for c in ".eE") else int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r} is not a size (use e.g. 1000,1e6)"
            ) from None
        if value != int(value) or value < 1:
            raise argparse.ArgumentTypeError(f"size {part!r} must be a whole number >= 1")
        out.append(int(value))
    if not out:
        raise argparse.ArgumentTypeError("give at least one size, e.g. --sizes 1000,100000")
    return out


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def positive(text: str) -> int:
    """A whole number >= 1."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def non_negative(text: str) -> int:
    """A whole number >= 0."""
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def count(text: str) -> int:
    """Any whole number (the command checks its range, with a better sentence)."""
    return _integer(text)


def seconds(text: str) -> float:
    """A number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, not {text}")
    return value


def endpoints(text: str) -> tuple[str, ...]:
    """Comma-separated URLs, at least one."""
    urls = tuple(u.strip() for u in text.split(",") if u.strip())
    if not urls:
        raise argparse.ArgumentTypeError("give one or more URLs, e.g. http://127.0.0.1:2379")
    return urls


@dataclass(frozen=True)
class Option:
    """One row of an option table: ``--{prefix}{name}``."""

    name: str
    type: Callable[[str], Any]
    default: Any
    metavar: str
    help: str


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    prefix: str,
    rows: Iterable[Option],
    *,
    help_prefix: str = "",
) -> None:
    """Add ``--{prefix}{row.name}`` for each row, with its type, default and help."""
    for row in rows:
        parser.add_argument(
            f"--{prefix}{row.name}",
            type=row.type,
            default=row.default,
            metavar=row.metavar,
            help=help_prefix + row.help,
        )
