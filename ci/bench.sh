#!/usr/bin/env bash
# levent's main job: the benchmarks. foundation.py: timers and socketpair ping-pong, levent vs asyncio
# vs a pure-Python selectors loop; streams.py: TCP echo servers (C raw, C bufferevent, asyncio, levent)
# under a C load generator, reporting server CPU per echo.
#
#   bash ci/bench.sh            # quick runs of both (about 2 minutes)
#   bash ci/bench.sh --full     # full runs of both (about 5 minutes)
#   bash ci/bench.sh [ARGS...]  # foundation.py with these arguments, e.g. --repeats 5
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

cd "$ROOT"
case "${1:-}" in
"")     # the quick run: timers and ping-pong, then TCP echo servers (about 2 minutes)
    "$VENV/bin/python" benchmarks/foundation.py --quick
    exec "$VENV/bin/python" benchmarks/streams.py --duration 2 --repeats 1 ;;
--full)
    "$VENV/bin/python" benchmarks/foundation.py
    exec "$VENV/bin/python" benchmarks/streams.py ;;
*)      # any other arguments go to the foundation benchmark
    exec "$VENV/bin/python" benchmarks/foundation.py "$@" ;;
esac
