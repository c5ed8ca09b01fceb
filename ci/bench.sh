#!/usr/bin/env bash
# levent's main job: the benchmark suite, `python -m levent bench` (levent.bench): TCP echo servers
# (C libevent, levent, asyncio, uvloop, a pure-Python loop) under a C load generator, and timer and
# callback workloads; a table in the terminal, levent-bench.json and a plot.
#
#   bash ci/bench.sh            # --quick (under a minute once installed)
#   bash ci/bench.sh --full     # every cell, 3 repeats (about 10 minutes on 2 cores)
#   bash ci/bench.sh ARGS...    # any arguments of python -m levent bench (see --help)
#
# Same setup as ci/test.sh (system packages when missing, fresh venv, non-editable pip install),
# with the venv at .venv-bench and the bench extra (uvloop). Environment: PYTHON (default python3),
# VENV (default .venv-bench).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv-bench}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
# shellcheck source=ci/common.sh
source "$ROOT/ci/common.sh"

ensure_build_deps
make_venv
install_levent "[bench]"
check_installed_levent "$ROOT"

cd "$ROOT"
if [ $# -eq 0 ]; then
    set -- --quick
fi
exec "$VENV/bin/python" -m levent bench "$@"
