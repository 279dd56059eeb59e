# shellcheck shell=bash
# Sourced by tools/sanitize.sh and tools/valgrind_memcheck.sh: build the
# native extension in a COPY of the source tree, never in the tree itself
# (a developer's own build there stays untouched, and a plain `import
# foundation` from the tree never picks up an instrumented module).
#
# Functions (each exits the calling script with a message on failure):
#   fdn_dest ROOT DEST TOOL     print DEST made absolute; refuse a DEST inside
#                               ROOT, or a non-empty one this never made
#   fdn_check_python PY TOOL    PY has the test extra, Cython, setuptools>=77
#   fdn_copy_build ROOT DEST PY TOOL
#                               rsync ROOT -> DEST, then setup.py build_ext
#                               --inplace with FOUNDATION_DEBUG_BUILD=1
#                               (-O0 -g3) and the caller's CC/CFLAGS/LDFLAGS;
#                               the log is DEST/build.log
#   fdn_check_import DEST PY    the copy's module is the one imported (run it
#                               with the caller's LD_PRELOAD/PYTHONPATH)

MARKER=.foundation-build-copy

fdn_dest() {
    local root=$1 dest=$2 tool=$3
    mkdir -p "$dest"
    dest=$(cd "$dest" && pwd)
    case "$dest" in
        "$root" | "$root"/*)
            echo "$tool: DEST must be outside the source tree ($root)" >&2
            exit 2
            ;;
    esac
    # rsync --delete empties DEST of anything else: only ever into an empty
    # directory or one made by these scripts before (marked)
    if [ -n "$(ls -A "$dest")" ] && [ ! -e "$dest/$MARKER" ]; then
        echo "$tool: $dest is neither empty nor a previous build copy; refusing" >&2
        exit 2
    fi
    echo "$dest"
}

fdn_check_python() {
    local py=$1 tool=$2
    # setuptools >= 77: pyproject.toml's `license = "Apache-2.0"` (a PEP 639
    # expression) is refused by older ones, e.g. a bare pyenv/Debian python3's
    "$py" - <<'EOF' || {
import Cython, pytest, setuptools, trio  # noqa: F401
assert int(setuptools.__version__.split(".")[0]) >= 77, setuptools.__version__
EOF
        echo "$tool: $py lacks the test extra, Cython or setuptools>=77; in a venv:" >&2
        echo "    pip install -e '.[test]' 'Cython>=3.1' 'setuptools>=77'   (or set PYTHON=...)" >&2
        exit 2
    }
}

fdn_copy_build() {
    local root=$1 dest=$2 py=$3 tool=$4
    command -v rsync >/dev/null || {
        echo "$tool: rsync not found (Debian: apt-get install -y rsync)" >&2
        exit 2
    }
    # The generated _native.c and any .so stay behind so both are rebuilt
    # from the copied sources; build/ too (other flags).
    rsync -a --delete \
        --exclude .git --exclude /build --exclude /dist --exclude '*.so' --exclude '*.o' \
        --exclude /src/foundation/registry/_native.c --exclude __pycache__ \
        --exclude .pytest_cache --exclude .hypothesis --exclude .mypy_cache \
        --exclude .ruff_cache --exclude .benchmarks --exclude /asv_bench/.asv \
        --exclude /fuzz/build --exclude "/$MARKER" --exclude /build.log \
        "$root"/ "$dest"/
    touch "$dest/$MARKER"
    # excluded paths survive --delete: clear a previous run's build so each
    # run compiles from scratch with this run's compiler and flags
    rm -rf "$dest/build" "$dest"/src/foundation/registry/_native.c \
        "$dest"/src/foundation/registry/_native*.so
    (
        cd "$dest"
        FOUNDATION_DEBUG_BUILD=1 FOUNDATION_REQUIRE_EXTENSIONS=1 \
            "$py" setup.py -q build_ext --inplace >"$dest/build.log" 2>&1
    ) || {
        tail -40 "$dest/build.log"
        echo "$tool: build failed (full log: $dest/build.log)" >&2
        exit 1
    }
}

fdn_check_import() {
    local dest=$1 py=$2
    "$py" - "$dest" <<'EOF'
import sys
import foundation.registry._native as n
from foundation.registry import NATIVE
dest = sys.argv[1]
print(f"imported {n.__file__}; NATIVE={NATIVE}")
assert n.__file__.startswith(dest), f"imported {n.__file__}, not the build copy in {dest}"
assert NATIVE, "the native backend is not in use"
EOF
}
