"""Test hosts in network namespaces: links that can be cut, processes that can be paused.

The partition tests need what a real network does to a distributed system:
a host that drops off the switch, two hosts that cannot reach each other
while both reach the rest, a process that stops answering. This module builds
that from Linux network namespaces with iproute2 (root only) and no other
tool; it has no pytest dependency, so it also works from a REPL.

Topology, and why:

* **Hosts** are network namespaces named ``fdnp-<pid>-<seq>-<host>`` (the pid
  of the test process that made them, so a later run can tell leftovers of a
  dead run from a live one, and sweep them). Each host has one interface,
  ``eth0``, one address ``10.231.X.N/24`` and no default route: nothing it
  sends can leave the lab. ``X`` is chosen so that no interface of the
  machine's own namespace uses the range.
* **The switch** is a bridge ``br0`` in a namespace of its own
  (``fdnp-<pid>-<seq>-sw``); each host's ``eth0`` is one end of a veth pair
  whose other end, ``p-<host>``, is a port of the bridge. No address exists
  outside the host namespaces.
* **Cutting a host** sets its switch port down (``ip link set p-<host> down``
  in the switch): the host loses carrier and every packet to or from it is
  dropped. **Healing** sets it up again (the bridge runs no STP, so the port
  forwards at once).
* **Cutting a pair** of hosts (both still reach everyone else): this kernel has
  no bridge VLAN filtering, no tc classifiers or actions, no dummy device and
  no ``sch_netem``, so the cut is made in the two hosts: each gets a /32 route
  to the other through ``sink0``, a veth whose peer is down, where packets
  are dropped without an error. Route changes invalidate the routes cached by
  open sockets, so established connections are cut too.
* **Static neighbour entries** (``nud permanent``) for every host on every
  host: without them a cut shows up, after ARP gives up, as an immediate
  "no route to host" on connect, which no real partition produces. With them
  both established and new connections simply time out, as across a broken
  switch.
* **Delay** (``tc qdisc ... netem``) only where the kernel has ``sch_netem``
  (:func:`netem_available`); the tests skip their delay variants otherwise.

Processes run on a host with ``ip netns exec NS ...``, which ``exec``\\ s the
command, so the pid we hold is the program itself (SIGSTOP/SIGCONT/SIGKILL
reach it). Those started from the main thread die with the test process
(``PR_SET_PDEATHSIG``). The test process itself can open sockets on a host
with :meth:`Net.run_in` (``setns`` on the calling thread, restored after).

Clean-up, even when the test process is killed: :meth:`Net.close` kills every
process it started, then deletes the namespaces (which deletes their links);
:func:`sweep_stale` removes what dead runs left (called at session start); and
:class:`Reaper` is a small process that waits for the test process to end and
then removes anything with its prefix that is still there.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "PREFIX",
    "Host",
    "Net",
    "NetError",
    "Reaper",
    "ip_binary",
    "netem_available",
    "netem_unavailable",
    "netns_unavailable",
    "sweep_stale",
]

#: Every namespace, switch port and directory of these tests starts with this.
PREFIX = "fdnp-"
#: ``10.231.X.0/24``: the lab's addresses; X is picked free of the machine's own.
SUBNET_BASE = "10.231"
#: Seconds any one ``ip`` command may take.
IP_TIMEOUT = 20.0

_CLONE_NEWNET = 0x40000000
_T = TypeVar("_T")


class NetError(RuntimeError):
    """An ``ip`` command failed or the lab is in a state it cannot work from."""


# --------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------


@functools.cache
def ip_binary() -> str | None:
    """Path of iproute2's ``ip`` (``PATH``, then ``/usr/sbin``, ``/sbin``), or None."""
    found = shutil.which("ip")
    if found:
        return found
    for candidate in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _run(argv: Sequence[str], *, input: str | None = None, check: bool = True) -> str:
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=IP_TIMEOUT,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetError(f"{' '.join(argv)}: {exc}") from exc
    if check and proc.returncode != 0:
        raise NetError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def _ip(*args: str, check: bool = True, input: str | None = None) -> str:
    ip = ip_binary()
    if ip is None:
        raise NetError("iproute2's ip is not installed")
    return _run([ip, *args], check=check, input=input)


@functools.cache
def netns_unavailable() -> str | None:
    """Why namespaces cannot be made here (not root, no ``ip``, refused), or None."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    if ip_binary() is None:
        return "iproute2's 'ip' is not installed"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        _ip("netns", "add", probe)
    except NetError as exc:
        return f"'ip netns add' failed: {exc}"
    try:
        _ip("-n", probe, "link", "add", "vprobe0", "type", "veth", "peer", "name", "vprobe1")
        _ip("-n", probe, "link", "add", "br0", "type", "bridge")
    except NetError as exc:
        return f"veth pairs or bridges cannot be made: {exc}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


@functools.cache
def netem_unavailable() -> str | None:
    """Why ``tc qdisc ... netem`` cannot be used here, or None if it can."""
    reason = netns_unavailable()
    if reason is not None:
        return f"cannot probe sch_netem: {reason}"
    tc = shutil.which("tc") or ("/usr/sbin/tc" if os.access("/usr/sbin/tc", os.X_OK) else None)
    if tc is None:
        return "iproute2's tc is not installed"
    probe = f"{PREFIX}{os.getpid()}-netem"
    try:
        _ip("netns", "add", probe)
        _ip("-n", probe, "link", "add", "vprobe0", "type", "veth", "peer", "name", "vprobe1")
        _run([tc, "-n", probe, "qdisc", "add", "dev", "vprobe0", "root", "netem", "delay", "1ms"])
    except NetError as exc:
        return f"this kernel has no sch_netem: tc qdisc ... netem failed ({exc})"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def netem_available() -> bool:
    """True if ``tc qdisc ... netem`` works (the kernel has ``sch_netem``)."""
    return netem_unavailable() is None


# --------------------------------------------------------------------------
# Leftovers of dead runs
# --------------------------------------------------------------------------

_NAME = re.compile(rf"^{re.escape(PREFIX)}(\d+)-")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_namespaces(prefix: str = PREFIX) -> list[str]:
    """Names of the namespaces starting with ``prefix``."""
    out = _ip("netns", "list", check=False)
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [name for name in names if name.startswith(prefix)]


def _kill_namespace(name: str) -> None:
    """SIGKILL every process in namespace ``name`` and delete it."""
    pids = _ip("netns", "pids", name, check=False).split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGCONT)
            os.kill(int(pid), signal.SIGKILL)
    _ip("netns", "del", name, check=False)


def _tmp_root() -> str:
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return tempfile.gettempdir()


def sweep_stale() -> list[str]:
    """Remove namespaces and directories of runs whose test process is gone.

    Returns the names removed. A name carries its creator's pid; a live pid's
    namespaces are left alone (a concurrent run).
    """
    removed = []
    for name in list_namespaces():
        match = _NAME.match(name)
        if match is None or _pid_alive(int(match.group(1))):
            continue
        _kill_namespace(name)
        removed.append(name)
    for path in Path(_tmp_root()).glob(f"{PREFIX}*"):
        match = _NAME.match(path.name)
        if match is not None and not _pid_alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
    return removed


# The reaper's program: wait for EOF on stdin (the test process ended, however it
# ended), then kill and delete whatever still carries the prefix.
_REAPER = r"""
import os, shutil, signal, subprocess, sys, glob
ip, prefix, root = sys.argv[1:4]
sys.stdin.buffer.read()
out = subprocess.run([ip, "netns", "list"], capture_output=True, text=True).stdout
names = [l.split()[0] for l in out.splitlines() if l.strip()]
for name in names:
    if not name.startswith(prefix):
        continue
    for pid in subprocess.run([ip, "netns", "pids", name], capture_output=True,
                              text=True).stdout.split():
        try:
            os.kill(int(pid), signal.SIGCONT)
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    subprocess.run([ip, "netns", "del", name], capture_output=True)
for path in glob.glob(os.path.join(root, prefix + "*")):
    shutil.rmtree(path, ignore_errors=True)
"""


class Reaper:
    """A watchdog process that cleans up after this process, even after SIGKILL.

    It holds the read end of a pipe whose write end only this process has;
    when this process ends the pipe closes and the reaper removes every
    namespace and directory whose name starts with ``fdnp-<our pid>-``, then
    exits. :meth:`close` (normal end) closes the pipe: the reaper finds
    nothing left and exits at once.
    """

    def __init__(self) -> None:
        ip = ip_binary()
        if ip is None:
            raise NetError("iproute2's ip is not installed")
        self.prefix = f"{PREFIX}{os.getpid()}-"
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _REAPER, ip, self.prefix, _tmp_root()],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of the terminal does not reach it
        )

    def close(self, timeout: float = 30.0) -> None:
        """Let the reaper run now (everything should already be gone) and wait for it."""
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


# --------------------------------------------------------------------------
# Entering a namespace from this process
# --------------------------------------------------------------------------


def _setns(fd: int) -> None:
    setns = getattr(os, "setns", None)  # Python >= 3.12
    if setns is not None:
        setns(fd, _CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """Run the block with the calling *thread* in network namespace ``ns``.

    Sockets made inside stay in ``ns`` for their whole life, whichever thread
    uses them later. The thread's own namespace is restored on exit.
    """
    with (
        open("/proc/thread-self/ns/net", "rb") as own,
        open(f"/var/run/netns/{ns}", "rb") as target,
    ):
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(own.fileno())


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
_prctl: Any = None
if sys.platform.startswith("linux"):
    try:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        _prctl = None


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def _preexec() -> Callable[[], None] | None:
    # PR_SET_PDEATHSIG fires when the *thread* that forked dies: only safe from
    # the main thread (trio.to_thread workers exit when idle).
    if _prctl is not None and threading.current_thread() is threading.main_thread():
        return _die_with_parent
    return None


@dataclass
class Proc:
    """A process started on a host; ``popen`` is the program itself (``ip netns exec`` execs)."""

    name: str
    host: Host
    popen: subprocess.Popen[bytes]
    log_path: str | None = None
    paused: bool = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    def pause(self) -> float:
        """SIGSTOP; returns the time (``time.monotonic()``) it was sent."""
        os.kill(self.pid, signal.SIGSTOP)
        self.paused = True
        return time.monotonic()

    def resume(self) -> float:
        """SIGCONT; returns the time it was sent."""
        if self.running:
            os.kill(self.pid, signal.SIGCONT)
        self.paused = False
        return time.monotonic()

    def kill(self) -> float:
        """SIGKILL (resuming first, so a stopped process dies too) and reap; returns the time."""
        t = time.monotonic()
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGCONT)
                os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        self.paused = False
        return t

    def close_pipes(self) -> None:
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()

    def tail_log(self, n: int = 60) -> str:
        if self.log_path is None:
            return "<no log>"
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 64 * 1024))
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return "<no log file>"
        return "\n".join(text.splitlines()[-n:])


# --------------------------------------------------------------------------
# The lab network
# --------------------------------------------------------------------------


@dataclass(eq=False)
class Host:
    """A test host: a namespace with one address on the lab switch."""

    name: str
    ns: str
    ip: str
    mac: str
    index: int

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.ip}>"


def _free_subnet() -> str:
    """``10.231.X`` with no address of this (the root) namespace inside ``10.231.X.0/24``."""
    used = _ip("-4", "-o", "addr", "show", check=False) + _ip("-4", "route", "show", check=False)
    for x in range(0, 256):
        base = f"{SUBNET_BASE}.{x}."
        if base not in used:
            return f"{SUBNET_BASE}.{x}"
    raise NetError(f"every {SUBNET_BASE}.X.0/24 is in use on this machine")


_seq = itertools.count()


@dataclass(eq=False)
class Net:
    """A switch and hosts; cut and heal links; start processes on hosts.

    Use as a context manager, or call :meth:`close` (idempotent, never
    raises; it returns what it could not remove).
    """

    tag: str = field(default_factory=lambda: f"{PREFIX}{os.getpid()}-{next(_seq)}")
    hosts: dict[str, Host] = field(default_factory=dict, init=False)
    procs: list[Proc] = field(default_factory=list, init=False)
    cut_hosts: set[str] = field(default_factory=set, init=False)
    cut_pairs: set[frozenset[str]] = field(default_factory=set, init=False)
    delayed: set[str] = field(default_factory=set, init=False)
    base_dir: str = field(default="", init=False)
    subnet: str = field(default="", init=False)
    _closed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        reason = netns_unavailable()
        if reason is not None:
            raise NetError(reason)
        self.switch = f"{self.tag}-sw"
        self.base_dir = tempfile.mkdtemp(prefix=f"{self.tag}-", dir=_tmp_root())
        self.subnet = _free_subnet()
        try:
            _ip("netns", "add", self.switch)
            _ip("-n", self.switch, "link", "set", "lo", "up")
            _ip(
                "-n",
                self.switch,
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
            )
            _ip("-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Net:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- hosts -------------------------------------------------------------------
    def add_host(self, name: str) -> Host:
        """A new host ``name`` on the switch, with static neighbours to and from every host."""
        if self._closed:
            raise NetError("the lab is closed")
        if name in self.hosts or not re.fullmatch(r"[a-z][a-z0-9]{0,9}", name):
            raise ValueError(f"bad or duplicate host name {name!r} (a-z0-9, at most 10)")
        index = len(self.hosts) + 10
        host = Host(
            name=name,
            ns=f"{self.tag}-{name}",
            ip=f"{self.subnet}.{index}",
            mac=f"02:fd:00:00:{index // 256:02x}:{index % 256:02x}",
            index=index,
        )
        port = f"p-{name}"
        _ip("netns", "add", host.ns)
        self.hosts[name] = host
        _ip(
            "link",
            "add",
            "eth0",
            "netns",
            host.ns,
            "address",
            host.mac,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            self.switch,
        )
        _ip("-n", self.switch, "link", "set", port, "master", "br0")
        _ip("-n", self.switch, "link", "set", port, "up")
        lines = [
            "link set lo up",
            f"addr add {host.ip}/24 dev eth0",
            "link set eth0 up",
            # The dead end of pair cuts: sink0's peer stays down, so what is
            # routed into sink0 is dropped without an error to the sender.
            "link add sink0 type veth peer name sink1",
            "link set sink0 up",
        ]
        lines += [
            f"neigh replace {other.ip} lladdr {other.mac} dev eth0 nud permanent"
            for other in self.hosts.values()
            if other is not host
        ]
        self._batch(host.ns, lines)
        for other in self.hosts.values():
            if other is not host:
                _ip(
                    "-n",
                    other.ns,
                    "neigh",
                    "replace",
                    host.ip,
                    "lladdr",
                    host.mac,
                    "dev",
                    "eth0",
                    "nud",
                    "permanent",
                )
        return host

    def _batch(self, ns: str, lines: Iterable[str]) -> None:
        _ip("-n", ns, "-batch", "-", input="\n".join(lines) + "\n")

    def _host(self, host: Host | str) -> Host:
        return self.hosts[host] if isinstance(host, str) else host

    # -- faults ---------------------------------------------------------------------
    def cut(self, host: Host | str) -> float:
        """Take ``host`` off the switch; returns the time (monotonic) the cut was in place."""
        h = self._host(host)
        _ip("-n", self.switch, "link", "set", f"p-{h.name}", "down")
        self.cut_hosts.add(h.name)
        return time.monotonic()

    def heal(self, host: Host | str) -> float:
        """Put ``host`` back on the switch; returns the time the link was up again."""
        h = self._host(host)
        _ip("-n", self.switch, "link", "set", f"p-{h.name}", "up")
        self.cut_hosts.discard(h.name)
        return time.monotonic()

    def cut_pair(self, a: Host | str, b: Host | str) -> float:
        """``a`` and ``b`` can no longer reach each other (both still reach the others)."""
        ha, hb = self._host(a), self._host(b)
        for src, dst in ((ha, hb), (hb, ha)):
            self._batch(
                src.ns,
                [
                    f"neigh replace {dst.ip} lladdr {dst.mac} dev sink0 nud permanent",
                    f"route replace {dst.ip}/32 dev sink0",
                ],
            )
        self.cut_pairs.add(frozenset((ha.name, hb.name)))
        return time.monotonic()

    def heal_pair(self, a: Host | str, b: Host | str) -> float:
        ha, hb = self._host(a), self._host(b)
        for src, dst in ((ha, hb), (hb, ha)):
            _ip("-n", src.ns, "route", "del", f"{dst.ip}/32", "dev", "sink0", check=False)
        self.cut_pairs.discard(frozenset((ha.name, hb.name)))
        return time.monotonic()

    def partition(self, side: Iterable[Host | str], other: Iterable[Host | str]) -> float:
        """Cut every pair across ``side`` and ``other``; returns when all cuts are in place."""
        others = [self._host(h) for h in other]
        t = time.monotonic()
        for a in side:
            for b in others:
                t = self.cut_pair(a, b)
        return t

    def heal_all(self) -> float:
        """Heal every cut host and pair, and remove delays."""
        for name in list(self.cut_hosts):
            self.heal(name)
        for pair in list(self.cut_pairs):
            a, b = sorted(pair)
            self.heal_pair(a, b)
        for name in list(self.delayed):
            self.undelay(name)
        return time.monotonic()

    def delay(self, host: Host | str, ms: int) -> float:
        """Delay every packet to and from ``host`` by ``ms`` (needs ``sch_netem``)."""
        if not netem_available():
            raise NetError("this kernel has no sch_netem: tc qdisc ... netem is unavailable")
        h = self._host(host)
        tc = shutil.which("tc") or "/usr/sbin/tc"
        _run(
            [
                tc,
                "-n",
                self.switch,
                "qdisc",
                "replace",
                "dev",
                f"p-{h.name}",
                "root",
                "netem",
                "delay",
                f"{ms}ms",
            ]
        )
        _run(
            [tc, "-n", h.ns, "qdisc", "replace", "dev", "eth0", "root", "netem", "delay", f"{ms}ms"]
        )
        self.delayed.add(h.name)
        return time.monotonic()

    def undelay(self, host: Host | str) -> float:
        h = self._host(host)
        tc = shutil.which("tc") or "/usr/sbin/tc"
        _run([tc, "-n", self.switch, "qdisc", "del", "dev", f"p-{h.name}", "root"], check=False)
        _run([tc, "-n", h.ns, "qdisc", "del", "dev", "eth0", "root"], check=False)
        self.delayed.discard(h.name)
        return time.monotonic()

    # -- processes -------------------------------------------------------------------
    def spawn(
        self,
        host: Host | str,
        argv: Sequence[str],
        *,
        name: str,
        stdin: int | None = subprocess.DEVNULL,
        stdout: int | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
    ) -> Proc:
        """Start ``argv`` on ``host``; stderr (and stdout unless given) go to ``<name>.log``."""
        if self._closed:
            raise NetError("the lab is closed")
        h = self._host(host)
        ip = ip_binary()
        assert ip is not None
        log_path = os.path.join(self.base_dir, f"{name}.log")
        with open(log_path, "ab") as log:
            log.write(f"=== {time.monotonic():.3f} on {h.name}: {' '.join(argv)}\n".encode())
            log.flush()
            popen = subprocess.Popen(
                [ip, "netns", "exec", h.ns, *argv],
                stdin=stdin,
                stdout=log if stdout is None else stdout,
                stderr=log,
                env=dict(env) if env is not None else None,
                cwd=cwd or self.base_dir,
                start_new_session=True,  # a terminal's Ctrl-C reaches pytest only
                preexec_fn=_preexec(),
            )
        proc = Proc(name=name, host=h, popen=popen, log_path=log_path)
        self.procs.append(proc)
        return proc

    def run_in(self, host: Host | str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """Call ``fn`` with this thread inside ``host``'s namespace (blocking; restored after).

        In a Trio test run it in a worker thread:
        ``await trio.to_thread.run_sync(net.run_in, host, fn, ...)``.
        """
        with entered(self._host(host).ns):
            return fn(*args, **kwargs)

    # -- teardown -----------------------------------------------------------------
    def close(self) -> list[str]:
        """Kill every process, delete every namespace and the directory; idempotent.

        Returns what could not be removed (empty when everything is gone).
        """
        if self._closed:
            return []
        self._closed = True
        for proc in self.procs:
            proc.kill()
            proc.close_pipes()
        problems = [
            f"process {p.name} (pid {p.pid}) still running" for p in self.procs if p.running
        ]
        for host in self.hosts.values():
            _kill_namespace(host.ns)
        _kill_namespace(self.switch)
        left = list_namespaces(self.tag + "-")
        problems += [f"namespace {name} still exists" for name in left]
        if os.environ.get("FOUNDATION_PARTITION_KEEP", "") not in ("", "0"):
            print(f"partition lab files kept in {self.base_dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        return problems

    def describe(self) -> str:
        """One line on the state of every link, for failure messages."""
        return (
            f"hosts {', '.join(f'{h.name}={h.ip}' for h in self.hosts.values())};"
            f" cut hosts {sorted(self.cut_hosts)}; cut pairs {sorted(map(sorted, self.cut_pairs))}"
        )
