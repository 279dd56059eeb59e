"""Children of the cluster tests, importable by name (``_cluster_children:sleeper``).

Each records what it did in :data:`EVENTS` (in-process tests) as
``(event, tag, token, trio time, extra)``.
"""

from __future__ import annotations

from typing import Any

import trio

from foundation.cluster import Handoff, current_fencing_token

EVENTS: list[tuple[str, Any, int, float, Any]] = []


def record(event: str, tag: Any, extra: Any = None) -> None:
    EVENTS.append((event, tag, current_fencing_token(), trio.current_time(), extra))


def events(event: str, tag: Any = None) -> list[tuple[str, Any, int, float, Any]]:
    return [e for e in EVENTS if e[0] == event and (tag is None or e[1] == tag)]


async def sleeper(tag: Any) -> None:
    record("start", tag)
    try:
        await trio.sleep_forever()
    finally:
        record("stop", tag)


async def named(tag: Any, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    record("start", tag)
    task_status.started({"tag": tag, "token": current_fencing_token()})
    try:
        await trio.sleep_forever()
    finally:
        record("stop", tag)


async def counter(tag: Any, *, handoff: Handoff, handoff_state: Any = None) -> None:
    """Counts up from the state it was handed, saving each step."""
    n = handoff_state or 0
    record("start", tag, n)
    try:
        while True:
            n += 1
            await handoff.save(n)
            await trio.sleep(0.05)
    finally:
        record("stop", tag, n)


async def crash_after_save(tag: Any, *, handoff: Handoff, handoff_state: Any = None) -> None:
    """Saves its incarnation number, then crashes once (the next instance runs on)."""
    n = (handoff_state or 0) + 1
    record("start", tag, handoff_state)
    await handoff.save(n)
    if n == 1:
        raise RuntimeError("crash after saving")
    await trio.sleep_forever()


async def crasher(tag: Any) -> None:
    record("start", tag)
    raise RuntimeError(f"crash loop of {tag}")


async def finishes(tag: Any) -> None:
    record("start", tag)


async def args_echo(*args: Any) -> None:
    record("start", "echo", args)
    await trio.sleep_forever()


async def start_crasher(
    tag: Any, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
) -> None:
    """Crashes before it reports started: it never runs."""
    record("start", tag)
    raise RuntimeError(f"start crash of {tag}")


#: The node a process runs (set by ``_node.py``): heartbeats name it.
NODE = "?"


async def beater(tag: Any, beats_dir: str, *, handoff: Handoff, handoff_state: Any = None) -> None:
    """Appends a heartbeat (node, fencing token, monotonic time) to ``<beats_dir>/<tag>.jsonl``.

    Every 50 ms, plus a ``start`` line first and a ``stop`` line when it
    stops (also when cancelled). ``time.monotonic()`` is one clock for every
    process of the machine, network namespaces included, so the beats of
    several processes compare directly. Lines are appended with ``O_APPEND``
    in one ``write`` each, so concurrent writers never interleave within a line.
    Each beat counts on from the count the previous instance handed over
    (``handoff.save`` before each beat; the ``start`` line says where it
    starts: ``"from"``).
    """
    import json
    import os
    import time

    path = os.path.join(beats_dir, f"{tag}.jsonl")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    token = current_fencing_token()
    n = handoff_state or 0

    def write(kind: str, **extra: Any) -> None:
        line = {
            "k": kind,
            "node": NODE,
            "token": token,
            "t": time.monotonic(),
            "pid": os.getpid(),
            "n": n,
            **extra,
        }
        os.write(fd, (json.dumps(line) + "\n").encode())

    try:
        write("start", **{"from": handoff_state})
        while True:
            n += 1
            await handoff.save(n)
            write("beat")
            await trio.sleep(0.05)
    finally:
        write("stop")
        os.close(fd)


async def idle(tag: Any) -> None:
    """Does nothing until stopped (benchmarks)."""
    await trio.sleep_forever()
