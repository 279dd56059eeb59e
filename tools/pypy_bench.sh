#!/usr/bin/env bash
# Run tools/pypy_bench.py (the pure twin's table layout vs the C core through
# cffi) under PyPy, and under CPython for reference.
#
# Installs what it needs on Debian/Ubuntu: pypy3 (Debian 12: PyPy 7.3.11,
# Python 3.9; its cffi is built in: the `cffi` module comes with pypy3-lib,
# `_cffi_backend` is compiled into the interpreter), pypy3-dev (the headers
# the API-mode module compiles against) and gcc. For the CPython run, $PYTHON
# (default: python3) needs cffi and its headers; in a virtualenv cffi is
# pip-installed, for Debian's system python3 python3-cffi/python3-dev are
# apt-installed. Set SKIP_CPYTHON=1 to run PyPy only.
#
# Usage: tools/pypy_bench.sh [pypy_bench.py options, e.g. --rounds 21]
# The _fdn_cffi modules are built under $FDN_CFFI_BUILD_DIR (default
# ${TMPDIR:-/tmp}/fdn_cffi_bench), one directory per interpreter; nothing is
# written into the source tree.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
BUILD=${FDN_CFFI_BUILD_DIR:-${TMPDIR:-/tmp}/fdn_cffi_bench}

SUDO=
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
fi

apt_install() {
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

need=()
command -v pypy3 >/dev/null 2>&1 || need+=(pypy3)
pypy_inc=$(pypy3 -c 'import sysconfig; print(sysconfig.get_paths()["include"])' 2>/dev/null || true)
[ -n "$pypy_inc" ] && [ -e "$pypy_inc/Python.h" ] || need+=(pypy3-dev)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}" >&2
    apt_install "${need[@]}"
fi
pypy3 -c 'import cffi, _cffi_backend' || {
    echo "pypy3 has no cffi (expected built in)" >&2
    exit 1
}

echo "== PyPy"
pypy3 tools/pypy_bench.py --build-dir "$BUILD/pypy" "$@"

if [ "${SKIP_CPYTHON:-0}" = 1 ]; then
    exit 0
fi
if ! "$PYTHON" -c 'import cffi' 2>/dev/null; then
    if "$PYTHON" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
        "$PYTHON" -m pip install -q cffi
    else
        apt_install python3-cffi python3-dev
    fi
fi
echo
echo "== CPython (reference)"
"$PYTHON" tools/pypy_bench.py --build-dir "$BUILD/cpython" "$@"
