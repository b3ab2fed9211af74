#!/usr/bin/env bash
# CI for the Python package, from a fresh machine: a venv, `pip install .` of the repository
# (maturin builds the pyo3 extension, an abi3 wheel), numpy and pytest, then the tests.
#
#   python/ci.sh            # from anywhere; exits non-zero on any failure
#
# Environment:
#   PYTHON                  interpreter for the venv (default python3; CPython >= 3.9)
#   FSLENS_VENV             where the venv goes (default target/python-venv, recreated)
#   CARGO_TARGET_DIR        honoured by the wheel build (reuse built dependencies)
#   FSLENS_BIN              the `fslens` binary the CLI comparisons run; default: built here
#                           with `cargo build --bin fslens` (a no-op after `cargo test`)
#   FSLENS_WITH_TORCH=1     also pip install torch and require the torch tests
#                           (otherwise they run when torch is importable, else skip)
#   FSLENS_RUST_TESTS=1     also run the Rust unit tests of python/src (cargo test --lib;
#                           links libpython, so it needs a Python built with a shared
#                           library)
#   FSLENS_REQUIRE_GPU=1    fail instead of skipping the GPU-backend tests without an adapter
# pytest's exit status 5 ("no tests ran") is a failure here like any other.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
mkdir -p target

PYTHON=${PYTHON:-python3}
VENV=${FSLENS_VENV:-target/python-venv}

echo "== venv $VENV ($("$PYTHON" --version))"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PY="$(cd "$VENV" && pwd)/bin/python"
"$PY" -m pip install --quiet --upgrade pip
"$PY" -m pip install --quiet numpy pytest

echo "== pip install . (maturin, release build of python/Cargo.toml)"
time "$PY" -m pip install .

if [ "${FSLENS_WITH_TORCH:-0}" = 1 ]; then
    "$PY" -m pip install --quiet torch
    export FSLENS_REQUIRE_TORCH=1
fi

if [ "${FSLENS_RUST_TESTS:-0}" = 1 ]; then
    echo "== cargo test --release --lib (python/Cargo.toml)"
    PYO3_PYTHON="$PY" cargo test --release --lib --manifest-path python/Cargo.toml
fi

if [ -z "${FSLENS_BIN:-}" ]; then
    echo "== cargo build --bin fslens (for the CLI comparisons)"
    cargo build --bin fslens
    FSLENS_BIN="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/debug/fslens"
fi
export FSLENS_BIN FSLENS_REQUIRE_BIN=1

echo "== pytest python/tests (the installed package, not the source tree)"
# From outside the source tree, so that `import fslens` is the installed wheel.
cd python/tests
set +e
"$PY" -m pytest -p no:cacheprovider -rs "$@" . 2>&1 | tee "$ROOT/target/python-pytest.log"
status=${PIPESTATUS[0]}
set -e
if [ "$status" -ne 0 ]; then
    echo "python tests FAILED (pytest exit status $status)" >&2
    exit "$status"
fi
echo "python tests passed"
