#!/usr/bin/env bash
# Boots one Sluice test guest as dom0 on real Xen 4.17 under QEMU TCG and
# prints its TAP lines: the ABI is Xen's, so every single-domain guest must
# give the same verdicts there as under Sluice.
#
# `cargo xtask test --xen` does this for every single-domain scenario, with
# the scenario's vcpus, and compares the verdicts with Sluice's; this script
# boots any guest by hand, with two vcpus, scenario or not.
#
#   tests/xen-oracle.sh <guest> [extra guest args...]
#   tests/xen-oracle.sh all      # every guest, one verdict line each
#
# Needs Debian's xen-hypervisor-4.17-amd64 (/boot/xen-4.17-amd64.gz) and
# qemu-system-x86_64. The guest gets `xen-oracle` on its command line, which
# makes a passing run end with SHUTDOWN_reboot: Xen halts (and QEMU keeps
# running) on a dom0 poweroff, while a reboot with -no-reboot ends QEMU. A
# failing run crashes dom0; Xen reboots 5 s later, which also ends QEMU.
#
# Exit status: 0 if the guest printed "# verdict: PASS" and no "not ok"
# line, 1 otherwise. The full serial log is kept in
# target/xen-oracle/<guest>.log. XEN_ORACLE_TIMEOUT overrides the 300 s limit;
# XEN_ORACLE_XEN overrides the Xen image; XEN_ORACLE_PROFILE=debug boots the
# debug build instead of the release one.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ]; then
    echo "usage: $0 <guest>|all [extra guest args...]" >&2
    exit 2
fi
guest=$1
shift

# `all`: every guest under tests/guests, one line each, then a total.
if [ "$guest" = all ]; then
    passed=0
    failed=0
    for dir in tests/guests/*/; do
        name=$(basename "$dir")
        if "$0" "$name" "$@" >/dev/null; then
            passed=$((passed + 1))
            verdict=PASS
        else
            failed=$((failed + 1))
            verdict=FAIL
        fi
        summary=$(grep -a '^# [0-9]* passed' "target/xen-oracle/$name.log" | tr -d '\r' || true)
        echo "$verdict $name ${summary:-# no summary}"
    done
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ]
    exit
fi

out=target/xen-oracle
mkdir -p "$out"
xen_gz=${XEN_ORACLE_XEN:-/boot/xen-4.17-amd64.gz}
if [ ! -e "$xen_gz" ]; then
    echo "$xen_gz not found: apt-get install --no-install-recommends xen-hypervisor-4.17-amd64" >&2
    exit 2
fi
case "$xen_gz" in
    *.gz) zcat "$xen_gz" >"$out/xen.elf" ;;
    *) cp "$xen_gz" "$out/xen.elf" ;;
esac

profile=${XEN_ORACLE_PROFILE:-release}
if [ "$profile" = release ]; then
    cargo build --quiet -p "guest-$guest" --target x86_64-unknown-none --release
else
    cargo build --quiet -p "guest-$guest" --target x86_64-unknown-none
fi
image=target/x86_64-unknown-none/$profile/guest-$guest
log=$out/$guest.log

start=$(date +%s.%N)
status=0
timeout "${XEN_ORACLE_TIMEOUT:-300}" qemu-system-x86_64 -accel tcg -cpu max -m 512 -smp 2 \
    -display none -serial stdio -no-reboot -kernel "$out/xen.elf" \
    -append "console=com1 com1=115200,8n1 dom0_mem=64M dom0_max_vcpus=2 loglvl=all guest_loglvl=all noreboot=false" \
    -initrd "$image xen-oracle $*" >"$log" 2>&1 </dev/null || status=$?
end=$(date +%s.%N)

# The guest's console_io output reaches the serial line without a prefix.
grep -aE '^(ok [0-9]|not ok [0-9]|1\.\.[0-9]|# |Bail out!)' "$log" | tr -d '\r' || true
echo "# xen-oracle: guest-$guest, QEMU exit $status, $(awk "BEGIN { printf \"%.1f\", $end - $start }") s, log $log"

if grep -aq '^# verdict: PASS' "$log" && ! grep -aq '^not ok' "$log"; then
    exit 0
fi
exit 1
