#!/usr/bin/env bash
# Installs what building this workspace needs beyond the Rust toolchain, if it
# is missing. Today that is libclang (the `rocksdb` crate generates its
# bindings with bindgen). Debian/Ubuntu only; elsewhere, install libclang by
# hand and this script only checks for it.
set -euo pipefail

have_libclang() {
    [ -n "${LIBCLANG_PATH:-}" ] && return 0
    ldconfig -p 2>/dev/null | grep -q 'libclang\(-[0-9.]*\)\?\.so' && return 0
    # Not libclang-cpp*, which some images carry without the C API library.
    compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null 2>&1 && return 0
    compgen -G '/usr/lib/llvm-*/lib/libclang-[0-9]*.so*' >/dev/null 2>&1 && return 0
    return 1
}

if ! have_libclang; then
    if command -v apt-get >/dev/null 2>&1; then
        SUDO=""
        if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
        echo "setup: installing libclang-dev (needed to build the rocksdb crate)" >&2
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq libclang-dev >/dev/null
    else
        echo "setup: libclang is missing and apt-get is not available; install libclang (clang's shared library) and retry" >&2
        exit 1
    fi
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo is missing; install Rust 1.95 or newer (rustup)" >&2; exit 1; }
