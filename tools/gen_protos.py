"""Generate the etcd client's protobuf and gRPC modules from its own ``.proto`` files.

Usage::

    python tools/gen_protos.py            # regenerate src/foundation/etcd/_proto/*_pb2*.py(i)
    python tools/gen_protos.py --out DIR  # write the tree under DIR instead (the test does this)

Needs ``grpcio-tools`` (in the ``test`` extra). The ``.proto`` files live in
``src/foundation/etcd/_proto/`` and import each other by their path under
``src/``, so the generated modules import each other as
``foundation.etcd._proto.X_pb2``.

One step follows protoc: the generated ``*_pb2.py`` register their messages in
the package's own descriptor pool (``foundation.etcd._proto._pool.POOL``)
instead of protobuf's process-wide default pool. etcd's message names
(``etcdserverpb.PutRequest``, ``mvccpb.KeyValue``) are the same in every etcd
client library, and two libraries adding them to the default pool from
different files collide ("duplicate symbol"), so a program could not use this
client next to another one.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
PROTO_DIR = SRC / "foundation" / "etcd" / "_proto"
PROTOS = ("kv.proto", "rpc.proto", "v3lock.proto", "v3election.proto")

_DEFAULT_POOL = "_descriptor_pool.Default()"
_OWN_POOL_IMPORT = "from foundation.etcd._proto._pool import POOL as _POOL\n"


def _own_pool(text: str, name: str) -> str:
    if text.count(_DEFAULT_POOL) != 1:
        raise SystemExit(f"{name}: expected one {_DEFAULT_POOL!r} in protoc's output")
    text = text.replace(_DEFAULT_POOL, "_POOL")
    # After protoc's own imports (the line that starts the generated body).
    marker = "_sym_db = _symbol_database.Default()\n"
    if marker not in text:
        raise SystemExit(f"{name}: protoc's output changed shape (no {marker.strip()!r})")
    return text.replace(marker, _OWN_POOL_IMPORT + marker, 1)


def generate(out: Path) -> list[Path]:
    """Run protoc on every ``.proto`` and write the modules under ``out``; return them."""
    try:
        from grpc_tools import protoc
    except ImportError:
        raise SystemExit(
            "grpcio-tools is not installed: pip install 'trio-foundation[test]'"
        ) from None
    import grpc_tools

    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{SRC}",
            f"-I{include}",
            f"--python_out={tmp}",
            f"--pyi_out={tmp}",
            f"--grpc_python_out={tmp}",
            *(str(PROTO_DIR / name) for name in PROTOS),
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        made = sorted((Path(tmp) / "foundation" / "etcd" / "_proto").iterdir())
        written = []
        for path in made:
            text = path.read_text()
            if path.name.endswith("_pb2.py"):
                text = _own_pool(text, path.name)
            # protoc stamps its version into a comment; keep it (the test
            # regenerates with the same grpcio-tools to compare).
            text = re.sub(r"[ \t]+$", "", text, flags=re.MULTILINE)
            target = out / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=PROTO_DIR, help="output directory")
    args = parser.parse_args(argv)
    if args.out != PROTO_DIR:
        shutil.rmtree(args.out, ignore_errors=True)
    for path in generate(args.out):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
