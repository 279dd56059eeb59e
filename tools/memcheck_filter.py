"""Split valgrind memcheck's XML report into our errors and CPython's.

Usage: python3 tools/memcheck_filter.py MEMCHECK.xml

An error (or a definite leak) is *ours* when any frame of its stack (or of
its allocation / free stacks) is in the native extension (an object file
named ``_native*.so``), in a csrc/ function (``fdn_*``) or in Cython's
generated code (``__pyx_*``); everything else is CPython's or libc's own
noise (e.g. memory CPython never frees at exit), counted but not failed on.
Exit status: 1 if there is any error of ours, else 0. Only the standard
library is used, so any python3 runs it.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import Counter


def frames(error: ET.Element) -> list[dict[str, str]]:
    out = []
    for stack in error.iter("stack"):
        for frame in stack.iter("frame"):
            out.append({child.tag: child.text or "" for child in frame})
    return out


def is_ours(frame: dict[str, str]) -> bool:
    obj = frame.get("obj", "").rsplit("/", 1)[-1]
    fn = frame.get("fn", "")
    return (
        obj.startswith("_native")
        or fn.startswith(("fdn_", "__pyx_"))
        or "/csrc/" in frame.get("dir", "") + "/"
    )


def describe(error: ET.Element) -> str:
    what = error.findtext("what") or error.findtext("xwhat/text") or "?"
    lines = [f"{error.findtext('kind')}: {what}"]
    for f in frames(error)[:25]:
        where = f.get("file", "")
        if where:
            where = f" ({f.get('dir', '')}/{where}:{f.get('line', '?')})"
        mark = "*" if is_ours(f) else " "
        lines.append(f"  {mark} {f.get('fn', '?')} in {f.get('obj', '?')}{where}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    root = ET.parse(argv[1]).getroot()
    errors = root.findall("error")
    ours = [e for e in errors if any(is_ours(f) for f in frames(e))]
    theirs = Counter(e.findtext("kind") for e in errors if e not in ours)
    leaks = [e for e in errors if (e.findtext("kind") or "").startswith("Leak_")]
    print(
        f"memcheck: {len(errors)} error records, {len(leaks)} of them definite leaks;"
        f" {len(ours)} in the native extension"
    )
    if theirs:
        noise = ", ".join(f"{kind} x{n}" for kind, n in sorted(theirs.items()))
        print(f"memcheck: ignored as CPython/libc noise: {noise}")
    for error in ours:
        print(describe(error))
    return 1 if ours else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
