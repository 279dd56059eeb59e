"""Self-tests of the partition lab: cuts really cut, heals heal, nothing outlives a run.

Each fault the promise tests use is checked here for what it does to TCP:
with a host cut off (or a pair cut), established connections stall and new
ones time out (no "connection refused", no "no route to host": a partition
is silence), and both work again after healing. Pausing a process leaves
its connections open but unanswered. Teardown removes every namespace and
process, also when the test process is killed (the reaper) and for a dead
run's leftovers (the sweep).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
import trio
from _lab import Lab, now
from _netns import (
    PREFIX,
    Net,
    entered,
    list_namespaces,
    netem_unavailable,
    sweep_stale,
)

pytestmark = [pytest.mark.partition, pytest.mark.netns]

ECHO_PORT = 7777
ECHO = r"""
import socket, sys, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(16)
print("listening", flush=True)
def serve(conn):
    with conn:
        while True:
            data = conn.recv(4096)
            if not data:
                return
            conn.sendall(data)
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

#: How long a probe waits for an answer before calling it a timeout.
PROBE = 1.5


def _connect(ns: str, ip: str, timeout: float) -> socket.socket:
    with entered(ns):
        sock = socket.socket()
    sock.settimeout(timeout)
    try:
        sock.connect((ip, ECHO_PORT))
    except BaseException:
        sock.close()
        raise
    return sock


def connect_outcome(ns: str, ip: str, timeout: float = PROBE) -> tuple[str, float]:
    """("ok" | "timeout" | the error's name, seconds it took) of a new connection + echo."""
    t = time.monotonic()
    try:
        sock = _connect(ns, ip, timeout)
    except TimeoutError:
        return "timeout", time.monotonic() - t
    except OSError as exc:
        return type(exc).__name__ + f"({exc.errno})", time.monotonic() - t
    with sock:
        return echo_outcome(sock, timeout)[0], time.monotonic() - t


def echo_outcome(sock: socket.socket, timeout: float = PROBE) -> tuple[str, float]:
    """Send one byte on an established connection; ("ok" | "timeout" | error, seconds)."""
    t = time.monotonic()
    sock.settimeout(timeout)
    try:
        sock.sendall(b"x")
        data = b""
        while not data:
            data = sock.recv(16)
    except TimeoutError:
        return "timeout", time.monotonic() - t
    except OSError as exc:
        return type(exc).__name__, time.monotonic() - t
    return ("ok" if data.startswith(b"x") else f"got {data!r}"), time.monotonic() - t


def drain_until_ok(sock: socket.socket, deadline: float) -> str:
    """After a heal, retransmissions arrive: read until an echo comes through."""
    while time.monotonic() < deadline:
        outcome, _ = echo_outcome(sock, 1.0)
        if outcome == "ok":
            return "ok"
    return "timeout"


def start_echo(net: Net, host: str):
    h = net.hosts[host]
    proc = net.spawn(
        h,
        [sys.executable, "-u", "-c", ECHO, h.ip, str(ECHO_PORT)],
        name=f"echo-{host}",
        stdout=subprocess.PIPE,
    )
    assert proc.popen.stdout is not None
    assert proc.popen.stdout.readline().strip() == b"listening", proc.tail_log()
    return proc


async def test_cut_and_heal_a_host(net: Net) -> None:
    with trio.fail_after(60):
        for name in ("a", "b", "c"):
            net.add_host(name)
        start_echo(net, "b")
        a, b, c = (net.hosts[n] for n in "abc")
        run = trio.to_thread.run_sync
        assert (await run(connect_outcome, a.ns, b.ip))[0] == "ok"
        established = await run(_connect, a.ns, b.ip, PROBE)
        with established:
            assert (await run(echo_outcome, established))[0] == "ok"

            net.cut(b)
            outcome, took = await run(echo_outcome, established)
            assert outcome == "timeout", outcome
            outcome, took = await run(connect_outcome, a.ns, b.ip)
            assert outcome == "timeout", outcome
            assert took >= PROBE * 0.9, took
            # Hosts that were not cut still talk to each other: c -> a is fine.
            start_echo(net, "a")
            assert (await run(connect_outcome, c.ns, a.ip))[0] == "ok"

            net.heal(b)
            assert await run(drain_until_ok, established, time.monotonic() + 15) == "ok"
            assert (await run(connect_outcome, a.ns, b.ip))[0] == "ok"


async def test_cut_and_heal_a_pair(net: Net) -> None:
    with trio.fail_after(60):
        for name in ("a", "b", "c"):
            net.add_host(name)
        start_echo(net, "b")
        start_echo(net, "a")
        a, b, c = (net.hosts[n] for n in "abc")
        run = trio.to_thread.run_sync
        established = await run(_connect, a.ns, b.ip, PROBE)
        with established:
            assert (await run(echo_outcome, established))[0] == "ok"
            net.cut_pair(a, b)
            # a and b cannot reach each other, in either direction...
            assert (await run(echo_outcome, established))[0] == "timeout"
            outcome, took = await run(connect_outcome, a.ns, b.ip)
            assert outcome == "timeout", outcome
            assert took >= PROBE * 0.9, took
            assert (await run(connect_outcome, b.ns, a.ip))[0] == "timeout"
            # ... while both still reach c, and c reaches both.
            start_echo(net, "c")
            assert (await run(connect_outcome, a.ns, c.ip))[0] == "ok"
            assert (await run(connect_outcome, b.ns, c.ip))[0] == "ok"
            assert (await run(connect_outcome, c.ns, a.ip))[0] == "ok"
            assert (await run(connect_outcome, c.ns, b.ip))[0] == "ok"

            net.heal_pair(a, b)
            assert await run(drain_until_ok, established, time.monotonic() + 15) == "ok"
            assert (await run(connect_outcome, a.ns, b.ip))[0] == "ok"
            assert (await run(connect_outcome, b.ns, a.ip))[0] == "ok"


async def test_pause_resume_and_kill_a_process(net: Net) -> None:
    with trio.fail_after(60):
        a = net.add_host("a")
        b = net.add_host("b")
        echo = start_echo(net, "b")
        run = trio.to_thread.run_sync
        established = await run(_connect, a.ns, b.ip, PROBE)
        with established:
            echo.pause()
            # A stalled peer: the connection stays open, nothing answers.
            assert (await run(echo_outcome, established))[0] == "timeout"
            echo.resume()
            assert await run(drain_until_ok, established, time.monotonic() + 10) == "ok"
            echo.kill()
            assert not echo.running
            outcome, _took = await run(connect_outcome, a.ns, b.ip)
            assert outcome.startswith("ConnectionRefusedError"), outcome


@pytest.mark.skipif(
    netem_unavailable() is not None,
    reason=netem_unavailable() or "",
)
async def test_delay_needs_netem(net: Net) -> None:
    with trio.fail_after(60):
        a = net.add_host("a")
        b = net.add_host("b")
        start_echo(net, "b")
        run = trio.to_thread.run_sync
        established = await run(_connect, a.ns, b.ip, PROBE)
        with established:
            _, fast = await run(echo_outcome, established)
            net.delay(b, 200)
            outcome, slow = await run(echo_outcome, established, 5.0)
            assert outcome == "ok", outcome
            assert slow >= 0.38 > fast, (fast, slow)
            net.undelay(b)


def test_close_removes_namespaces_and_processes(netns_session: None) -> None:
    lab_net = Net()
    lab_net.add_host("a")
    lab_net.add_host("b")
    sleeper = lab_net.spawn("a", ["sleep", "300"], name="sleeper")
    sleeper.pause()  # a stopped process must die too
    assert len(list_namespaces(lab_net.tag + "-")) == 3
    assert lab_net.close() == []
    assert list_namespaces(lab_net.tag + "-") == []
    assert not sleeper.running
    assert not os.path.exists(lab_net.base_dir)
    assert lab_net.close() == []  # idempotent


_KILLED_RUN = r"""
import sys, time
sys.path.insert(0, sys.argv[1])
from _netns import Net, Reaper
reaper = Reaper()
net = Net()
net.add_host("a")
p = net.spawn("a", ["sleep", "300"], name="sleeper")
print(net.tag, p.pid, net.base_dir, flush=True)
time.sleep(300)
"""


def test_a_killed_run_is_cleaned_up_by_its_reaper(netns_session: None) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, here], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        tag, pid, base_dir = proc.stdout.readline().split()
        assert list_namespaces(tag + "-")
        assert os.path.isdir(base_dir)
        proc.kill()  # no finaliser, no atexit: only the reaper (and pdeathsig) remain
        proc.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            list_namespaces(tag + "-") or os.path.isdir(base_dir) or _alive(int(pid))
        ):
            time.sleep(0.1)
        assert list_namespaces(tag + "-") == []
        assert not os.path.isdir(base_dir)
        assert not _alive(int(pid))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_sweep_removes_leftovers_of_dead_runs(netns_session: None) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    name = f"{PREFIX}{dead_pid}-0-x"
    subprocess.run(["ip", "netns", "add", name], check=True)
    live = f"{PREFIX}{os.getpid()}-999-live"
    subprocess.run(["ip", "netns", "add", live], check=True)
    try:
        removed = sweep_stale()
        assert name in removed
        assert name not in list_namespaces()
        assert live in list_namespaces()  # a live run's namespaces stay
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "netns", "del", live], capture_output=True)


async def test_members_and_drivers_on_hosts_share_one_clock(lab: Lab) -> None:
    with trio.fail_after(60):
        cluster = await lab.start_cluster()
        (a,) = await lab.start_drivers("a")
        await lab.open_registry(a)
        sent = now()
        reply = await a.ok("register", ns="lab", name="smoke", value="v1")
        received = now()
        # The driver's clock is the test's: its times fall inside ours.
        assert sent <= reply.t0 <= reply.t1 <= received
        entries = await lab.registry_entries()
        assert entries[json.dumps(["lab", "smoke"])]["value"] == "v1"
        assert entries[json.dumps(["lab", "smoke"])]["lease"] != 0
        assert await cluster.leader_index() is not None
        # The lab's addresses exist only inside its namespaces, and no host
        # has a route out of the lab.
        own = subprocess.run(
            ["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True
        ).stdout
        assert lab.net.subnet + "." not in own
        for host in lab.net.hosts.values():
            out = subprocess.run(
                ["ip", "-n", host.ns, "route", "get", "192.0.2.1"], capture_output=True, text=True
            )
            assert out.returncode != 0, out
            assert "unreachable" in out.stderr.lower(), out
        lab.notes.append(f"register round trip {reply.t1 - reply.t0:.4f} s")
