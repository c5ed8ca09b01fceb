#!/usr/bin/env bash
# cibuildwheel's before-all (see [tool.cibuildwheel] in pyproject.toml): the libevent, and where the
# image has no OpenSSL 3 the OpenSSL, that levent's wheels bundle, built as SHARED libraries from
# pinned release tarballs checked against their sha256. Installs into $PREFIX (default /usr/local),
# where setup.py finds them through pkg-config; auditwheel / delocate then graft the shared libraries
# into the wheel. Never a static libevent: libevent keeps process-wide state (threading and log
# callbacks, signal handling) that every levent extension module must share.
#
# Runs as root in the manylinux_2_28 (AlmaLinux 8) and musllinux (Alpine) containers, and as the CI
# user on macOS (PREFIX must then be writable: cibuildwheel's macOS config sets it).
set -euo pipefail

PREFIX="${PREFIX:-/usr/local}"
JOBS="$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)"

# libevent 2.1.12-stable: sha256 as published with the release and in Debian's libevent
# 2.1.12-stable-*.dsc (Debian's .orig.tar.gz is the upstream tarball; checked against it).
# Upstream's 2.1.13-stable carries security fixes: move to it once its tarball's sha256 has been
# verified from a machine that can download it (release-2.1.13-stable on GitHub), and check that
# levent's struct event size check (_core.pyx) still passes.
LIBEVENT_VERSION=2.1.12-stable
LIBEVENT_SHA256=92e6de1be9ec176428fd2367677e61ceffc2ee1cb119035037a27d346b0403bb
LIBEVENT_URL="https://github.com/libevent/libevent/releases/download/release-$LIBEVENT_VERSION/libevent-$LIBEVENT_VERSION.tar.gz"

# OpenSSL 3.0 (LTS; levent needs 3.0+): only where the system has none (manylinux_2_28 ships 1.1.1,
# macOS's Homebrew builds target the runner's own macOS). sha256 checked against Debian's
# openssl_3.0.19.orig.tar.gz, the upstream tarball (it carries upstream's signature).
OPENSSL_VERSION=3.0.19
OPENSSL_SHA256=fa5a4143b8aae18be53ef2f3caf29a2e0747430b8bc74d32d88335b94ab63072
OPENSSL_URL="https://github.com/openssl/openssl/releases/download/openssl-$OPENSSL_VERSION/openssl-$OPENSSL_VERSION.tar.gz"

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

sha256() {
    if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

# Downloads $1 to $2 (or uses $2 if it is already there, e.g. a cached tarball) and checks its sha256 $3.
fetch() {
    local url="$1" file="$2" want="$3" got
    [ -f "$file" ] || curl -fsSL --retry 3 -o "$file" "$url" || die "download failed: $url"
    got="$(sha256 "$file")"
    [ "$got" = "$want" ] || die "$file: sha256 $got, expected $want"
    log "$(basename "$file"): sha256 ok"
}

# System packages: a C toolchain, pkg-config, and OpenSSL 3 where the distribution has it.
install_system_packages() {
    if command -v apk >/dev/null 2>&1; then            # musllinux (Alpine): OpenSSL 3
        apk add --no-cache curl openssl-dev pkgconf perl make
    elif command -v dnf >/dev/null 2>&1; then          # manylinux_2_28: its openssl-devel is 1.1.1
        dnf install -y curl pkgconfig perl-IPC-Cmd perl-Pod-Html make
    elif command -v yum >/dev/null 2>&1; then
        yum install -y curl pkgconfig perl-IPC-Cmd make
    fi
}

have_openssl3() {
    PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}" \
        pkg-config --atleast-version=3.0 openssl 2>/dev/null
}

build_openssl() {
    fetch "$OPENSSL_URL" "openssl-$OPENSSL_VERSION.tar.gz" "$OPENSSL_SHA256"
    rm -rf "openssl-$OPENSSL_VERSION" && tar xzf "openssl-$OPENSSL_VERSION.tar.gz"
    (
        cd "openssl-$OPENSSL_VERSION"
        # --libdir=lib: one folder on every platform (not lib64); no-tests/no-docs: only the libraries.
        ./Configure --prefix="$PREFIX" --openssldir="$PREFIX/ssl" --libdir=lib shared no-tests no-docs
        make -j"$JOBS" >/dev/null
        make install_sw >/dev/null
    )
    log "OpenSSL $OPENSSL_VERSION installed in $PREFIX"
}

build_libevent() {
    fetch "$LIBEVENT_URL" "libevent-$LIBEVENT_VERSION.tar.gz" "$LIBEVENT_SHA256"
    rm -rf "libevent-$LIBEVENT_VERSION" && tar xzf "libevent-$LIBEVENT_VERSION.tar.gz"
    (
        cd "libevent-$LIBEVENT_VERSION"
        PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}" \
            ./configure --prefix="$PREFIX" --enable-shared --disable-static --disable-samples \
            --disable-libevent-regress --disable-debug-mode --enable-openssl
        make -j"$JOBS" >/dev/null
        make install >/dev/null
    )
    # The license travels with the wheel (pyproject's license-files takes LICENSES/*): this copy is
    # the bundled release's own.
    if [ -n "${LEVENT_SOURCE:-}" ]; then
        cp "libevent-$LIBEVENT_VERSION/LICENSE" "$LEVENT_SOURCE/LICENSES/libevent-LICENSE"
    fi
    log "libevent $LIBEVENT_VERSION installed in $PREFIX"
}

main() {
    mkdir -p "${BUILD_DIR:=/tmp/levent-deps}"
    cd "$BUILD_DIR"
    [ "$(uname -s)" = Darwin ] || install_system_packages
    if [ "$(uname -s)" = Darwin ] || ! have_openssl3; then
        build_openssl
    fi
    have_openssl3 || die "no OpenSSL 3 found by pkg-config after the build"
    build_libevent
}

main "$@"
