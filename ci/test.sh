#!/usr/bin/env bash
# levent's test command: bash ci/test.sh
#
# On a fresh Debian/Ubuntu machine (Python 3.9+): installs libevent-dev, libssl-dev and pkg-config
# when pkg-config does not find libevent/openssl (apt-get, through sudo when not root, never
# upgrading installed packages), makes a fresh venv, installs levent into it non-editable
# (pip install ".[test]" builds the wheel) and runs the tests against that installed copy.
#
# Environment: PYTHON (default python3) is the interpreter; VENV (default .venv-test, relative to
# the repo root) the venv folder; PYTEST_ARGS extra pytest arguments (word-split).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv-test}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
# shellcheck source=ci/common.sh
source "$ROOT/ci/common.sh"

ensure_build_deps
make_venv
install_levent "[test]"

# The tests must import the installed levent: the package lives under src/, which is never put on
# sys.path here (python -m pytest adds only the repo root, which has no levent/), and the plugin
# below checks it again after collection.
check_installed_levent "$ROOT"

cd "$ROOT"
rc=0
# shellcheck disable=SC2086
PYTHONPATH="$ROOT/ci${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" -m pytest tests -q \
    --rootdir "$ROOT" -p no:cacheprovider -p levent_ci_plugin ${PYTEST_ARGS:-} || rc=$?
case "$rc" in
0) log "tests passed" ;;
5) log "FAILED: pytest collected no tests (exit 5)" ;;
*) log "FAILED: pytest exit code $rc" ;;
esac
exit "$rc"
