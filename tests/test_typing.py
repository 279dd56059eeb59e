"""What a type checker sees of the public API: mypy on small snippets of user code.

The facade binds its reads and ``*_nowait`` writes to the backend's own
methods at run time (no wrapper frame), so without stubs a type checker saw
them as ``Callable[..., Any]`` and let any call through. These tests run
mypy (``--strict``, in a subprocess) on code a user would write and check
that the real signatures are seen: right calls pass, wrong ones are errors.
Skipped when mypy is not installed (the ``test`` and ``lint`` extras bring it).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("mypy", reason="mypy is not installed: pip install -e '.[test]'")

SNIPPET = """
from collections.abc import Hashable
from typing import Any

from foundation import Registration, Registry

r = Registry()
reveal_type(r.lookup)
reveal_type(r.get)
reveal_type(r.register_nowait)
reveal_type(r.lookup_with_metadata("ns", "name"))

# right calls: no error
value: Any = r.get("ns", "name", default=3)
reg: Registration = r.register_nowait("ns", "name", 1, {"role": "db"}, owner="me")
regs: list[Registration] = r.registrations(ns="ns") + r.members("ns", "group")
n: int = r.count() + r.member_count("ns", "group") + r.unregister_owner_nowait("me")
gone: bool = r.unregister_nowait("ns", "name") or r.leave_nowait("ns", "group", 1)
r.update_metadata_nowait("ns", "name", None)
r.join_nowait("ns", "group", 1, owner="me")
names: list[Any] = r.names("ns")

# wrong calls: one error each
r.lookup("ns")  # WRONG: missing name
r.register_nowait("ns", "name", 1, "not a mapping")  # WRONG: metadata
r.register_nowait("ns", "name", 1, None, "me")  # WRONG: owner is keyword-only
r.get("ns", "name", fallback=3)  # WRONG: no such keyword
x: str = r.count()  # WRONG: count is an int
r.lookup_with_metadata("ns", "name").nope  # WRONG: no such attribute
"""


def run_mypy(code: str, tmp_path: Path) -> list[str]:
    source = tmp_path / "snippet.py"
    source.write_text(textwrap.dedent(code), encoding="utf-8")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--no-error-summary",
            "--follow-imports=silent",
            "--cache-dir",
            str(tmp_path / "mypy-cache"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode in (0, 1), proc.stderr + proc.stdout
    return proc.stdout.splitlines()


def test_facade_methods_have_their_signatures(tmp_path: Path) -> None:
    lines = run_mypy(SNIPPET, tmp_path)
    reveals = [line.split("Revealed type is ", 1)[1] for line in lines if "Revealed type" in line]
    # (Registration is a NamedTuple: mypy spells it "tuple[..., fallback=...Registration]".)
    assert len(reveals) == 4, lines
    assert reveals[0] == '"def (ns: typing.Hashable, name: typing.Hashable) -> Any"'
    assert reveals[1] == '"def (ns: typing.Hashable, name: typing.Hashable, default: Any =) -> Any"'
    assert reveals[2].startswith(
        '"def (ns: typing.Hashable, name: typing.Hashable, value: Any, metadata:'
        " typing.Mapping[Any, Any] | None =, *, owner: typing.Hashable | None =) -> "
    ), reveals[2]
    assert reveals[2].endswith('Registration]"'), reveals
    assert reveals[3].endswith('Registration]"'), reveals

    source = textwrap.dedent(SNIPPET).splitlines()
    wrong = {i for i, text in enumerate(source, 1) if "# WRONG" in text}
    errors: dict[int, list[str]] = {}
    for line in lines:
        match = re.match(r".*snippet\.py:(\d+): error: (.*)", line)
        if match:
            errors.setdefault(int(match[1]), []).append(match[2])
    assert set(errors) == wrong, "\n".join(lines)
    assert all(len(found) == 1 for found in errors.values()), errors


def test_a_bad_call_is_caught(tmp_path: Path) -> None:
    # The check itself can fail: a call the stubs forbid is reported.
    lines = run_mypy("from foundation import Registry\nRegistry().names()\n", tmp_path)
    assert any('Missing positional argument "ns"' in line for line in lines), lines
