"""The command line against etcd: ``inspect --etcd`` only reads, ``bench --etcd`` keeps its bound.

``inspect --etcd`` used to open a registry on the cluster to read it: a
lease, a keepalive and a sentinel key written, for a command that only
looks. It now reads the registry's prefix with one range. ``bench --etcd``
against an endpoint that does not answer took ~10 s to say so whatever its
timeout; now it says so within ``--etcd-timeout``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest
import trio

from foundation.etcd import open_etcd_client
from foundation.registry import open_registry

#: An endpoint nothing listens on: connections are refused at once.
DEAD = "http://127.0.0.1:1"


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "foundation", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
        check=False,
    )


@pytest.mark.etcd
async def test_inspect_etcd_reads_without_writing(etcd_endpoints: list[str]) -> None:
    prefix = f"test/{uuid.uuid4().hex}/"
    registry_prefix = prefix + "registry/"
    with trio.fail_after(60):
        async with (
            open_etcd_client(etcd_endpoints) as etcd,
            open_registry(backend="etcd", endpoints=etcd_endpoints, prefix=registry_prefix) as reg,
        ):
            await reg.register("svc", "db", "10.0.0.7", {"role": "primary"})
            await reg.register("svc", "cache", "10.0.0.8", {"role": "replica"})
            await etcd.put(registry_prefix + "reg/not ours", "x")  # skipped, not fatal
            before = await etcd.range(prefix, prefix=True)
            leases = sorted(await etcd.leases())
            proc = await trio.to_thread.run_sync(
                lambda: run_cli(
                    "inspect",
                    "--etcd",
                    ",".join(etcd_endpoints),
                    "--prefix",
                    prefix,
                    "--where",
                    "role=primary",
                    "--json",
                )
            )
            assert proc.returncode == 0, proc.stderr
            report = json.loads(proc.stdout)
            assert [(r["namespace"], r["name"], r["value"]) for r in report["registrations"]] == [
                ("svc", "db", "10.0.0.7")
            ]
            after = await etcd.range(prefix, prefix=True)
            # Nothing was written under the prefix (no sync key, no entry) ...
            assert after.header.revision == before.header.revision
            assert [kv.key for kv in after.kvs] == [kv.key for kv in before.kvs]
            # ... and no lease outlived the command (none was granted to hold one).
            assert sorted(await etcd.leases()) == leases


def test_bench_etcd_unreachable_fails_within_its_timeout() -> None:
    t0 = time.monotonic()
    proc = run_cli("bench", "--etcd", DEAD, "--no-progress", "--etcd-timeout", "1", timeout=60)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("foundation bench: etcd unavailable: ")
    assert "within 1 s" in lines[0]
    assert proc.stdout == ""
    # 1 s, plus the interpreter starting and closing, on a loaded machine
    assert elapsed < 6, elapsed
