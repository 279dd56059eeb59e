"""The demo end to end: ``run_demo`` in-process, ``python -m foundation demo``, and etcd mode.

These run the real scenario on Trio's real clock (a few seconds each, bounded
by ``trio.fail_after``): an autojump clock would race through the fault plan
and, in etcd mode, fire while tasks wait on sockets. Each
checks the summary's claims itself rather than trusting ``summary.ok``:
restarts happened, a worker's name moved to its new instance, leadership
failed over (higher term, another worker), and nothing stayed registered by
dead workers.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from foundation.demo import DemoConfig, DemoSummary, run_demo
from foundation.demo._config import plan_faults, proposal
from foundation.demo._observe import Observations, worker_of
from foundation.demo._snapshot import (
    INSTANCES_NS,
    LEADER_NAME,
    NAMES_NS,
    new_state_path,
    settled_tree,
    state_dir,
)
from foundation.demo._view import format_summary
from foundation.errors import ConfigError
from foundation.supervision import ChildNode, ChildState, SupervisorTree

#: Generous bound for a 3-second local run (start, the run, shutdown) on a loaded 2-core box.
LOCAL_LIMIT = 30
#: Bound for the etcd run: processes start, leases of a killed process expire.
ETCD_LIMIT = 90
#: States of a child that is still alive; none may remain once a run has ended.
LIVE = {"starting", "running", "restarting", "stopping"}
README = Path(__file__).resolve().parents[1] / "README.md"


def readme_inspect_commands() -> list[list[str]]:
    """The README's ``inspect`` commands that read a local demo's state, as argv lists."""
    commands = []
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("python3 -m foundation inspect") and "--etcd" not in line:
            commands.append(shlex.split(line, comments=True)[4:])
    return commands


def live_states(tree: dict[str, Any] | None) -> list[str]:
    """``id: state`` of every child in a JSON tree (nested too) that is still alive."""
    out = []
    for node in (tree or {}).get("children", ()):
        if node["state"] in LIVE:
            out.append(f"{node['id']}: {node['state']}")
        out += live_states(node.get("supervisor"))
    return out


def check_scenario(summary: DemoSummary) -> None:
    """The issue's four claims, checked on the summary's data (not on ``summary.ok``)."""
    assert summary.ok, summary.problems
    # Restarts happened, one per planned crash at least.
    assert sum(summary.restarts.values()) >= 1
    injected = [c for c in summary.crashes if c["injected"]]
    assert injected
    assert sum(summary.restarts.values()) >= len(injected)
    assert not [c for c in summary.crashes if not c["injected"]]
    # A worker's name moved from a dead instance to the same worker's next one.
    moved = [
        m
        for m in summary.names_moved
        if m["name"] != LEADER_NAME
        and worker_of(m["old"]) == worker_of(m["new"]) == m["name"]
        and m["old"] != m["new"]
    ]
    assert moved, summary.names_moved
    for m in moved:
        assert summary.instances[m["old"]]["ended"] is not None  # the old one is dead
    # Leadership failed over: a higher term, held by another worker.
    assert summary.failovers, summary.leaders
    for f in summary.failovers:
        assert f["to_term"] > f["from_term"]
        assert worker_of(f["old"]) != worker_of(f["new"])
    terms = [x["term"] for x in summary.leaders]
    assert terms == sorted(terms)
    assert len(set(terms)) == len(terms)
    # Nothing left registered by dead workers, at the end or seen during the run.
    assert summary.leftovers == ()
    assert summary.stale == ()
    # Every round agreed: each worker learned the same value.
    assert summary.rounds >= 2
    assert all(a["consistent"] for a in summary.agreed)


# ---------------------------------------------------------------------------
# The seeded plan
# ---------------------------------------------------------------------------
def test_plan_is_seeded_and_inside_the_run() -> None:
    assert plan_faults(10, 7) == plan_faults(10, 7)
    assert plan_faults(10, 7) != plan_faults(10, 8)
    for seconds in (2, 3, 10, 30):
        plan = plan_faults(seconds, 1)
        kinds = [f.kind for f in plan]
        assert {"leader", "worker"} <= set(kinds)
        times = [f.at for f in plan]
        assert times == sorted(times)
        assert all(0.15 * seconds <= t <= 0.75 * seconds for t in times)
    etcd_plan = plan_faults(8, 1, processes=True)
    assert etcd_plan[0].kind == "process"
    assert {"leader", "worker"} <= {f.kind for f in etcd_plan}
    assert proposal(3, 5, "worker-1") == proposal(3, 5, "worker-1")
    assert proposal(3, 5, "worker-1") != proposal(3, 5, "worker-2")


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"seconds": 1}, "--seconds 2 or more"),
        ({"workers": 1}, "use 2 to 64"),
        ({"round_interval": 0.0}, "round_interval"),
        ({"etcd": ("http://127.0.0.1:1",), "processes": 9}, "processes=9"),
        ({"etcd": ("http://127.0.0.1:1",), "prefix": "x"}, "ending in '/'"),
        ({"etcd": ("http://127.0.0.1:1",), "seconds": 5}, "--seconds 8 or more"),
    ],
)
def test_config_says_what_is_wrong(changes: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        DemoConfig().replace(**changes).checked()
    assert fragment in str(info.value)


def test_restarts_by_two_processes_add_up() -> None:
    """A worker restarted once on each of two processes was restarted twice.

    Each process's supervisor counts from 1; keeping the largest count per
    child (as a one-process run may) hid the second restart, and a run with
    two planned crashes of the same worker then looked like a missed one.
    """
    obs = Observations(DemoConfig(), ())
    restart = {"kind": "restart", "at": 1.0, "supervisor": "workers/worker-1", "child": "worker-1"}
    obs.apply({**restart, "proc": "proc-0", "restarts": 1})
    obs.apply({**restart, "proc": "proc-0", "restarts": 1})  # the same restart, reported again
    obs.apply({**restart, "proc": "proc-1", "restarts": 1})
    obs.apply({**restart, "proc": "proc-1", "restarts": 2})
    assert obs.restarts == {"worker-1": 3}


def test_summary_keeps_the_terms_of_the_shutdown() -> None:
    obs = Observations(DemoConfig(), ())
    obs.apply({"kind": "leader", "at": 0.1, "candidate": "worker-1#1", "term": 1})
    obs.apply({"kind": "elected", "at": 0.1, "instance": "worker-1#1", "term": 1, "token": 1})
    obs.apply({"kind": "elected", "at": 2.0, "instance": "worker-2#1", "term": 2, "token": 2})
    obs.apply({"kind": "leader", "at": 2.0, "candidate": "worker-2#1", "term": 2})
    obs.apply({"kind": "stopping", "at": 3.0, "seconds": 3})
    # The tree stops its workers one by one: two handovers, one seen only
    # by the winner itself (the observer's latest-value view skipped it).
    obs.apply({"kind": "elected", "at": 3.01, "instance": "worker-3#1", "term": 3, "token": 3})
    obs.apply({"kind": "leader", "at": 3.02, "candidate": "worker-1#1", "term": 4})
    summary = obs.summary(backend="python", elapsed=3.1, leftovers=(), state_path=None)
    assert [(x["candidate"], x["term"], bool(x.get("shutdown"))) for x in summary.leaders] == [
        ("worker-1#1", 1, False),
        ("worker-2#1", 2, False),
        ("worker-3#1", 3, True),
        ("worker-1#1", 4, True),
    ]
    assert [(f["from_term"], f["to_term"]) for f in summary.failovers] == [(1, 2)]
    text = format_summary(summary)
    assert "  leaders     worker-1#1 (term 1) -> worker-2#1 (term 2)\n" in text
    assert "while the tree stopped: worker-3#1 (term 3) -> worker-1#1 (term 4)" in text


def test_settled_tree_shows_nothing_running() -> None:
    crash = RuntimeError("boom")
    before = {
        "name": "demo",
        "strategy": "one_for_one",
        "dynamic": False,
        "children": [
            {
                "id": "workers",
                "state": "running",
                "restarts": 0,
                "last_error": None,
                "supervisor": {
                    "name": "workers",
                    "strategy": "one_for_one",
                    "dynamic": False,
                    "children": [
                        {
                            "id": "w1",
                            "state": "running",
                            "restarts": 2,
                            "last_error": "X: y",
                            "supervisor": None,
                        },
                        {
                            "id": "w2",
                            "state": "crashed",
                            "restarts": 0,
                            "last_error": "Z",
                            "supervisor": None,
                        },
                        {
                            "id": "w3",
                            "state": "restarting",
                            "restarts": 1,
                            "last_error": None,
                            "supervisor": None,
                        },
                    ],
                },
            },
            {
                "id": "chaos",
                "state": "running",
                "restarts": 0,
                "last_error": None,
                "supervisor": None,
            },
        ],
    }
    after = SupervisorTree(
        "demo",
        "one_for_one",
        False,
        (
            ChildNode("workers", ChildState.STOPPED, 0, None, None),
            ChildNode("chaos", ChildState.CRASHED, 0, crash, None),
        ),
    )
    tree = settled_tree(before, after)
    assert live_states(tree) == []
    assert [(c["id"], c["state"]) for c in tree["children"]] == [
        ("workers", "stopped"),
        ("chaos", "crashed"),
    ]
    nested = tree["children"][0]["supervisor"]["children"]
    assert [(c["id"], c["state"], c["restarts"]) for c in nested] == [
        ("w1", "stopped", 2),
        ("w2", "crashed", 0),
        ("w3", "stopped", 1),
    ]
    assert nested[0]["last_error"] == "X: y"


# ---------------------------------------------------------------------------
# Local mode, in-process, with inspect reading the live state
# ---------------------------------------------------------------------------
async def test_local_demo_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from foundation._cli import main
    from foundation._cli._inspect import _from_state

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where new_state_path() goes
    state = Path(new_state_path())
    config = DemoConfig(seconds=3, workers=3, seed=1, state_path=str(state), round_interval=0.2)
    readme = readme_inspect_commands()
    assert ["--namespace", NAMES_NS, "--where", "role=leader", "--json"] in readme
    result: list[DemoSummary] = []

    async def run() -> None:
        result.append(await run_demo(config))

    with trio.fail_after(LOCAL_LIMIT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            # Mid-run, the published state shows a live system (as inspect reads it).
            for _ in range(400):  # the first snapshot comes once the tree is up
                if state.exists():
                    break
                await trio.sleep(0.05)
            await trio.sleep(1.0)
            live = _from_state(str(state), None, {})
            assert live["demo"]["running"] is True
            names = {r["name"] for r in live["registrations"] if r["namespace"] == NAMES_NS}
            assert {"worker-1", "worker-2", "worker-3"} <= names
            leader = live["leaders"][0]
            assert leader["candidate"] is not None
            assert live["locks"][0]["holder"] == leader["candidate"]
            assert [c["id"] for c in live["tree"]["children"]] == ["workers", "chaos"]
            only_leader = _from_state(str(state), INSTANCES_NS, {"role": "leader"})
            assert [r["name"] for r in only_leader["registrations"]] == [leader["candidate"]]
            # The README's inspect commands work as shown, on the newest run's state.
            capsys.readouterr()
            for argv in readme:
                assert main(["inspect", *argv]) == 0, argv
                out = capsys.readouterr().out
                if "--json" in argv:
                    report = json.loads(out)
                    assert report["source"] == {"state": str(state)}
                else:
                    assert out.startswith(f"source    {state}\n")
                if "role=leader" in argv:
                    (row,) = report["registrations"]  # the leader, by name
                    assert (row["namespace"], row["name"]) == (NAMES_NS, LEADER_NAME)
                    assert row["metadata"]["role"] == "leader"
                    assert re.fullmatch(r"worker-\d#\d+", row["value"])

    (summary,) = result
    check_scenario(summary)
    assert summary.mode == "local"
    assert summary.elapsed >= 3
    # The last snapshot says the run finished, with its summary and nothing registered.
    final = json.loads(state.read_text())
    assert final["running"] is False
    assert final["summary"]["ok"] is True
    assert final["registrations"] == []
    workers = final["tree"]["children"][0]["supervisor"]["children"]
    assert sum(c["restarts"] for c in workers) == sum(summary.restarts.values())
    # The final tree shows the tree as it ended: nothing in it runs any more.
    assert live_states(final["tree"]) == []
    assert [c["state"] for c in final["tree"]["children"]] == ["stopped", "stopped"]
    assert final["tree"] == summary.extra["tree"]
    # The summary lists every leader seen, the shutdown's handovers included.
    text = format_summary(summary, final["tree"])
    for x in summary.leaders:
        assert f"{x['candidate']} (term {x['term']})" in text


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------
def run_cli(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "foundation", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        check=False,
    )


@pytest.fixture(scope="module")
def temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The TMPDIR of the command-line runs (where the default state goes)."""
    return tmp_path_factory.mktemp("tmpdir")


@pytest.fixture(scope="module")
def finished_run(temp_dir: Path) -> tuple[Path, dict[str, Any]]:
    """``python -m foundation demo --seconds 3 --json``: its state file and JSON summary.

    No ``--state``: the run picks its own file under ``$TMPDIR``.
    """
    proc = run_cli("demo", "--seconds", "3", "--seed", "2", "--json", TMPDIR=str(temp_dir))
    assert proc.returncode == 0, proc.stderr
    (state,) = (temp_dir / Path(state_dir()).name).glob("demo-*.json")
    assert f"state: {state}  (" in proc.stderr  # printed at start (the view is on stderr)
    return state, json.loads(proc.stdout)


def test_cli_demo_json(finished_run: tuple[Path, dict[str, Any]]) -> None:
    state, data = finished_run
    assert data["ok"] is True, data["problems"]
    assert all(data["checks"].values())
    assert data["mode"] == "local"
    assert data["seed"] == 2
    assert data["workers"] == 4
    assert sum(data["restarts"].values()) >= 1
    assert any(m["name"] != LEADER_NAME for m in data["names_moved"])
    assert data["failovers"]
    assert data["failovers"][0]["to_term"] > data["failovers"][0]["from_term"]
    assert data["leftovers"] == []
    assert data["stale"] == []
    assert data["state_path"] == str(state)
    assert data["tree"]["name"] == "demo"


def test_cli_inspect_finished_state(
    finished_run: tuple[Path, dict[str, Any]], temp_dir: Path
) -> None:
    state, _ = finished_run
    human = run_cli("inspect", "--state", str(state))
    assert human.returncode == 0, human.stderr
    assert "demo      finished: OK" in human.stdout
    assert "demo (one_for_one, 2 children)" in human.stdout
    assert "restart" in human.stdout  # a crashed worker's restarts in the tree
    assert "registrations: 0 (all namespaces)" in human.stdout
    assert "demo-leader: nobody" in human.stdout
    assert "├── workers: stopped [workers (one_for_one, 4 children)]" in human.stdout
    assert ": running" not in human.stdout
    # With no --state, inspect reads the newest run of this user's: the same.
    default = run_cli("inspect", TMPDIR=str(temp_dir))
    assert default.returncode == 0, default.stderr
    assert default.stdout.splitlines()[2:] == human.stdout.splitlines()[2:]  # [1]: its age
    assert default.stdout.startswith(f"source    {state}\n")
    as_json = run_cli("inspect", "--state", str(state), "--json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    assert report["source"] == {"state": str(state)}
    assert report["demo"]["running"] is False
    assert report["demo"]["ok"] is True
    assert report["registrations"] == []
    assert report["locks"] == [
        {"name": "demo-ledger", "holder": None, "token": None, "held_for": None}
    ]


def snapshot(**extra: Any) -> dict[str, Any]:
    """A hand-made snapshot of a running demo (what the demo publishes mid-run)."""
    import time

    def reg(ns: str, name: str, value: Any, **metadata: Any) -> dict[str, Any]:
        return {"namespace": ns, "name": name, "value": value, "metadata": metadata, "owner": "x"}

    return {
        "format": "foundation-demo/1",
        "running": True,
        "mode": "local",
        "pid": 1,
        "updated": time.time(),
        "seed": 0,
        "workers": 2,
        "seconds": 10,
        "elapsed": 2.5,
        "backend": "python",
        "etcd": None,
        "tree": {
            "name": "demo",
            "strategy": "one_for_one",
            "dynamic": False,
            "children": [
                {
                    "id": "worker-1",
                    "state": "running",
                    "restarts": 2,
                    "last_error": "InjectedCrash: boom",
                    "supervisor": None,
                }
            ],
        },
        "registrations": [
            reg(NAMES_NS, "worker-1", "worker-1#3", restarts=2),
            reg(NAMES_NS, "leader", "worker-2#1", term=4, token=9),
            reg(INSTANCES_NS, "worker-1#3", "worker-1", role="follower", load=3, zone={"dc": "a"}),
            reg(INSTANCES_NS, "worker-2#1", "worker-2", role="leader", load=7, zone={"dc": "b"}),
        ],
        "leader": {"group": "demo-leader", "candidate": "worker-2#1", "term": 4},
        "locks": [{"name": "demo-ledger", "holder": "worker-2#1", "token": 9, "held_for": 1.5}],
        "round": {"round": 5, "value": "beef", "proposer": "worker-1", "learners": 2},
        "restarts": {"worker-1": 2},
        "failovers": 1,
        "events": [],
        **extra,
    }


def inspect(capsys: pytest.CaptureFixture[str], state: Path, *args: str) -> tuple[int, str, str]:
    from foundation._cli import main

    code = main(["inspect", "--state", str(state), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_human(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "s.json"
    state.write_text(json.dumps(snapshot()))
    code, out, _ = inspect(capsys, state)
    assert code == 0
    assert "demo      running (2.5 s of 10 s)" in out
    assert "└── worker-1: running, 2 restarts, last error: InjectedCrash: boom" in out
    assert "registrations: 4 (all namespaces)" in out
    assert "demo-leader: worker-2#1 (term 4)" in out
    assert "demo-ledger: held by worker-2#1, fencing token 9, for 1.5 s" in out
    assert "round     5: agreed beef" in out


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--namespace", NAMES_NS], ["leader", "worker-1"]),
        (["-n", INSTANCES_NS, "--where", "role=leader"], ["worker-2#1"]),
        (["--where", "load<5"], ["worker-1#3"]),
        (["--where", "load>=3", "--where", "role!=leader"], ["worker-1#3"]),
        (["--where", "zone.dc=b"], ["worker-2#1"]),
        (["--where", "term=4"], ["leader"]),
        (["--where", 'role="follower"'], ["worker-1#3"]),
        (["--where", "nothing=1"], []),
    ],
)
def test_inspect_filters_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], names: list[str]
) -> None:
    state = tmp_path / "s.json"
    state.write_text(json.dumps(snapshot()))
    code, out, _ = inspect(capsys, state, *args, "--json")
    assert code == 0
    report = json.loads(out)
    assert [r["name"] for r in report["registrations"]] == names
    assert report["leaders"] == [{"group": "demo-leader", "candidate": "worker-2#1", "term": 4}]
    assert report["tree"]["children"][0]["restarts"] == 2


def test_inspect_stale_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "s.json"
    state.write_text(json.dumps(snapshot(updated=0.0)))
    code, out, _ = inspect(capsys, state)
    assert code == 0
    assert "the demo stopped publishing" in out


def test_inspect_errors_say_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = inspect(capsys, tmp_path / "missing.json")
    assert code == 1
    assert "python -m foundation demo" in err
    other = tmp_path / "other.json"
    other.write_text("{}")
    code, _, err = inspect(capsys, other)
    assert code == 1
    assert "not a trio-foundation demo snapshot" in err
    state = tmp_path / "s.json"
    state.write_text(json.dumps(snapshot()))
    code, _, err = inspect(capsys, state, "--where", "role")
    assert code == 2
    assert "FIELD=VALUE" in err


def test_cli_demo_bad_settings(capsys: pytest.CaptureFixture[str]) -> None:
    from foundation._cli import main

    assert main(["demo", "--workers", "1"]) == 2
    assert "use 2 to 64" in capsys.readouterr().err


# ---------------------------------------------------------------------------
# etcd mode: worker processes sharing one etcd, failover between processes
# ---------------------------------------------------------------------------
@pytest.mark.etcd
async def test_etcd_demo_across_processes(etcd_endpoints: list[str], tmp_path: Path) -> None:
    from foundation.etcd import open_etcd_client

    prefix = f"test/{uuid.uuid4().hex}/demo/"
    config = DemoConfig(
        seconds=8,
        workers=4,
        seed=1,
        state_path=str(tmp_path / "state.json"),
        etcd=tuple(etcd_endpoints),
        processes=2,
        prefix=prefix,
        ttl=2,
        round_interval=0.3,
    )
    with trio.fail_after(ETCD_LIMIT):
        summary = await run_demo(config)
    check_scenario(summary)
    assert summary.mode == "etcd"
    # A worker process was killed and its supervisor (the parent) restarted it.
    assert any(k.startswith("proc-") and v >= 1 for k, v in summary.restarts.items())
    killed = [f for f in summary.faults if f["target"] == "process"]
    assert killed
    assert killed[0]["killed"] is True
    # Leadership moved between OS processes at least once.
    pids = {inst: info["pid"] for inst, info in summary.instances.items()}
    assert any(pids.get(f["old"]) != pids.get(f["new"]) for f in summary.failovers)
    # The workers are children of a distributed supervisor: each ran at most once
    # at any moment (by the machine's monotonic clock), and the killed process's
    # workers ran again elsewhere within T + 2 s.
    assert summary.checks["at_most_once"] is True
    assert summary.checks["moved_after_kill"] is True
    recoveries = summary.extra["recoveries"]
    assert recoveries
    ttl = summary.extra["ttl_granted"]
    for r in recoveries:
        assert r["after"] is not None
        assert r["after"] <= ttl + 2
    killed_pid = killed[0]["pid"]
    for r in recoveries:
        later = sorted(
            (
                i
                for i in summary.instances.values()
                if i["worker"] == r["worker"] and i["mono_start"] > killed[0]["mono"]
            ),
            key=lambda i: i["mono_start"],
        )
        assert later
        assert all(i["pid"] != killed_pid for i in later[:1])
        assert all(i["token"] is not None for i in later)
    # The run cleaned up after itself: only the final state remains on etcd.
    async with open_etcd_client(etcd_endpoints) as client:
        left = (await client.range(prefix, prefix=True)).kvs
        keys = sorted(kv.key.decode() for kv in left)
        assert prefix + "state" in keys
        assert not [k for k in keys if k.startswith(prefix + "coord/")]
        assert prefix + "running" not in keys
        final = json.loads(next(kv.value for kv in left if kv.key.decode() == prefix + "state"))
        assert final["running"] is False
        assert final["summary"]["ok"] is True
