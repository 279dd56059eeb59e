"""The generated protobuf/gRPC modules are current, and etcd stays optional."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTO_DIR = ROOT / "src" / "foundation" / "etcd" / "_proto"


def test_generated_modules_are_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools is in the test extra")
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gen_protos
    finally:
        sys.path.remove(str(ROOT / "tools"))
    made = gen_protos.generate(tmp_path)
    assert made, "the script generated nothing"
    committed = sorted(
        p.name for p in PROTO_DIR.iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi", "_grpc.py"))
    )
    assert sorted(p.name for p in made) == committed
    for path in made:
        assert path.read_text() == (PROTO_DIR / path.name).read_text(), (
            f"{path.name} is out of date: run python tools/gen_protos.py and commit the result"
        )


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_importing_foundation_does_not_import_grpc() -> None:
    result = _run(
        """
        import sys
        import foundation, foundation.etcd, foundation.registry, foundation.coordination
        heavy = ("grpc.", "google.protobuf")
        loaded = [m for m in sys.modules if m == "grpc" or m.startswith(heavy)]
        assert not loaded, loaded
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_without_the_extra_etcd_is_a_config_error_naming_it() -> None:
    result = _run(
        """
        import sys

        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name == "grpc" or name.startswith(("grpc.", "google.protobuf")):
                    raise ImportError(f"No module named {name!r} (blocked)")
                return None

        sys.meta_path.insert(0, Blocker())
        import trio
        import foundation
        from foundation import errors
        from foundation.etcd import open_etcd_client, op_put
        from foundation.coordination import open_etcd_coordinator
        from foundation.registry import open_registry

        async def main():
            for opener in (
                lambda: open_etcd_client(["127.0.0.1:1"]),
                lambda: open_etcd_coordinator(["127.0.0.1:1"]),
                lambda: open_registry(backend="etcd", endpoints=["127.0.0.1:1"]),
            ):
                try:
                    async with opener():
                        pass
                except errors.ConfigError as exc:
                    print("ConfigError:", exc)
            try:
                op_put("k", "v")
            except errors.ConfigError as exc:
                print("ConfigError:", exc)

        trio.run(main)
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 4, result.stdout
    for line in lines:
        assert line.startswith("ConfigError:")
        assert "pip install 'trio-foundation[etcd]'" in line
