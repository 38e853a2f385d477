#!/usr/bin/env bash
# Boot the Sluice demo under QEMU with its serial console on this terminal.
# Everything after the script name goes to `cargo xtask run`
# (`./qemu-run.sh --help` lists it; `./qemu-run.sh --gdb` waits for gdb).
set -euo pipefail
cd "$(dirname "$0")"

# rustup's default install location, in case this shell has not sourced it.
if [ -d "$HOME/.cargo/bin" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v rustup >/dev/null 2>&1; then
    echo "qemu-run.sh: rustup not found; install it from https://rustup.rs" >&2
    exit 1
fi

# Host builds (xtask itself) need a C linker.
if ! command -v cc >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "qemu-run.sh: no C linker (cc); installing Debian's gcc and libc6-dev"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update
        apt-get install -y --no-install-recommends gcc libc6-dev
    else
        echo "qemu-run.sh: no C linker (cc); install one: sudo apt-get install gcc libc6-dev" >&2
        exit 1
    fi
fi

# The pinned toolchain with its x86_64-unknown-none target: rustup installs
# rust-toolchain.toml's targets only on an explicit `rustup toolchain install`.
if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-none; then
    rustup toolchain install
fi

exec cargo xtask run "$@"
