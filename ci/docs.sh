#!/usr/bin/env bash
# levent's documentation build: bash ci/docs.sh
#
# Builds the user guide and the API reference (docs/) with Sphinx into docs/_build/html. As ci/test.sh
# does, it installs levent non-editable into a venv (pip install ".[docs]" builds the wheel and adds
# Sphinx from PyPI), so autodoc documents the built package, not the source tree. Warnings are errors
# (-W): a broken reference or docstring fails the build.
#
# Environment: PYTHON (default python3); VENV (default .venv-docs, relative to the repo root);
# SPHINX_ARGS extra sphinx-build arguments (word-split).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv-docs}"
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
# shellcheck source=ci/common.sh
source "$ROOT/ci/common.sh"

ensure_build_deps
make_venv
install_levent "[docs]"
check_installed_levent "$ROOT/docs"

OUT="$ROOT/docs/_build/html"
rm -rf "$OUT"
log "sphinx-build -W docs -> $OUT"
# shellcheck disable=SC2086
(cd "$ROOT/docs" && "$VENV/bin/python" -m sphinx -W --keep-going -n -b html ${SPHINX_ARGS:-} . "$OUT")
log "docs built: $OUT/index.html"
