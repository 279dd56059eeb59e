#!/usr/bin/env bash
# Build the native registry with AddressSanitizer + UndefinedBehaviorSanitizer
# and run the registry and native test suites against that build.
#
# What it catches: out-of-bounds and use-after-free accesses in csrc/ and in
# the Cython binding (table slots, records, lists, the PyMem buffers of the
# scans), double frees, and undefined behaviour (signed overflow, misaligned
# or NULL access, bad shifts) in the same code. Leaks are NOT checked here
# (CPython leaks by design at exit, which drowns anything real): that is the
# job of tests/native/test_leaks.py and tools/valgrind_memcheck.sh.
#
# Where: never in the source tree. The tree is copied (rsync, without .git,
# build/ and any compiled module) to DEST, built there with `setup.py
# build_ext --inplace`, and the tests run from DEST with DEST/src first on
# sys.path, so a developer's own build in the source tree is left alone and
# edits made meanwhile in the source tree do not race with the build.
#
# Needs:
#   * gcc with libasan/libubsan (Debian: gcc, which pulls in libasan8 and
#     libubsan1), or CC=clang (Debian: clang libclang-rt-14-dev);
#   * rsync;
#   * a Python (PYTHON, default: python3 on PATH, so an activated venv's)
#     with the test extra, Cython and setuptools>=77 installed:
#       pip install -e '.[test]' 'Cython>=3.1' 'setuptools>=77'
# Takes: ~20 s to build, then ~4 minutes for the tests on 2 idle CPUs (~9
# on a loaded machine): ASan makes every malloc/free and memory access 2-3x
# slower, and PYTHONMALLOC=malloc sends every Python object through it.
# SANITIZE_MARKERS='not etcd and not slow' saves a little more.
#
# Usage:
#   tools/sanitize.sh [DEST]   DEST: where to copy and build (default: a new
#                              /tmp/foundation-sanitize.XXXXXX, kept, printed;
#                              reusable: the copy is refreshed, rebuilt)
# Environment:
#   PYTHON=python3             the interpreter (with the test extra + Cython)
#   CC=gcc|clang               the compiler (default gcc)
#   SANITIZE_MARKERS='not etcd'   pytest -m expression; CI can add 'and not
#                              slow' (the default runs the slow tests too)
#   extra arguments for pytest after `--`: tools/sanitize.sh DEST -- -x -k owner
# Exit status: pytest's (a sanitizer report aborts the process: non-zero).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

DEST=""
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
    DEST=$1
    shift
fi
if [ $# -gt 0 ] && [ "$1" = "--" ]; then
    shift
fi
DEST=${DEST:-$(mktemp -d /tmp/foundation-sanitize.XXXXXX)}
PY=${PYTHON:-python3}
CC=${CC:-gcc}
MARKERS=${SANITIZE_MARKERS:-not etcd}

# shellcheck source=tools/_build_copy.sh
. "$ROOT/tools/_build_copy.sh"
DEST=$(fdn_dest "$ROOT" "$DEST" sanitize.sh)
command -v "$CC" >/dev/null || {
    echo "sanitize.sh: '$CC' not found (see 'Needs' at the top of $0)" >&2
    exit 2
}
fdn_check_python "$PY" sanitize.sh

# The sanitizer runtime must be the first library in the process: CPython is
# not instrumented, so it is LD_PRELOADed. gcc ships libasan.so; clang ships
# libclang_rt.asan-<arch>.so (which has UBSan's runtime inside).
case "$("$CC" --version | head -1)" in
    *clang*)
        RUNTIME=$("$CC" -print-file-name="libclang_rt.asan-$(uname -m).so")
        # -shared-libasan: link the extension against the runtime DSO (clang
        # links the static runtime into executables only)
        SAN_FLAGS="-fsanitize=address,undefined -shared-libasan"
        ;;
    *)
        RUNTIME=$("$CC" -print-file-name=libasan.so)
        SAN_FLAGS="-fsanitize=address,undefined"
        ;;
esac
if [ ! -e "$RUNTIME" ]; then
    echo "sanitize.sh: no ASan runtime for $CC (got '$RUNTIME'); install libasan / libclang-rt-dev" >&2
    exit 2
fi
RUNTIME=$(readlink -f "$RUNTIME")

echo "=== sanitize: copying $ROOT -> $DEST; building with $CC $SAN_FLAGS (-O0 -g3)"
# -fno-sanitize-recover: a UBSan finding aborts instead of printing and going
# on, so it cannot scroll past unnoticed. -fno-omit-frame-pointer: usable
# stacks from the fast unwinder.
export CC
export CFLAGS="$SAN_FLAGS -fno-sanitize-recover=all -fno-omit-frame-pointer"
export LDFLAGS="$SAN_FLAGS"
fdn_copy_build "$ROOT" "$DEST" "$PY" sanitize.sh
SO=$(ls "$DEST"/src/foundation/registry/_native*.so)
# (no grep -q: it would stop reading early and fail the pipe under pipefail)
if ! nm -D "$SO" | grep __asan_ >/dev/null; then
    echo "sanitize.sh: $SO is not instrumented (no __asan_ symbols)" >&2
    exit 1
fi
echo "built $SO"

# PYTHONMALLOC=malloc: objects and PyMem buffers (the table's slots, records
# and lists) come straight from malloc, so ASan sees every one of them
# instead of pymalloc's arenas. detect_leaks=0: CPython does not free
# everything at exit. UBSan: stop at the first report, with a stack.
export PYTHONPATH="$DEST/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONMALLOC=malloc
export PYTHONDONTWRITEBYTECODE=1
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export FOUNDATION_REQUIRE_EXTENSIONS=1
unset FOUNDATION_NO_EXTENSIONS FOUNDATION_BACKEND

# The tests must import this copy's sanitized module, not an installed or
# editable foundation elsewhere: check before spending minutes on them.
cd "$DEST"
LD_PRELOAD="$RUNTIME" fdn_check_import "$DEST" "$PY"

echo "=== sanitize: pytest tests/registry tests/native -m '$MARKERS' (LD_PRELOAD=$RUNTIME)"
status=0
LD_PRELOAD="$RUNTIME" "$PY" -m pytest tests/registry tests/native -m "$MARKERS" \
    -p no:cacheprovider -q "$@" || status=$?
if [ "$status" -ne 0 ]; then
    echo "=== sanitize: FAILED (exit $status); a sanitizer report, if any, is above"
    echo "    (rebuild and rerun one test: tools/sanitize.sh $DEST -- -x -k NAME)"
else
    echo "=== sanitize: passed, no ASan/UBSan report"
fi
exit "$status"
