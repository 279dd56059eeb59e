"""A client process of the partition tests: the project's code, driven over JSON lines.

Started by the tests as ``ip netns exec NS python .../_driver.py NAME`` so it
runs on a test host (a network namespace) that the test can cut off while it
still talks to the process over its pipes. One command per stdin line, one
JSON object per stdout line:

* a command ``{"id": 7, "op": "register", ...}`` is run in a task of its own
  (so commands run concurrently) and answered once by
  ``{"id": 7, "ok": true, "result": ..., "t0": ..., "t1": ...}`` or
  ``{"id": 7, "ok": false, "error": "LockLost", "message": ..., "t0": ..., "t1": ...}``;
* events arrive whenever they happen: ``{"event": "watch", ...}``,
  ``{"event": "lock_entered", ...}``, ``{"event": "telemetry", ...}``...

Every time stamp is ``time.monotonic()`` (CLOCK_MONOTONIC), which is one clock
for the whole machine, namespaces included (``ip netns exec`` makes no time
namespace), so times from several processes and the test compare directly.
``t0`` is taken just before the library is called and ``t1`` just after it
returned or raised: the call took effect, if at all, inside ``[t0, t1]``.

The process exits when stdin closes (the test ended or died), cancelling what
runs. It is a test tool, not library code: an error of a command is caught
and reported to the test, which decides what it means.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import trio

from foundation import telemetry
from foundation.coordination import open_etcd_coordinator
from foundation.registry import open_registry

_now = time.monotonic

#: Seconds between the steps a lock or leadership holder records while inside.
STEP_INTERVAL = 0.1


def _jsonable(value: Any) -> Any:
    """``value`` with tuples, mappings and odd objects turned into JSON-able ones."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return repr(value)


def _error_fields(exc: BaseException) -> dict[str, Any]:
    return {
        "ok": False,
        "error": type(exc).__name__,
        "error_module": type(exc).__module__,
        "message": str(exc),
    }


def _registration(reg: Any) -> dict[str, Any] | None:
    if reg is None:
        return None
    return {
        "ns": _jsonable(reg.namespace),
        "name": _jsonable(reg.name),
        "value": _jsonable(reg.value),
        "owner": _jsonable(reg.owner),
    }


class Driver:
    """The state of one driver process: its registries, coordinators and long-running ops."""

    def __init__(self, name: str, nursery: trio.Nursery, out: trio.MemorySendChannel[str]) -> None:
        self.name = name
        self.nursery = nursery
        self._out = out
        self.registries: dict[str, Any] = {}
        self.coordinators: dict[str, Any] = {}
        #: Long-running commands (lock holders, campaigns, observers) by tag: their stop event.
        self.stops: dict[str, trio.Event] = {}
        #: Close events of registries and coordinators by name.
        self.closers: dict[str, trio.Event] = {}

    # -- output -----------------------------------------------------------------
    def emit(self, message: dict[str, Any]) -> None:
        message.setdefault("t", _now())
        message["client"] = self.name
        self._out.send_nowait(json.dumps(_jsonable(message)))  # unbounded: never blocks

    def event(self, event: str, /, **fields: Any) -> None:
        self.emit({"event": event, **fields})

    # -- dispatch ---------------------------------------------------------------
    async def handle(self, cmd: dict[str, Any]) -> None:
        op = cmd.get("op")
        handler: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = getattr(
            self, f"op_{op}", None
        )
        reply: dict[str, Any] = {"id": cmd.get("id"), "op": op}
        if handler is None:
            reply.update(ok=False, error="UnknownCommand", message=f"no op {op!r}")
            reply["t0"] = reply["t1"] = _now()
            self.emit(reply)
            return
        t0 = _now()
        try:
            result = await handler(cmd)
        except Exception as exc:
            reply.update(_error_fields(exc))
            reply.setdefault("t0", t0)
            reply["t1"] = _now()
            reply["traceback"] = traceback.format_exc(limit=8)
        else:
            reply.update(result)
            reply.setdefault("ok", True)
            reply.setdefault("t0", t0)
            reply.setdefault("t1", _now())
        self.emit(reply)

    # -- registries ---------------------------------------------------------------
    async def op_open_registry(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd["name"]
        options = {
            "endpoints": cmd["endpoints"],
            "prefix": cmd["prefix"],
            "ttl": cmd.get("ttl", 5),
            "timeout": cmd.get("timeout", 5.0),
        }
        closed = self.closers[name] = trio.Event()
        t0 = _now()
        await self.nursery.start(self._hold_registry, name, options, closed)
        return {"t0": t0, "result": {"health": self._health(self.registries[name])}}

    async def _hold_registry(
        self,
        name: str,
        options: dict[str, Any],
        closed: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        started = False
        try:
            async with open_registry(backend="etcd", **options) as reg:
                self.registries[name] = reg
                async with trio.open_nursery() as inner:
                    await inner.start(self._watch_registry, name, reg)
                    task_status.started()
                    started = True
                    await closed.wait()
                    inner.cancel_scope.cancel()
            self.event("registry_closed", registry=name, how="closed")
        except Exception as exc:
            if not started:
                raise
            self.event("registry_closed", registry=name, how="error", **_error_fields(exc))
        finally:
            self.registries.pop(name, None)

    async def _watch_registry(
        self, name: str, reg: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Forward every event of ``reg``'s watch; a watch that ends with an error is reopened."""
        first = True
        while True:
            try:
                async with reg.watch() as events:
                    if first:
                        task_status.started()
                        first = False
                    async for ev in events:
                        fields: dict[str, Any] = {
                            "registry": name,
                            "kind": str(ev.kind),
                            "registration": _registration(ev.registration),
                        }
                        if hasattr(ev, "reason"):
                            fields["reason"] = str(ev.reason)
                        else:
                            fields["reason_missing"] = True
                        self.event("watch", **fields)
                self.event("watch_ended", registry=name)
                return
            except Exception as exc:
                self.event("watch_error", registry=name, **_error_fields(exc))
                if first:
                    raise
                await trio.sleep(0.05)

    def _reg(self, cmd: dict[str, Any]) -> Any:
        return self.registries[cmd.get("registry", "r")]

    @staticmethod
    def _health(reg: Any) -> dict[str, Any]:
        health = reg.health_check()
        return {
            "ok": bool(health.ok),
            "detail": health.detail,
            "details": _jsonable(dict(health.details)),
            "wall": time.time(),
            "mono": _now(),
        }

    async def op_register(self, cmd: dict[str, Any]) -> dict[str, Any]:
        reg = self._reg(cmd)
        t0 = _now()
        result = await reg.register(cmd["ns"], cmd["name"], cmd["value"], cmd.get("metadata"))
        return {"t0": t0, "t1": _now(), "result": _registration(result)}

    async def op_unregister(self, cmd: dict[str, Any]) -> dict[str, Any]:
        reg = self._reg(cmd)
        t0 = _now()
        result = await reg.unregister(cmd["ns"], cmd["name"])
        return {"t0": t0, "t1": _now(), "result": bool(result)}

    async def op_lookup(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """A read of the local view, without sync (it may be stale, by design)."""
        reg = self._reg(cmd)
        t0 = _now()
        found = reg.get(cmd["ns"], cmd["name"], None)
        t1 = _now()
        await trio.lowlevel.checkpoint()
        return {"t0": t0, "t1": t1, "result": _jsonable(found)}

    async def op_sync(self, cmd: dict[str, Any]) -> dict[str, Any]:
        reg = self._reg(cmd)
        t0 = _now()
        await reg.sync()
        return {"t0": t0, "t1": _now()}

    async def op_sync_lookup(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """``sync()`` then a read of each key: linearizable reads, invoked at ``t0``."""
        reg = self._reg(cmd)
        t0 = _now()
        await reg.sync()
        found = {
            json.dumps([ns, name]): _jsonable(reg.get(ns, name, None)) for ns, name in cmd["keys"]
        }
        return {"t0": t0, "t1": _now(), "result": found}

    async def op_registrations(self, cmd: dict[str, Any]) -> dict[str, Any]:
        reg = self._reg(cmd)
        t0 = _now()
        regs = [_registration(r) for r in reg.registrations(cmd.get("ns"))]
        t1 = _now()
        await trio.lowlevel.checkpoint()
        return {"t0": t0, "t1": t1, "result": regs}

    async def op_health(self, cmd: dict[str, Any]) -> dict[str, Any]:
        t0 = _now()
        result = self._health(self._reg(cmd))
        t1 = _now()
        await trio.lowlevel.checkpoint()
        return {"t0": t0, "t1": t1, "result": result}

    async def op_close(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Close a registry or coordinator by name (its block exits)."""
        self.closers[cmd["name"]].set()
        await trio.lowlevel.checkpoint()
        return {}

    # -- telemetry ----------------------------------------------------------------
    async def op_telemetry(self, cmd: dict[str, Any]) -> dict[str, Any]:
        prefix = cmd["prefix"]

        def forward(
            event: str, measurements: Mapping[str, float], metadata: Mapping[str, Any]
        ) -> None:
            self.event(
                "telemetry",
                name=event,
                measurements=_jsonable(dict(measurements)),
                metadata=_jsonable(dict(metadata)),
            )

        telemetry.attach(f"partition-driver:{prefix}", prefix, forward)
        await trio.lowlevel.checkpoint()
        return {}

    # -- coordinators -------------------------------------------------------------
    async def op_open_coordinator(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = cmd["name"]
        closed = self.closers[name] = trio.Event()
        options = {
            "prefix": cmd["prefix"],
            "ttl": cmd.get("ttl", 5),
            "timeout": cmd.get("timeout", 5.0),
        }
        t0 = _now()
        await self.nursery.start(self._hold_coordinator, name, cmd["endpoints"], options, closed)
        return {"t0": t0}

    async def _hold_coordinator(
        self,
        name: str,
        endpoints: list[str],
        options: dict[str, Any],
        closed: trio.Event,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        started = False
        try:
            async with open_etcd_coordinator(endpoints, **options) as coord:
                self.coordinators[name] = coord
                task_status.started()
                started = True
                await closed.wait()
            self.event("coordinator_closed", coordinator=name, how="closed")
        except Exception as exc:
            if not started:
                raise
            self.event("coordinator_closed", coordinator=name, how="error", **_error_fields(exc))
        finally:
            self.coordinators.pop(name, None)

    def _coord(self, cmd: dict[str, Any]) -> Any:
        return self.coordinators[cmd.get("coordinator", "c")]

    async def _inside(self, tag: str, what: str, token: int, stop: trio.Event, hold: float) -> None:
        """The body of a held lock or term: steps until ``stop`` or ``hold`` seconds pass.

        The ``*_exited`` event carries the time the body stopped running: when
        its cancellation was delivered, for a lock or term taken away.
        """
        how = "released"
        try:
            with trio.move_on_after(hold):
                while not stop.is_set():
                    self.event(f"{what}_step", tag=tag, token=token)
                    with trio.move_on_after(STEP_INTERVAL):
                        await stop.wait()
        except BaseException as exc:
            how = type(exc).__name__
            raise
        finally:
            self.event(f"{what}_exited", tag=tag, token=token, how=how)

    async def op_lock(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Acquire ``lock``, stay inside ``hold`` seconds (or until ``release``), leave.

        Events: ``lock_entered`` (time it got in, with the fencing token),
        ``lock_step`` every 0.1 s inside, ``lock_exited``. The reply comes when
        the block has been left (``ok`` false with ``LockLost`` if taken away).
        """
        coord = self._coord(cmd)
        tag = cmd["tag"]
        stop = self.stops[tag] = trio.Event()
        hold = cmd.get("hold")
        hold = math.inf if hold is None else float(hold)
        timeout = cmd.get("timeout")
        t0 = _now()
        entered: dict[str, Any] = {}
        try:
            async with coord.lock(cmd["lock"], timeout=timeout) as held:
                token = held.fencing_token
                entered.update(token=token, t_enter=_now())
                self.event("lock_entered", tag=tag, token=token, t=entered["t_enter"], t0=t0)
                await self._inside(tag, "lock", token, stop, hold)
        except Exception as exc:
            return {**_error_fields(exc), "t0": t0, "result": entered}
        return {"t0": t0, "result": entered}

    async def op_release(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Ask the long-running command ``tag`` (lock, campaign, observe) to finish."""
        self.stops[cmd["tag"]].set()
        await trio.lowlevel.checkpoint()
        return {}

    async def op_campaign(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Campaign in ``group`` as ``candidate``; lead ``hold`` seconds (or until ``release``)."""
        coord = self._coord(cmd)
        tag = cmd["tag"]
        stop = self.stops[tag] = trio.Event()
        hold = cmd.get("hold")
        hold = math.inf if hold is None else float(hold)
        t0 = _now()
        entered: dict[str, Any] = {}
        try:
            async with coord.election(cmd["group"]).campaign(cmd["candidate"]) as term:
                entered.update(term=term.number, t_enter=_now())
                self.event("elected", tag=tag, term=term.number, t=entered["t_enter"], t0=t0)
                await self._inside(tag, "term", term.number, stop, hold)
        except Exception as exc:
            return {**_error_fields(exc), "t0": t0, "result": entered}
        return {"t0": t0, "result": entered}

    async def op_observe(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Emit ``leader`` events from ``election.observe()`` until ``release``.

        An iterator that fails (the host is cut off) is reported and opened again.
        """
        coord = self._coord(cmd)
        tag = cmd["tag"]
        stop = self.stops[tag] = trio.Event()
        election = coord.election(cmd["group"])
        t0 = _now()
        async with trio.open_nursery() as nursery:

            async def run() -> None:
                while True:
                    try:
                        async for leader in election.observe():
                            if leader is None:
                                self.event("leader", tag=tag, candidate=None, term=None)
                            else:
                                self.event(
                                    "leader", tag=tag, candidate=leader.candidate, term=leader.term
                                )
                    except Exception as exc:
                        self.event("observe_error", tag=tag, **_error_fields(exc))
                        await trio.sleep(0.1)

            nursery.start_soon(run)
            await stop.wait()
            nursery.cancel_scope.cancel()
        return {"t0": t0}


def _stamp(record: logging.LogRecord) -> bool:
    record.mono = _now()
    return True


async def _read_lines(stream: trio.abc.ReceiveStream) -> AsyncIterator[str]:
    buffer = b""
    while True:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line.strip():
                yield line.decode()


async def _writer(stream: trio.abc.SendStream, lines: trio.MemoryReceiveChannel[str]) -> None:
    async for line in lines:
        await stream.send_all(line.encode() + b"\n")


async def main(name: str) -> None:
    stdin = trio.lowlevel.FdStream(os.dup(0))
    stdout = trio.lowlevel.FdStream(os.dup(1))
    send, receive = trio.open_memory_channel[str](math.inf)
    async with trio.open_nursery() as outer:
        outer.start_soon(_writer, stdout, receive)
        async with trio.open_nursery() as nursery:
            driver = Driver(name, nursery, send)
            driver.event("ready", pid=os.getpid())
            async for line in _read_lines(stdin):
                try:
                    cmd = json.loads(line)
                except ValueError:
                    driver.event("bad_command", line=line)
                    continue
                nursery.start_soon(driver.handle, cmd)
            # stdin closed: the test is done (or gone). Stop everything.
            nursery.cancel_scope.cancel()
        send.close()


if __name__ == "__main__":
    # Log lines carry the shared clock, to line them up with the events.
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_stamp)
    handler.setFormatter(logging.Formatter("%(mono).3f %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else "driver")
