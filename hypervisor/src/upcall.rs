//! Upcall injection: the bounce frame to the event callback (spec §3.4,
//! §7.4), checked on every return to the guest.

use core::sync::atomic::Ordering;

use arch::gdt::{FLAT_RING3_CS64, FLAT_RING3_DS};
use arch::idt::InterruptFrame;

use evtchn_core::abi::VcpuInfo;

use crate::domain::{self, Domain, Vcpu};

const RFLAGS_IF: u64 = 1 << 9;
/// Cleared in the live rflags on entry to a callback: TF, NT, RF, VM, AC.
const RFLAGS_CLEARED_ON_BOUNCE: u64 = (1 << 8) | (1 << 14) | (1 << 16) | (1 << 17) | (1 << 18);

/// If the vcpu (the one this pCPU runs) has an upcall pending and
/// unmasked, bounce `frame` to its
/// event callback: write `[rcx, r11, rip, cs | mask << 32, rflags, rsp,
/// ss]` below the 16-byte aligned guest stack (so the callback starts with
/// rsp ≡ 8 mod 16), set `evtchn_upcall_mask`, and resume at the callback.
/// A frame that cannot be written crashes the domain. Returns whether an
/// upcall was due (bounced, or the domain crashed trying).
#[inline]
pub fn deliver_pending(domain: &Domain, vcpu: &Vcpu, frame: &mut InterruptFrame) -> bool {
    // `vcpu` is the one this pCPU runs: its vcpu_info is in the running slot.
    let Some(info) = crate::running::vcpu_info() else {
        return false;
    };
    // Xen's local_events_need_delivery(), on the vcpu_info in use (as
    // evtchn-core's `vcpu_has_deliverable_event`, without the registry
    // lookup on this path taken by every return to the guest).
    if info.evtchn_upcall_pending.load(Ordering::SeqCst) == 0
        || info.evtchn_upcall_mask.load(Ordering::SeqCst) != 0
    {
        return false;
    }
    bounce(domain, vcpu, info, frame);
    true
}

/// The bounce of [`deliver_pending`], once an upcall is due (kept out of
/// line: the check above runs on every return to the guest).
#[inline(never)]
fn bounce(domain: &Domain, vcpu: &Vcpu, info: &VcpuInfo, frame: &mut InterruptFrame) {
    let callback = vcpu.event_callback.load(Ordering::Relaxed);
    if callback == 0 {
        domain::crash(
            domain,
            format_args!(
                "*** vcpu {}: an event is due but no event callback is registered",
                vcpu.id.0
            ),
        );
        return;
    }
    // set_callbacks takes any address, as Xen's does; one the CPU cannot
    // return to (`iretq` to a non-canonical rip faults in ring 0 on real
    // CPUs) crashes the domain, as Xen's failed return to it would.
    if !arch::guest_entry::is_canonical(callback) {
        domain::crash(
            domain,
            format_args!(
                "*** vcpu {}: the event callback {callback:#x} is not canonical",
                vcpu.id.0
            ),
        );
        return;
    }
    let saved_mask = u64::from(info.evtchn_upcall_mask.load(Ordering::SeqCst));
    let rflags = (frame.rflags & !RFLAGS_IF) | if saved_mask == 0 { RFLAGS_IF } else { 0 };
    let slots = [
        frame.rcx,
        frame.r11,
        frame.rip,
        (frame.cs & 0xffff & !3) | (saved_mask << 32),
        rflags,
        frame.rsp,
        frame.ss,
    ];
    let top = frame.rsp & !15;
    let base = top.wrapping_sub(slots.len() as u64 * 8);
    let mut bytes = [0u8; 56];
    for (chunk, slot) in bytes.chunks_exact_mut(8).zip(slots) {
        chunk.copy_from_slice(&slot.to_le_bytes());
    }
    // The copy refuses a range that wraps or touches the hypervisor's.
    if arch::guest_copy::copy_to_guest(base, &bytes).is_err() {
        domain::crash(
            domain,
            format_args!(
                "*** vcpu {}: cannot write the event bounce frame at {base:#x}",
                vcpu.id.0
            ),
        );
        return;
    }
    info.evtchn_upcall_mask.store(1, Ordering::SeqCst);
    frame.rip = callback;
    frame.cs = u64::from(FLAT_RING3_CS64);
    frame.ss = u64::from(FLAT_RING3_DS);
    frame.rsp = base;
    frame.rflags = (frame.rflags & !RFLAGS_CLEARED_ON_BOUNCE) | RFLAGS_IF;
}
