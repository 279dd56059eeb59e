"""The README's examples are the files in examples/, and they run as shown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

EXPECTED = {
    "registry.py": [
        "tcp://db:5432",
        "role': 'primary'",
        # the README says the error names who holds the key
        "'db' is already registered in namespace 'services' (held by value 'tcp://db:5432',"
        " unowned)",
    ],
    "supervisor.py": ["worker: running, 2 restarts", "None"],
    "coordination.py": ["fencing token 3", "leads, term 3", "agreed on chosen by"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs(name: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for text in EXPECTED[name]:
        assert text in done.stdout, done.stdout


def test_coordination_example_agrees_on_one_value() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "coordination.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    agreed = {
        line.split("agreed on ", 1)[1] for line in done.stdout.splitlines() if "agreed" in line
    }
    assert len(agreed) == 1


@pytest.mark.etcd
def test_cluster_example_hands_shards_over(etcd_endpoints: list[str]) -> None:
    """examples/cluster.py needs etcd: the session's member, named by the environment."""
    env = dict(os.environ, FOUNDATION_ETCD_ENDPOINTS=etcd_endpoints[0])
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "cluster.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    placements = [line for line in lines if line.startswith("nodes:")]
    assert [p.rsplit(" - ", 1)[1] for p in placements] == ["c leaves", "b leaves", "a leaves"]
    # Three nodes share the four shards, then c's move on, then b's.
    assert {"'a'", "'b'", "'c'"} <= set(re.findall(r"'\w'", placements[0]))
    assert "'c'" not in placements[1]
    assert placements[2] == "nodes: ['a', 'a', 'a', 'a'] - a leaves"
    # Each shard that moved resumed from the count its last instance saved.
    starts = [int(n) for n in re.findall(r"starts at (\d+)", done.stdout)]
    assert len(starts) > 4  # c's shards at least moved
    assert starts.count(0) == 4  # only each shard's first instance starts from nothing


@pytest.mark.parametrize("name", sorted([*EXPECTED, "cluster.py"]))
def test_readme_shows_the_example_verbatim(name: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = (EXAMPLES / name).read_text(encoding="utf-8")
    assert code.strip() in readme, f"README.md no longer shows examples/{name} as it is"
