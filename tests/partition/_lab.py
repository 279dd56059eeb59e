"""The partition lab: etcd members and driver processes on namespace hosts.

:class:`Lab` puts together a :class:`~_netns.Net`, a three-member etcd
cluster whose members each run on a host of their own, an observer host
that is never cut (the test's own vantage point, to read etcd directly), and
client processes (:class:`DriverClient`, each running ``_driver.py`` on a host
of its own). Everything runs on the real clock; every time stamp is
``time.monotonic()``, one clock for all namespaces.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from _history import History, Interval, Op
from _netns import Host, Net, Proc

from _etcd_harness import (
    ELECTION_TIMEOUT_MS,
    HEARTBEAT_INTERVAL_MS,
    EtcdBinaries,
    http_get_json,
    v3_call,
)

__all__ = ["DriverClient", "Lab", "LabError", "NsEtcdCluster", "Reply", "intervals_text"]

DRIVER = str(Path(__file__).with_name("_driver.py"))
CLIENT_PORT = 2379
PEER_PORT = 2380

now = time.monotonic


class LabError(AssertionError):
    """The lab could not do what the test asked (a process died, a reply never came)."""


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("ETCD_", "ETCDCTL_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b"\0"


# --------------------------------------------------------------------------
# etcd members on hosts
# --------------------------------------------------------------------------


@dataclass(eq=False)
class Member:
    name: str
    host: Host
    proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host.ip}:{CLIENT_PORT}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host.ip}:{PEER_PORT}"


class NsEtcdCluster:
    """etcd members, one per host, with the suite's timing for small shared machines."""

    def __init__(self, net: Net, binaries: EtcdBinaries, hosts: Sequence[Host], observer: Host):
        self.net = net
        self.binaries = binaries
        self.observer = observer
        self.members = [Member(h.name, h) for h in hosts]
        self.token = f"fdnp-{uuid.uuid4().hex[:12]}"

    @property
    def endpoints(self) -> list[str]:
        return [m.url for m in self.members]

    def _argv(self, member: Member, state: str) -> list[str]:
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        return [
            self.binaries.etcd,
            f"--name={member.name}",
            f"--data-dir={os.path.join(self.net.base_dir, member.name + '.data')}",
            f"--listen-client-urls={member.url}",
            f"--advertise-client-urls={member.url}",
            f"--listen-peer-urls={member.peer_url}",
            f"--initial-advertise-peer-urls={member.peer_url}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-token={self.token}",
            f"--initial-cluster-state={state}",
            f"--heartbeat-interval={HEARTBEAT_INTERVAL_MS}",
            f"--election-timeout={ELECTION_TIMEOUT_MS}",
            "--logger=zap",
            "--log-outputs=stderr",
        ]

    def start_processes(self) -> None:
        for member in self.members:
            member.proc = self.net.spawn(
                member.host, self._argv(member, "new"), name=f"etcd-{member.name}", env=_clean_env()
            )

    def _get(self, url: str, timeout: float) -> tuple[int, Any]:
        return self.net.run_in(self.observer, http_get_json, url, timeout=timeout)

    def _post(self, url: str, path: str, body: dict[str, Any], timeout: float) -> tuple[int, Any]:
        return self.net.run_in(self.observer, v3_call, url, path, body, timeout=timeout)

    async def healthy(self, member: Member, timeout: float = 2.0) -> bool:
        try:
            status, body = await trio.to_thread.run_sync(self._get, f"{member.url}/health", timeout)
        except (OSError, ValueError):
            return False
        return status == 200 and isinstance(body, dict) and body.get("health") == "true"

    async def wait_healthy(self, timeout: float = 40.0, members: Iterable[Member] | None = None):
        targets = list(self.members if members is None else members)
        with trio.fail_after(timeout):
            for member in targets:
                while not await self.healthy(member):
                    if member.proc is not None and not member.proc.running:
                        raise LabError(f"etcd {member.name} exited:\n{member.proc.tail_log(30)}")
                    await trio.sleep(0.2)

    async def call(
        self,
        path: str,
        body: dict[str, Any],
        *,
        timeout: float = 3.0,
        members: Sequence[int] | None = None,
    ) -> Any:
        """POST to the v3 gateway of the first member that answers 200 (from the observer).

        ``members``: indices to try, in order (default: all).
        """
        errors = []
        order = range(len(self.members)) if members is None else members
        for member in (self.members[i] for i in order):
            try:
                status, reply = await trio.to_thread.run_sync(
                    self._post, member.url, path, body, timeout
                )
            except OSError as exc:
                errors.append(f"{member.name}: {exc}")
                continue
            if status == 200:
                return reply
            errors.append(f"{member.name}: HTTP {status} {reply!r}")
        raise LabError(f"no member answered {path}: {errors}")

    async def range_prefix(
        self, prefix: str, *, members: Sequence[int] | None = None, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Every key under ``prefix`` (decoded: key, value bytes, lease id, revisions).

        A linearizable read: the member asked must be able to reach a leader.
        """
        raw = prefix.encode()
        reply = await self.call(
            "kv/range",
            {"key": b64(raw), "range_end": b64(prefix_end(raw))},
            timeout=timeout,
            members=members,
        )
        out = []
        for kv in reply.get("kvs", []) or []:
            out.append(
                {
                    "key": base64.b64decode(kv["key"]).decode(errors="replace"),
                    "value": base64.b64decode(kv.get("value", "")),
                    "lease": int(kv.get("lease", 0) or 0),
                    "create_revision": int(kv.get("create_revision", 0) or 0),
                    "mod_revision": int(kv.get("mod_revision", 0) or 0),
                }
            )
        return out

    async def lease_ttl(self, lease: int) -> int:
        """Seconds left on ``lease`` as etcd says (-1: gone)."""
        reply = await self.call("lease/timetolive", {"ID": str(lease)})
        return int(reply.get("TTL", -1))

    async def leader_index(self) -> int | None:
        ids: dict[str, int] = {}
        leaders = set()
        for i, member in enumerate(self.members):
            try:
                status, reply = await trio.to_thread.run_sync(
                    self._post, member.url, "maintenance/status", {}, 1.0
                )
            except OSError:
                continue
            if status != 200:
                continue
            ids[str(reply.get("header", {}).get("member_id"))] = i
            if str(reply.get("leader", "0")) != "0":
                leaders.add(str(reply["leader"]))
        for leader in leaders:
            if leader in ids:
                return ids[leader]
        return None

    async def wait_leader(self, timeout: float = 20.0) -> int:
        """The index of the leader, once there is one."""
        with trio.fail_after(timeout):
            while True:
                index = await self.leader_index()
                if index is not None:
                    return index
                await trio.sleep(0.2)

    def describe_logs(self, n: int = 30) -> str:
        return "\n".join(
            f"--- etcd {m.name} ({m.url}) ---\n{m.proc.tail_log(n) if m.proc else '<not started>'}"
            for m in self.members
        )


# --------------------------------------------------------------------------
# Driver processes
# --------------------------------------------------------------------------


@dataclass
class Reply:
    """The answer to one command (``None`` fields until it arrives)."""

    id: int
    op: str
    fields: dict[str, Any]
    sent: float
    message: dict[str, Any] | None = None
    done: trio.Event = field(default_factory=trio.Event)

    @property
    def ok(self) -> bool:
        return self.message is not None and bool(self.message.get("ok"))

    @property
    def error(self) -> str | None:
        if self.message is None:
            return None
        return self.message.get("error")

    @property
    def t0(self) -> float:
        """When the driver invoked the call (the send time if no answer came)."""
        if self.message is None:
            return self.sent
        return float(self.message.get("t0", self.sent))

    @property
    def t1(self) -> float | None:
        """When the call returned in the driver, or None if no answer came."""
        if self.message is None:
            return None
        return float(self.message["t1"])

    @property
    def result(self) -> Any:
        return None if self.message is None else self.message.get("result")

    async def wait(self, timeout: float) -> Reply:
        with trio.move_on_after(timeout):
            await self.done.wait()
        return self

    def __repr__(self) -> str:
        return f"<Reply #{self.id} {self.op} {self.fields} -> {self.message}>"


class DriverClient:
    """The test's end of one driver process (JSON lines over its pipes)."""

    def __init__(self, name: str, proc: Proc) -> None:
        self.name = name
        self.proc = proc
        self.host = proc.host
        assert proc.popen.stdin is not None
        assert proc.popen.stdout is not None
        self._send_stream = trio.lowlevel.FdStream(os.dup(proc.popen.stdin.fileno()))
        self._recv_stream = trio.lowlevel.FdStream(os.dup(proc.popen.stdout.fileno()))
        proc.popen.stdin.close()
        proc.popen.stdout.close()
        self._ids = itertools.count(1)
        self._send_lock = trio.Lock()
        self.calls: dict[int, Reply] = {}
        self.events: list[dict[str, Any]] = []
        self._changed = trio.Event()
        self.eof = False

    def __repr__(self) -> str:
        return f"<DriverClient {self.name} on {self.host.name}>"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read the driver's lines until it exits (a task of the lab's nursery)."""
        task_status.started()
        buffer = b""
        try:
            while True:
                try:
                    chunk = await self._recv_stream.receive_some(65536)
                except (trio.ClosedResourceError, OSError):
                    chunk = b""
                if not chunk:
                    return
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self._dispatch(line)
        finally:
            self.eof = True
            for reply in self.calls.values():
                reply.done.set()
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _dispatch(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            message = {"event": "garbage", "line": line.decode(errors="replace")}
        if "id" in message and "event" not in message:
            reply = self.calls.get(message["id"])
            if reply is not None:
                reply.message = message
                reply.done.set()
        else:
            self.events.append(message)
        self._notify()

    async def send(self, op: str, **fields: Any) -> Reply:
        """Send a command; returns at once with its :class:`Reply` (``await reply.wait(t)``)."""
        if self.eof:
            raise LabError(f"driver {self.name} has exited:\n{self.proc.tail_log(40)}")
        ident = next(self._ids)
        reply = Reply(ident, op, fields, sent=now())
        self.calls[ident] = reply
        line = json.dumps({"id": ident, "op": op, **fields}) + "\n"
        async with self._send_lock:
            await self._send_stream.send_all(line.encode())
        return reply

    async def call(self, op: str, *, timeout: float = 30.0, **fields: Any) -> Reply:
        """Send a command and wait for its answer; :class:`LabError` if none comes in time."""
        reply = await self.send(op, **fields)
        await reply.wait(timeout)
        if reply.message is None:
            raise LabError(
                f"{self.name}: no answer to {op} {fields} within {timeout} s"
                f" (driver {'exited' if self.eof else 'running'}):\n{self.proc.tail_log(40)}"
            )
        return reply

    async def ok(self, op: str, *, timeout: float = 30.0, **fields: Any) -> Reply:
        """:meth:`call` that also insists on success."""
        reply = await self.call(op, timeout=timeout, **fields)
        if not reply.ok:
            raise LabError(f"{self.name}: {op} {fields} failed: {reply.message}")
        return reply

    def find(self, event: str, /, **match: Any) -> list[dict[str, Any]]:
        """The events named ``event`` whose fields equal ``match``."""
        return [
            e
            for e in self.events
            if e.get("event") == event and all(e.get(k) == v for k, v in match.items())
        ]

    async def wait_event(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float, *, start: int = 0
    ) -> dict[str, Any] | None:
        """The first event from index ``start`` on that satisfies ``predicate``, or None."""
        index = start
        with trio.move_on_after(timeout):
            while True:
                while index < len(self.events):
                    event = self.events[index]
                    index += 1
                    if predicate(event):
                        return event
                if self.eof:
                    return None
                await self._changed.wait()
        return None

    async def aclose(self) -> None:
        """Close the command pipe: the driver cancels what runs and exits."""
        with trio.CancelScope(shield=True), contextlib.suppress(trio.ClosedResourceError, OSError):
            await self._send_stream.aclose()


# --------------------------------------------------------------------------
# The lab
# --------------------------------------------------------------------------


class Lab:
    """Hosts, a cluster, drivers and the history of one test.

    Made by the ``lab`` fixture; the fixture closes it (processes killed,
    namespaces deleted) whatever the test's outcome.
    """

    def __init__(self, net: Net, binaries: EtcdBinaries, nursery: trio.Nursery) -> None:
        self.net = net
        self.binaries = binaries
        self.nursery = nursery
        self.observer = net.add_host("obs")
        self.cluster: NsEtcdCluster | None = None
        self.drivers: dict[str, DriverClient] = {}
        self.history = History()
        self.prefix = f"fdnp/{uuid.uuid4().hex[:8]}/"
        #: Notes for the report (timings measured by the test).
        self.notes: list[str] = []

    # -- setup ------------------------------------------------------------------
    async def start_cluster(self, size: int = 3) -> NsEtcdCluster:
        hosts = [self.net.add_host(f"m{i}") for i in range(size)]
        cluster = self.cluster = NsEtcdCluster(self.net, self.binaries, hosts, self.observer)
        cluster.start_processes()
        await cluster.wait_healthy()
        return cluster

    @property
    def endpoints(self) -> list[str]:
        assert self.cluster is not None
        return self.cluster.endpoints

    def endpoints_from(self, first: int) -> list[str]:
        """The endpoints with member ``first`` first (clients talk to their first endpoint)."""
        eps = self.endpoints
        return eps[first:] + eps[:first]

    async def start_drivers(self, *names: str) -> list[DriverClient]:
        """One driver process per name, each on a new host of that name; waits until ready."""
        clients = []
        for name in names:
            host = self.net.add_host(name)
            proc = self.net.spawn(
                host,
                [sys.executable, "-u", DRIVER, name],
                name=f"driver-{name}",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=_clean_env(),
            )
            client = DriverClient(name, proc)
            await self.nursery.start(client.run)
            self.drivers[name] = client
            clients.append(client)
        for client in clients:
            ready = await client.wait_event(lambda e: e.get("event") == "ready", 30)
            if ready is None:
                raise LabError(f"driver {client.name} did not start:\n{client.proc.tail_log(40)}")
        return clients

    async def open_registry(
        self,
        client: DriverClient,
        *,
        first: int = 0,
        ttl: int = 5,
        timeout: float = 5.0,
        name: str = "r",
    ) -> Reply:
        return await client.ok(
            "open_registry",
            name=name,
            endpoints=self.endpoints_from(first),
            prefix=self.prefix,
            ttl=ttl,
            timeout=timeout,
        )

    async def open_coordinator(
        self,
        client: DriverClient,
        *,
        first: int = 0,
        ttl: int = 5,
        timeout: float = 5.0,
        name: str = "c",
    ) -> Reply:
        return await client.ok(
            "open_coordinator",
            name=name,
            endpoints=self.endpoints_from(first),
            prefix=self.prefix,
            ttl=ttl,
            timeout=timeout,
        )

    # -- reading etcd directly ---------------------------------------------------
    async def registry_entries(self) -> dict[str, dict[str, Any]]:
        """The registry's unique names in etcd: ``json [ns, name] -> {value, instance, lease}``.

        Decoded with the documented encoding (``prefix + "reg/" + json([ns,
        name])`` -> ``{"v": value, "o": owner, "i": instance, ...}``).
        """
        assert self.cluster is not None
        out = {}
        for kv in await self.cluster.range_prefix(self.prefix + "reg/"):
            key = kv["key"][len(self.prefix + "reg/") :]
            try:
                body = json.loads(kv["value"])
            except ValueError:
                body = {"v": kv["value"].decode(errors="replace")}
            out[json.dumps(json.loads(key))] = {
                "value": body.get("v"),
                "instance": body.get("i"),
                "lease": kv["lease"],
                "create_revision": kv["create_revision"],
            }
        return out

    # -- history helpers ------------------------------------------------------------
    def record_register(self, client: str, key: str, value: Any, reply: Reply) -> Op:
        """A ``register`` call in the history: ok, taken, or pending (any other outcome)."""
        if reply.message is not None and reply.ok:
            return self.history.add(
                Op(client, key, "register", value, reply.t0, reply.t1, "ok", f"#{reply.id}")
            )
        if reply.error == "AlreadyRegistered":
            return self.history.add(
                Op(client, key, "register", value, reply.t0, reply.t1, "taken", f"#{reply.id}")
            )
        return self.history.add(
            Op(client, key, "register", value, reply.t0, None, None, f"#{reply.id} {reply.error}")
        )

    def record_sync_reads(self, client: str, reply: Reply) -> list[Op]:
        """The reads of a ``sync_lookup`` (invoked when its ``sync()`` was)."""
        if not reply.ok:
            return []
        return [
            self.history.add(
                Op(client, key, "read", None, reply.t0, reply.t1, value, f"#{reply.id}")
            )
            for key, value in reply.result.items()
        ]

    def lease_evidence(self, watcher: DriverClient, registry: str = "r") -> list[Op]:
        """``expire``/``reput`` ops from what an always-connected watcher saw.

        An ``unregistered`` event of value ``v`` that no explicit unregister
        explains is a lease that ended: ``expire(v)`` happened before the
        watcher saw it. A later ``registered`` event of ``v`` is its writer
        putting it back: ``reput(v)`` happened before that was seen.
        """
        explicit = {op.key for op in self.history.ops if op.kind == "unregister"}
        registered_at: dict[tuple[str, Any], float] = {}
        for op in self.history.ops:
            if op.kind == "register":
                k = (op.key, json.dumps(op.arg))
                registered_at[k] = min(registered_at.get(k, math.inf), op.call)
        added = []
        expired: dict[tuple[str, Any], float] = {}
        for event in watcher.find("watch", registry=registry):
            reg = event.get("registration") or {}
            key = json.dumps([reg.get("ns"), reg.get("name")])
            value = reg.get("value")
            k = (key, json.dumps(value))
            lo = registered_at.get(k, 0.0)
            if event["kind"] == "unregistered" and key not in explicit:
                expired[k] = event["t"]
                added.append(
                    self.history.add(
                        Op("lease", key, "expire", value, lo, event["t"], None, "seen by watcher")
                    )
                )
            elif event["kind"] == "registered" and k in expired:
                added.append(
                    self.history.add(
                        Op("reput", key, "reput", value, lo, event["t"], None, "seen by watcher")
                    )
                )
                del expired[k]
        return added

    def holder_intervals(
        self, client: DriverClient, what: str = "lock", *, end: float | None = None
    ) -> list[Interval]:
        """Inside intervals of ``client``'s holders (``lock`` or ``term``).

        A holder with no exit event (its process was killed or the test ended)
        is inside until ``end`` (default: now).
        """
        entered_kind = "lock_entered" if what == "lock" else "elected"
        token_field = "token" if what == "lock" else "term"
        intervals = []
        for ev in client.find(entered_kind):
            exits = client.find(f"{what}_exited", tag=ev["tag"])
            exit_t = exits[0]["t"] if exits else (now() if end is None else end)
            note = exits[0]["how"] if exits else "no exit seen"
            intervals.append(
                Interval(f"{client.name}/{ev['tag']}", ev[token_field], ev["t"], exit_t, note)
            )
        return intervals

    def record_holds(
        self,
        client: DriverClient,
        key: str,
        what: str,
        replies: Iterable[Reply],
        *,
        killed_at: float | None = None,
    ) -> list[Op]:
        """``acquire``/``release`` ops of ``client``'s lock or campaign commands."""
        entered_kind = "lock_entered" if what == "lock" else "elected"
        token_field = "token" if what == "lock" else "term"
        added = []
        for reply in replies:
            tag = reply.fields["tag"]
            holder = f"{client.name}/{tag}"
            enters = client.find(entered_kind, tag=tag)
            if not enters:
                continue  # never got in: no effect any client saw
            enter = enters[0]
            added.append(
                self.history.add(
                    Op(
                        holder,
                        key,
                        "acquire",
                        holder,
                        enter["t0"],
                        enter["t"],
                        enter[token_field],
                        f"#{reply.id}",
                    )
                )
            )
            exits = client.find(f"{what}_exited", tag=tag)
            if exits and reply.t1 is not None:
                added.append(
                    self.history.add(
                        Op(
                            holder,
                            key,
                            "release",
                            holder,
                            exits[0]["t"],
                            reply.t1,
                            None,
                            f"#{reply.id} {exits[0]['how']} {reply.error or ''}",
                        )
                    )
                )
            else:
                start = exits[0]["t"] if exits else (killed_at if killed_at is not None else now())
                added.append(
                    self.history.add(
                        Op(holder, key, "release", holder, start, None, None, "no answer")
                    )
                )
        return added

    # -- teardown -------------------------------------------------------------------
    async def close(self) -> None:
        for client in self.drivers.values():
            await client.aclose()
        if os.environ.get("FOUNDATION_PARTITION_KEEP", "") not in ("", "0"):
            self.dump(Path(self.net.base_dir))

    def dump(self, directory: Path) -> None:
        """Write every driver's events and replies, and the history, as JSON lines."""
        for client in self.drivers.values():
            with open(directory / f"events-{client.name}.jsonl", "w") as out:
                for event in client.events:
                    out.write(json.dumps(event) + "\n")
                for reply in client.calls.values():
                    out.write(
                        json.dumps(
                            {
                                "command": reply.op,
                                "fields": reply.fields,
                                "sent": reply.sent,
                                "reply": reply.message,
                            }
                        )
                        + "\n"
                    )
        with open(directory / "history.jsonl", "w") as out:
            for op in self.history.ops:
                out.write(json.dumps(op.__dict__, default=repr) + "\n")

    def describe(self) -> str:
        parts = [self.net.describe()]
        if self.cluster is not None:
            parts.append(self.cluster.describe_logs(25))
        for client in self.drivers.values():
            parts.append(f"--- driver {client.name} log ---\n{client.proc.tail_log(40)}")
            events = "\n".join(json.dumps(e) for e in client.events[-25:])
            parts.append(f"--- driver {client.name}: last events ---\n{events}")
        return "\n".join(parts)


def intervals_text(intervals: Iterable[Interval]) -> str:
    return "\n".join(f"  {iv}" for iv in sorted(intervals, key=lambda iv: iv.enter))
