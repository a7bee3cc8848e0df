#!/usr/bin/env bash
# Builds the Python package's manylinux wheel (py3-none-manylinux_2_28_x86_64: glibc 2.28
# or newer, as RHEL 8, Debian 10 and Ubuntu 20.04 have) with zig, as no manylinux
# container runs here: the engine in release, every transport, OpenSSL and zlib built in
# (`vendored`), so the wheel needs neither on the target.
#
# Not manylinux2014 (glibc 2.17): librdkafka uses C11 threads (mtx_lock, …) when the C
# headers declare them, and zig's do, but glibc has them only from 2.28, so a 2.17 link
# fails; rdkafka-sys's build passes librdkafka's configure no flag to turn them off.
#
#   scripts/wheel.sh [OUT_DIR]        # default target/wheels
#
# Needs `pip install maturin==1.16.0 ziglang==0.17.1` (a venv's bin on PATH will do).
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mkdir -p "${1:-target/wheels}" && cd "${1:-target/wheels}" && pwd)"
command -v maturin >/dev/null || { echo "error: maturin is not on PATH (pip install maturin==1.16.0 ziglang==0.17.1)" >&2; exit 2; }
python3 -c 'import ziglang' 2>/dev/null || python -c 'import ziglang' 2>/dev/null \
  || { echo "error: the ziglang package is missing (pip install ziglang==0.17.1)" >&2; exit 2; }
start=$(date +%s)
# maturin reads python/pyproject.toml, whose manifest-path names the CLI crate; its
# --features replaces the pyproject's list, so `full` is named again.
(cd python && maturin build --release --locked --zig --compatibility manylinux_2_28 \
  --features full,vendored --out "$out")
echo "built in $(( $(date +%s) - start )) s:"
ls -l "$out"/roundtrip-*.whl
