#!/usr/bin/env bash
# Runs ci/test.sh once per pyenv interpreter 3.9 ... 3.13, each in its own venv (.venv-test-3.X).
# A version pyenv does not have is skipped with the reason; exits non-zero if any run failed
# (or if no interpreter was found at all).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSIONS=(3.9 3.10 3.11 3.12 3.13)

if command -v pyenv >/dev/null 2>&1; then
    PYENV_ROOT_DIR="$(pyenv root)"
else
    PYENV_ROOT_DIR="${PYENV_ROOT:-$HOME/.pyenv}"
fi

declare -A status
failed=0
ran=0
for v in "${VERSIONS[@]}"; do
    # The newest installed patch release of 3.X (3.1.* would not match 3.10.x: the dot is literal).
    py="$(for p in "$PYENV_ROOT_DIR/versions/$v".*/bin/python3; do [ -x "$p" ] && echo "$p"; done | sort -V | tail -n 1)"
    if [ -z "$py" ] || [ ! -x "$py" ]; then
        status[$v]="SKIPPED (no $PYENV_ROOT_DIR/versions/$v.*/bin/python3)"
        printf '\n==> Python %s: skipped, no %s/versions/%s.*/bin/python3\n' "$v" "$PYENV_ROOT_DIR" "$v"
        continue
    fi
    printf '\n==> Python %s: %s\n' "$v" "$py"
    ran=$((ran + 1))
    start=$SECONDS
    if PYTHON="$py" VENV=".venv-test-$v" bash "$ROOT/ci/test.sh"; then
        status[$v]="passed ($((SECONDS - start)) s, $py)"
    else
        status[$v]="FAILED ($((SECONDS - start)) s, $py)"
        failed=1
    fi
done

printf '\n==> matrix summary\n'
for v in "${VERSIONS[@]}"; do
    printf '  %-5s %s\n' "$v" "${status[$v]}"
done
if [ "$ran" -eq 0 ]; then
    echo "no interpreter found: nothing was tested" >&2
    exit 1
fi
exit "$failed"
