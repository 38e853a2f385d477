//! The rflags a vcpu started by VCPUOP_initialise runs with (spec §7.11):
//! Xen 4.17 takes `user_regs.rflags` as given but moves IOPL to the
//! virtual IOPL and forces IF (arch_set_info_guest()), and its exit to the
//! guest clears IOPL and VM (x86_64/entry.S: restore_all_guest).

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sluice_guest::{Errno, check_eq, sched, smp, tap};

const CF: u64 = 1 << 0;
const RESERVED_1: u64 = 1 << 1;
const RESERVED_3: u64 = 1 << 3;
const ZF: u64 = 1 << 6;
const IF: u64 = 1 << 9;
const DF: u64 = 1 << 10;
const IOPL: u64 = 3 << 12;
const NT: u64 = 1 << 14;
const VM: u64 = 1 << 17;
const ID: u64 = 1 << 21;

/// The rflags given: flags a ring-3 vcpu may hold (CF, ZF, DF, NT, ID),
/// IF clear, IOPL 3, VM, and reserved bit 3.
const GIVEN: u64 = CF | RESERVED_1 | RESERVED_3 | ZF | DF | IOPL | NT | VM | ID;
/// What `pushfq` shows at the first instruction: the ordinary flags as
/// given, IF set, IOPL 0; VM and RF always read 0 in a pushed image, and
/// reserved bits as the CPU fixes them (bit 1 set, bit 3 clear).
const EXPECTED: u64 = CF | RESERVED_1 | ZF | IF | DF | NT | ID;

/// The rflags vcpu 1 found at its first instruction.
static SEEN: AtomicU64 = AtomicU64::new(0);
/// Set once vcpu 1 ran its entry.
static DONE: AtomicBool = AtomicBool::new(false);

global_asm!(
    r#"
    .pushsection .text.pv_abi_initial, "ax"
    .globl pv_abi_initial_entry
pv_abi_initial_entry:
    pushfq
    pop rax
    mov [rip + {seen}], rax
    // Leave with ordinary flags (NT, DF, ID, CF, ZF clear; IF, which
    // popfq cannot change here, stays set), then the runtime's entry.
    push 2
    popfq
    jmp sluice_secondary_entry
    .popsection
    "#,
    seen = sym SEEN,
);

unsafe extern "C" {
    /// vcpu 1's first instruction (assembly above).
    fn pv_abi_initial_entry();
}

fn entry(_vcpu: u32) {
    DONE.store(true, Ordering::SeqCst);
}

/// Starts vcpu 1 at an entry that records `pushfq`, with [`GIVEN`].
pub fn initial_rflags(has_vcpu1: bool) {
    if !has_vcpu1 {
        tap::skip(
            format_args!("a vcpu started with VCPUOP_initialise runs with IF set and IOPL 0"),
            "the domain has no vcpu 1",
        );
        return;
    }
    let started = smp::start_with(1, entry, |context| {
        context.user_regs.rip = (pv_abi_initial_entry as unsafe extern "C" fn()) as usize as u64;
        context.user_regs.rflags = GIVEN;
    });
    let mut waited = 0u32;
    while started.is_ok() && !DONE.load(Ordering::SeqCst) && waited < 100_000 {
        let _ = sched::yield_now();
        waited += 1;
    }
    check_eq!(
        started.and(if DONE.load(Ordering::SeqCst) {
            Ok(SEEN.load(Ordering::SeqCst))
        } else {
            Err(Errno::EAGAIN)
        }),
        Ok(EXPECTED),
        "a vcpu started with VCPUOP_initialise runs with IF set and IOPL 0, its other flags as given (rflags {GIVEN:#x} given)"
    );
}
