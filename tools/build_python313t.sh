#!/usr/bin/env bash
# Build a free-threaded CPython 3.13 ("3.13t", configure --disable-gil) from
# Debian's python3.13 source package. No registry ships such an interpreter
# for this platform, and the native backend's per-shard critical sections only
# do anything without the GIL, so this is how its free-threaded build is
# tested (tools/freethreaded_tests.sh, tools/threads_bench.py).
#
#   tools/build_python313t.sh [DIR]     (default /tmp/foundation-py313t)
#
# Everything lives under DIR (source in DIR/src, interpreter in DIR/prefix);
# nothing is written to the repository. Idempotent: a second run finds the
# interpreter, checks it and prints its path. The last line printed is the
# interpreter's path, so scripts can do PY=$(tools/build_python313t.sh | tail -1).
#
# Needs root (or the packages already installed, and a deb-src entry for
# Debian trixie): the source comes with `apt-get source --download-only` from
# a deb-src line for trixie that this script adds under
# /etc/apt/sources.list.d/ (bookworm only carries 3.11); the build
# dependencies are installed by name, since `apt-get build-dep` for trixie's
# package does not resolve on bookworm. Only the upstream tarball is built
# (Debian's patches are not applied). Takes 3-4 minutes on 2 idle cores;
# BUILD_TIMEOUT (seconds, default 2400) bounds configure + make.
set -euo pipefail

DIR=${1:-/tmp/foundation-py313t}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
PREFIX="$DIR/prefix"
PY="$PREFIX/bin/python3.13t"
BUILD_TIMEOUT=${BUILD_TIMEOUT:-2400}
SOURCES=/etc/apt/sources.list.d/foundation-trixie-src.sources
# what configure needs for the modules pip, venv, ssl and the test suite use
DEPS="build-essential pkg-config libssl-dev zlib1g-dev libffi-dev libbz2-dev liblzma-dev \
libsqlite3-dev uuid-dev"

check() {  # the interpreter is free-threaded, runs without the GIL, and has ssl/zlib/ctypes
    "$PY" - <<'EOF'
import ctypes, ssl, sys, sysconfig, zlib  # noqa: F401  (pip and cffi need them)
assert sysconfig.get_config_var("Py_GIL_DISABLED") == 1, "not a --disable-gil build"
assert not sys._is_gil_enabled(), "the GIL is enabled"
print(f"free-threaded {sys.version.split()[0]}: Py_GIL_DISABLED=1, GIL disabled")
EOF
}

if [ -x "$PY" ] && check; then
    echo "$PY"
    exit 0
fi

apt_get() {
    if [ "$(id -u)" != 0 ]; then
        echo "error: need root for apt-get $* (or install it by hand)" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get -q -o DPkg::Lock::Timeout=300 "$@"
}

# shellcheck disable=SC2086
missing=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' $DEPS 2>/dev/null \
    | awk '$2 != "installed" {print $1}' || true)
for pkg in $DEPS; do  # dpkg-query prints nothing for a package it has never seen
    dpkg-query -W "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
done
if [ -n "${missing// /}" ]; then
    echo "=== installing build dependencies:" $missing
    apt_get update >/dev/null
    # shellcheck disable=SC2086
    apt_get install -y --no-install-recommends $missing >/dev/null
fi

SRC=$(ls -d "$DIR"/src/Python-3.13.*/ 2>/dev/null | head -1 || true)
if [ -z "$SRC" ]; then
    if [ ! -f "$SOURCES" ] && ! grep -rqs "deb-src.*trixie\|^Suites:.*trixie" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "=== adding a deb-src entry for Debian trixie: $SOURCES"
        if [ "$(id -u)" != 0 ]; then
            echo "error: need root to add $SOURCES" >&2
            exit 1
        fi
        cat >"$SOURCES" <<'EOF'
# added by trio-foundation's tools/build_python313t.sh: source packages only
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        apt_get update >/dev/null
    fi
    mkdir -p "$DIR/src"
    echo "=== apt-get source --download-only python3.13"
    # (downloaded as root: the sandbox user _apt cannot write to DIR)
    fetch() { (cd "$DIR/src" && apt_get -o APT::Sandbox::User=root source --download-only python3.13 >/dev/null); }
    fetch || {
        # the package lists may predate the deb-src entry
        apt_get update >/dev/null
        fetch
    }
    ORIG=$(ls "$DIR"/src/python3.13_*.orig.tar.* | head -1)
    echo "=== unpacking $(basename "$ORIG")"
    tar -C "$DIR/src" -xf "$ORIG"
    SRC=$(ls -d "$DIR"/src/Python-3.13.*/ | head -1)
fi
SRC=${SRC%/}

echo "=== building $(basename "$SRC") with --disable-gil into $PREFIX (log: $DIR/build.log)"
start=$(date +%s)
rm -rf "$DIR/build" "$PREFIX"
mkdir -p "$DIR/build"
(
    cd "$DIR/build"
    timeout "$BUILD_TIMEOUT" "$SRC/configure" --disable-gil --prefix="$PREFIX" \
        --with-ensurepip=install
    timeout "$BUILD_TIMEOUT" make -j"$(nproc)"
    # altinstall: python3.13t and pip3.13t only, no unversioned names
    timeout "$BUILD_TIMEOUT" make altinstall
) >"$DIR/build.log" 2>&1 || {
    tail -40 "$DIR/build.log"
    echo "error: the 3.13t build failed (full log: $DIR/build.log)" >&2
    exit 1
}
echo "=== built in $(($(date +%s) - start)) s"
check
echo "$PY"
