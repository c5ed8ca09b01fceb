# shellcheck shell=bash
# Shared by ci/test.sh and ci/bench.sh (sourced, not run): system packages, venv, install.
# Expects ROOT (the repo root), PYTHON (the interpreter) and VENV (the venv folder) to be set.

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

PKG_CONFIG_MODULES=(libevent_core libevent_extra libevent_openssl libevent_pthreads openssl)
APT_UPDATED=0

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root or sudo to run: $*"
    fi
}

# Installs Debian/Ubuntu packages, never upgrading what is installed; 'apt-get update' once per run.
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install these yourself: $*"
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-upgrade "$@"
}

have_build_deps() {
    command -v pkg-config >/dev/null 2>&1 && pkg-config --exists "${PKG_CONFIG_MODULES[@]}"
}

# On macOS, Homebrew's openssl (keg-only) and libevent are not on pkg-config's default path.
add_homebrew_pkg_config_path() {
    command -v brew >/dev/null 2>&1 || return 0
    local formula prefix
    for formula in openssl@3 openssl libevent; do
        prefix="$(brew --prefix "$formula" 2>/dev/null)" || continue
        if [ -d "$prefix/lib/pkgconfig" ]; then
            PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
        fi
    done
    export PKG_CONFIG_PATH
}

# libevent 2.1+ and OpenSSL development files, and pkg-config to find them.
ensure_build_deps() {
    if have_build_deps; then
        log "libevent $(pkg-config --modversion libevent_core), openssl $(pkg-config --modversion openssl) found by pkg-config"
        return 0
    fi
    case "$(uname -s)" in
    Darwin)
        add_homebrew_pkg_config_path
        have_build_deps || die "libevent/openssl not found by pkg-config: brew install libevent openssl pkg-config, and set PKG_CONFIG_PATH (see README.md)"
        ;;
    *)
        apt_install libevent-dev libssl-dev pkg-config
        have_build_deps || die "pkg-config still does not find: ${PKG_CONFIG_MODULES[*]}"
        ;;
    esac
    log "libevent $(pkg-config --modversion libevent_core), openssl $(pkg-config --modversion openssl) found by pkg-config"
}

# A fresh venv at $VENV made by $PYTHON; installs python3-venv when venv/ensurepip is missing.
make_venv() {
    command -v "$PYTHON" >/dev/null 2>&1 || die "interpreter not found: $PYTHON"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' || die "$PYTHON is older than Python 3.9"
    log "creating $VENV with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    if ! "$PYTHON" -m venv --clear "$VENV"; then
        rm -rf "$VENV"
        [ "$(uname -s)" = Darwin ] && die "'$PYTHON -m venv' failed"
        log "'$PYTHON -m venv' failed: installing python3-venv"
        local pyver
        pyver="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
        apt_install python3-venv
        if ! "$PYTHON" -m venv --clear "$VENV"; then
            # A non-default python3.X from Debian has its own python3.X-venv.
            rm -rf "$VENV"
            apt_install "python${pyver}-venv"
            "$PYTHON" -m venv --clear "$VENV" || die "'$PYTHON -m venv' still fails"
        fi
    fi
}

# Non-editable install of the repo into the venv (pip builds a wheel with build isolation);
# $1: extras such as "[test]".
install_levent() {
    local spec=".${1:-}"
    log "pip install $spec into $VENV"
    (cd "$ROOT" && "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q "$spec")
}

# Prints where `import levent` resolves from directory $1 and fails unless it is the venv's site-packages.
check_installed_levent() {
    (cd "$1" && "$VENV/bin/python" - <<'EOF'
import os, sys, sysconfig
import levent
where = os.path.realpath(levent.__file__)
dirs = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
print("levent.__file__ =", levent.__file__, "| libevent", levent.libevent_version().string)
if not any(where.startswith(d + os.sep) for d in dirs):
    sys.exit("error: levent resolves to %s, not to the venv's site-packages (%s)" % (where, ", ".join(sorted(dirs))))
EOF
    )
}
