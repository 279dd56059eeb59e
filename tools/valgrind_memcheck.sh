#!/usr/bin/env bash
# Run the native registry under valgrind memcheck: invalid reads/writes,
# uses of uninitialised memory, bad frees and definite leaks in csrc/ and the
# Cython binding, on tools/memcheck_workload.py (every path once: growth,
# shrink, collisions, owner removal, bad keys, re-entrant __eq__, injected
# allocation failures, events, a GC cycle through the table, threads).
#
# It complements tools/sanitize.sh (ASan finds the same classes of bugs
# faster but needs an instrumented build; memcheck also sees uninitialised
# reads and checks the very code that ships) and tests/native/test_leaks.py.
#
# CPython's own noise (memory it never frees at exit, and so on) is not
# suppressed by a list that would rot with each Python release: valgrind
# writes XML, and tools/memcheck_filter.py fails only on records with a frame
# in _native*.so, fdn_* or __pyx_* (leaks: definite only).
#
# Needs: valgrind (Debian: apt-get install -y valgrind), gcc, rsync, and a
#   Python (PYTHON, default python3 on PATH) with the test extra, Cython and
#   setuptools>=77 (see tools/sanitize.sh), or --installed.
# Takes: ~20 s to build, then ~30-60 s under memcheck.
#
# Usage:
#   tools/valgrind_memcheck.sh [DEST]    build a -O0 -g3 copy in DEST (default
#                                        a new /tmp/foundation-memcheck.XXXXXX,
#                                        kept, printed) and run on it
#   tools/valgrind_memcheck.sh --installed
#                                        no build: check the extension PYTHON
#                                        imports (e.g. a wheel; -O3, so stacks
#                                        are less precise)
# Output: a summary (our errors with their stacks, CPython's counted), and
#   valgrind's full report in DEST/memcheck.xml. (CPython 3.11 itself shows
#   ~30 UninitValue/UninitCondition records from maybe_small_long(), a known
#   false positive on zero-digit ints; they are counted as noise.)
# Exit status: 1 on any memcheck error in our code, or if the workload failed.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}

command -v valgrind >/dev/null || {
    echo "valgrind_memcheck.sh: valgrind not found (Debian: apt-get install -y valgrind)" >&2
    exit 2
}

if [ "${1:-}" = "--installed" ]; then
    OUT=$(mktemp -d /tmp/foundation-memcheck.XXXXXX)
    echo "=== memcheck: the installed extension; output in $OUT"
    (cd "$OUT" && "$PY" -c 'import foundation.registry._native as n; print("using", n.__file__)')
else
    # shellcheck source=tools/_build_copy.sh
    . "$ROOT/tools/_build_copy.sh"
    OUT=$(fdn_dest "$ROOT" "${1:-$(mktemp -d /tmp/foundation-memcheck.XXXXXX)}" \
        valgrind_memcheck.sh)
    fdn_check_python "$PY" valgrind_memcheck.sh
    echo "=== memcheck: copying $ROOT -> $OUT; building -O0 -g3 (no sanitizers)"
    # no inherited sanitizer or optimisation flags: memcheck and ASan
    # cannot share a process, and -O0 keeps every line in the stacks
    CFLAGS="" LDFLAGS="" CC=${CC:-gcc} fdn_copy_build "$ROOT" "$OUT" "$PY" valgrind_memcheck.sh
    export PYTHONPATH="$OUT/src${PYTHONPATH:+:$PYTHONPATH}"
    (cd "$OUT" && fdn_check_import "$OUT" "$PY")
fi

# PYTHONMALLOC=malloc: every object and PyMem buffer is its own malloc block,
# so memcheck sees each (pymalloc's arenas would hide overruns and make its
# reads of freed pool memory look like errors).
export PYTHONMALLOC=malloc
export PYTHONDONTWRITEBYTECODE=1
export FOUNDATION_REQUIRE_EXTENSIONS=1
unset FOUNDATION_NO_EXTENSIONS FOUNDATION_BACKEND LD_PRELOAD

echo "=== memcheck: valgrind --tool=memcheck $PY tools/memcheck_workload.py"
status=0
# --errors-for-leak-kinds=definite: "possibly lost" / "still reachable" are
# CPython's interned strings, type objects and caches at exit.
# --error-exitcode stays 0: the filter decides, and only on our frames.
(cd "$OUT" && valgrind --tool=memcheck --leak-check=full \
    --show-leak-kinds=definite --errors-for-leak-kinds=definite \
    --num-callers=40 --read-inline-info=yes --track-origins=yes \
    --xml=yes --xml-file="$OUT/memcheck.xml" \
    "$PY" "$ROOT/tools/memcheck_workload.py") || status=$?
if [ "$status" -ne 0 ]; then
    echo "=== memcheck: the workload itself failed (exit $status); report $OUT/memcheck.xml"
    exit 1
fi
if ! "$PY" "$ROOT/tools/memcheck_filter.py" "$OUT/memcheck.xml"; then
    echo "=== memcheck: FAILED: errors in the native extension (* frames above);" \
        "full report $OUT/memcheck.xml"
    exit 1
fi
echo "=== memcheck: passed, nothing in the native extension (report $OUT/memcheck.xml)"
