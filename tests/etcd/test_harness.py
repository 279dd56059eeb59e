"""Tests of the etcd test harness itself (``_etcd_harness`` / ``_etcd_fixtures``).

They talk to the members with synchronous urllib through etcd's JSON gateway
and with the real ``etcdctl``, never with the project's own client: these tests
establish that the environment works before the client is tested against it.
"""

from __future__ import annotations

import http.client
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from _etcd_fixtures import EtcdAuthSetup, EtcdTlsSetup
from _etcd_harness import (
    EtcdBinaries,
    EtcdCluster,
    EtcdMember,
    b64,
    etcdctl,
    find_all_etcds,
    find_etcd,
    http_get_json,
    read_line,
    stop_process,
    unb64,
    v3_call,
)

pytestmark = pytest.mark.etcd


def _put(url: str, key: str, value: str, **kwargs: Any) -> tuple[int, Any]:
    return v3_call(url, "kv/put", {"key": b64(key), "value": b64(value)}, **kwargs)


def _get(url: str, key: str, **kwargs: Any) -> list[tuple[bytes, bytes]]:
    status, body = v3_call(url, "kv/range", {"key": b64(key), **kwargs})
    assert status == 200, body
    assert isinstance(body, dict)
    return [(unb64(kv["key"]), unb64(kv["value"])) for kv in body.get("kvs", [])]


def test_find_etcd_reports_a_version(etcd_binaries: EtcdBinaries) -> None:
    assert etcd_binaries.version_tuple >= (3, 4)
    assert find_etcd(prefer=etcd_binaries.version) == etcd_binaries
    assert etcd_binaries.version in {b.version for b in find_all_etcds()}


def test_member_health_and_kv_round_trip(etcd_member: EtcdMember, etcd_prefix: str) -> None:
    status, health = http_get_json(f"{etcd_member.client_url}/health")
    assert status == 200
    assert health["health"] == "true"

    key = f"{etcd_prefix}greeting"
    status, body = _put(etcd_member.client_url, key, "hello")
    assert status == 200, body
    assert _get(etcd_member.client_url, key) == [(key.encode(), b"hello")]
    assert _get(etcd_member.client_url, f"{etcd_prefix}missing") == []


def test_endpoints_fixture(etcd_endpoints: list[str], etcd_member: EtcdMember) -> None:
    assert etcd_endpoints == [etcd_member.client_url]
    assert etcd_member.client_url.startswith("http://127.0.0.1:")
    assert etcd_member.is_running


def test_etcdctl_put_get(
    etcd_binaries: EtcdBinaries, etcd_endpoints: list[str], etcd_prefix: str
) -> None:
    key = f"{etcd_prefix}ctl"
    out = etcdctl(etcd_binaries, etcd_endpoints, "put", key, "from-etcdctl")
    assert out.stdout.strip() == "OK"
    got = etcdctl(etcd_binaries, etcd_endpoints, "get", key, "--print-value-only")
    assert got.stdout.strip() == "from-etcdctl"


def test_etcdctl_lock_subprocesses(
    etcd_binaries: EtcdBinaries,
    etcd_endpoints: list[str],
    etcd_prefix: str,
    spawn_etcdctl: Callable[..., subprocess.Popen[str]],
) -> None:
    """Two ``etcdctl lock`` holders: the second gets the lock only when the first exits."""
    spawn = spawn_etcdctl
    first = spawn(etcd_endpoints, "lock", f"{etcd_prefix}lock")
    line = read_line(first, timeout=15)
    assert line is not None
    assert line.startswith(f"{etcd_prefix}lock/"), line
    second = spawn(etcd_endpoints, "lock", f"{etcd_prefix}lock")
    assert read_line(second, timeout=1.0) is None  # blocked behind the first
    stop_process(first)
    line = read_line(second, timeout=15)
    assert line is not None
    assert line.startswith(f"{etcd_prefix}lock/"), line


@pytest.mark.etcd_cluster
def test_cluster_survives_a_crash_and_the_member_rejoins(
    etcd_cluster: EtcdCluster, etcd_prefix: str
) -> None:
    assert len(etcd_cluster.endpoints) == 3
    leader = etcd_cluster.wait_for_leader()
    ids = {m.member_id for m in etcd_cluster.members}
    assert len(ids) == 3
    assert None not in ids

    # Crash the leader: the hardest single failure (an election must happen).
    etcd_cluster.kill(leader)
    assert not etcd_cluster.members[leader].is_running
    survivor = etcd_cluster.members[(leader + 1) % 3]
    key = f"{etcd_prefix}after-crash"
    deadline = time.monotonic() + 20
    while True:
        try:
            status, body = _put(survivor.client_url, key, "still-here")
        except OSError as exc:  # a request caught mid-election may be cut off
            status, body = 0, exc
        if status == 200:
            break
        assert time.monotonic() < deadline, f"put kept failing: {status} {body}"
        time.sleep(0.2)
    new_leader = etcd_cluster.wait_for_leader()
    assert new_leader != leader

    etcd_cluster.restart(leader)
    rejoined = etcd_cluster.members[leader]
    assert rejoined.is_running
    # A serializable read answers from the member's own copy: the write it
    # missed while down must have been replicated to it after rejoining.
    deadline = time.monotonic() + 20
    while _get(rejoined.client_url, key, serializable=True) != [(key.encode(), b"still-here")]:
        assert time.monotonic() < deadline, "restarted member did not catch up"
        time.sleep(0.2)
    assert etcd_cluster.leader_index() is not None


@pytest.mark.etcd_cluster
def test_cluster_recovers_from_a_full_outage(etcd_cluster: EtcdCluster, etcd_prefix: str) -> None:
    key = f"{etcd_prefix}durable"
    status, body = _put(etcd_cluster.endpoints[0], key, "kept")
    assert status == 200, body
    etcd_cluster.stop()
    assert etcd_cluster.live_endpoints == []
    for i in range(3):  # the first restart has no quorum: it only waits for the port
        etcd_cluster.restart(i)
    assert etcd_cluster.wait_for_leader() in (0, 1, 2)
    for url in etcd_cluster.endpoints:
        assert _get(url, key) == [(key.encode(), b"kept")]


def _token(setup: EtcdAuthSetup, user: str) -> str:
    name, password = setup.credentials(user)
    status, body = v3_call(
        setup.endpoints[0], "auth/authenticate", {"name": name, "password": password}
    )
    assert status == 200, body
    token: str = body["token"]
    return token


def test_auth_member_enforces_users_and_prefixes(
    etcd_auth: EtcdAuthSetup, etcd_binaries: EtcdBinaries
) -> None:
    url = etcd_auth.endpoints[0]
    status, body = _put(url, "alice/x", "anonymous")
    assert status >= 400, body
    assert "error" in body or "message" in body

    alice = _token(etcd_auth, "alice")
    status, body = _put(url, "alice/x", "hers", token=alice)
    assert status == 200, body
    status, body = _put(url, "bob/x", "not-hers", token=alice)
    assert status >= 400, body
    assert "permission denied" in str(body)

    bob = etcd_auth.credentials("bob")
    etcdctl(etcd_binaries, etcd_auth.endpoints, "put", "bob/x", "his", user=bob)
    denied = etcdctl(etcd_binaries, etcd_auth.endpoints, "get", "alice/x", user=bob, check=False)
    assert denied.returncode != 0
    assert "permission denied" in denied.stderr


def test_tls_member_requires_a_client_certificate(
    etcd_tls: EtcdTlsSetup, etcd_binaries: EtcdBinaries, etcd_prefix: str
) -> None:
    url = etcd_tls.endpoints[0]
    assert url.startswith("https://127.0.0.1:")
    with_cert = etcd_tls.files.client_ssl_context()
    status, health = http_get_json(f"{url}/health", ssl_context=with_cert)
    assert status == 200
    assert health["health"] == "true"
    key = f"{etcd_prefix}tls"
    status, body = _put(url, key, "secure", ssl_context=with_cert)
    assert status == 200, body

    ca_only = ssl.create_default_context(cafile=etcd_tls.files.ca_cert)
    with pytest.raises((OSError, http.client.HTTPException)):
        http_get_json(f"{url}/health", ssl_context=ca_only)
    with pytest.raises((OSError, http.client.HTTPException)):
        http_get_json(f"{url.replace('https', 'http')}/health")

    got = etcdctl(
        etcd_binaries, etcd_tls.endpoints, "get", key, "--print-value-only", tls=etcd_tls.files
    )
    assert got.stdout.strip() == "secure"


def test_other_installed_versions_serve(etcd_binaries: EtcdBinaries, etcd_prefix: str) -> None:
    """Every other installed etcd version (e.g. Debian's 3.4 next to the wheel's 3.5) works.

    The version under test already runs in the other tests; this starts each
    other one once, so a cross-version suite can rely on the harness there too.
    """
    others = [b for b in find_all_etcds() if b.version != etcd_binaries.version]
    if not others:
        pytest.skip(f"only etcd {etcd_binaries.version} is installed")
    key = f"{etcd_prefix}v"
    for binaries in others:
        with EtcdCluster(binaries, size=1) as cluster:
            url = cluster.endpoints[0]
            status, body = _put(url, key, binaries.version)
            assert status == 200, (binaries, body)
            assert _get(url, key) == [(key.encode(), binaries.version.encode())]
            status, info = v3_call(url, "maintenance/status", {})
            assert info["version"] == binaries.version
            got = etcdctl(binaries, cluster.endpoints, "get", key, "--print-value-only")
            assert got.stdout.strip() == binaries.version
        assert not cluster.members[0].is_running


def test_no_proxy_is_used_for_loopback(
    monkeypatch: pytest.MonkeyPatch, etcd_member: EtcdMember
) -> None:
    """A developer's http_proxy must not capture requests to the loopback members."""
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    assert urllib.request.getproxies().get("http")
    status, _ = http_get_json(f"{etcd_member.client_url}/health")
    assert status == 200
