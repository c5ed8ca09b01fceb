#!/usr/bin/env bash
# levent's main job: the foundation benchmark (levent vs asyncio vs a pure-Python selectors loop).
#
#   bash ci/bench.sh            # = python benchmarks/foundation.py --quick
#   bash ci/bench.sh [ARGS...]  # e.g. no --quick: bash ci/bench.sh --repeats 5
#
# Same setup as ci/test.sh (system packages when missing, fresh venv, non-editable pip install .),
# with the venv at .venv-bench. Environment: PYTHON (default python3), VENV (default .venv-bench).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv-bench}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
# shellcheck source=ci/common.sh
source "$ROOT/ci/common.sh"

ensure_build_deps
make_venv
install_levent ""
check_installed_levent "$ROOT"

if [ "$#" -eq 0 ]; then
    set -- --quick
fi
cd "$ROOT"
exec "$VENV/bin/python" benchmarks/foundation.py "$@"
