//! Upcall injection: the bounce frame to the event callback (spec §3.4,
//! §7.4), checked on every return to the guest, and before a vcpu is
//! entered from a recorded frame (its first entry, or its entry after
//! VCPUOP_up brings it back from VCPUOP_down: [`deliver_before_entry`]).
//!
//! The check is inlined into the return paths (the hypercall hook and
//! `before_return`); the bounce is one callback check, one guest range
//! check and seven guarded stores of the frame words
//! (`arch::guest_copy::write_bounce_frame_to_guest`), then the frame
//! rewritten.
//! What a hostile guest can make fail (no callback, a non-canonical one, a
//! frame that cannot be written) crashes the domain and stops the vcpu,
//! out of line, so the return paths have nothing to check after a bounce.
//! Before an entry, where the pCPU runs its loop rather than the vcpu's
//! flow, the same failures crash the domain and the vcpu is not entered.

use alloc::sync::Arc;
use core::sync::atomic::Ordering;

use arch::gdt::{FLAT_RING3_CS64, FLAT_RING3_DS};
use arch::idt::InterruptFrame;

use evtchn_core::abi::VcpuInfo;

use crate::domain::{self, Domain, Vcpu, VcpuState};

const RFLAGS_IF: u64 = 1 << 9;
/// Cleared in the live rflags on entry to a callback: TF, NT, RF, VM, AC.
const RFLAGS_CLEARED_ON_BOUNCE: u64 = (1 << 8) | (1 << 14) | (1 << 16) | (1 << 17) | (1 << 18);

/// If the vcpu (the one this pCPU runs) has an upcall pending and
/// unmasked, bounce `frame` to its
/// event callback: write `[rcx, r11, rip, cs | mask << 32, rflags, rsp,
/// ss]` below the 16-byte aligned guest stack (so the callback starts with
/// rsp ≡ 8 mod 16), set `evtchn_upcall_mask`, and resume at the callback.
/// A frame that cannot be written crashes the domain, and the vcpu stops
/// then (this does not return).
#[inline]
pub fn deliver_pending(vcpu: &Vcpu, frame: &mut InterruptFrame) {
    // `vcpu` is the one this pCPU runs: its vcpu_info is in the running slot.
    let Some(info) = crate::running::vcpu_info() else {
        return;
    };
    // Xen's local_events_need_delivery(), on the vcpu_info in use (as
    // evtchn-core's `vcpu_has_deliverable_event`, without the registry
    // lookup on this path taken by every return to the guest).
    if info.evtchn_upcall_pending.load(Ordering::SeqCst) == 0
        || info.evtchn_upcall_mask.load(Ordering::SeqCst) != 0
    {
        return;
    }
    bounce(vcpu, info, frame);
}

/// [`deliver_pending`] for a vcpu about to be entered from a recorded
/// frame rather than returning from an exit: its first entry after
/// VCPUOP_initialise and VCPUOP_up, or its entry after VCPUOP_up brought
/// it back from VCPUOP_down. Xen enters a PV vcpu through the same event
/// check as every return to the guest (Xen 4.17: the PV context switch's
/// tail, `continue_pv_domain`, falls into `ret_from_intr` and
/// `test_all_events`), so an upcall already pending and unmasked (say an
/// IPI sent to it before VCPUOP_up, with its mask cleared by another
/// vcpu) runs the event callback before the vcpu's first instruction: the
/// bounce frame then holds the entry point.
///
/// Called by the pCPU that is about to enter `vcpu` (it is in this pCPU's
/// running slot), on that pCPU's idle stack, so failing here must not
/// leave the flow as the return paths' bounce does: a bounce that cannot
/// be made crashes the domain and returns `false`, and the caller does
/// not enter the vcpu (the pCPU's loop stops it, as it stops every vcpu of
/// a domain shutting down). The page tables are switched to the domain's
/// only when an upcall is due, for the frame's write.
pub fn deliver_before_entry(domain: &Domain, vcpu: &Vcpu, frame: &mut InterruptFrame) -> bool {
    let Some(info) = crate::running::vcpu_info() else {
        return true;
    };
    if info.evtchn_upcall_pending.load(Ordering::SeqCst) == 0
        || info.evtchn_upcall_mask.load(Ordering::SeqCst) != 0
    {
        return true;
    }
    let callback = vcpu.event_callback.load(Ordering::Relaxed);
    if entry_of(callback) == 0 {
        domain::crash(
            domain,
            format_args!(
                "*** vcpu {}: an event is due but the event callback {callback:#x} is unusable",
                vcpu.id.0
            ),
        );
        return false;
    }
    if arch::guest_entry::switch_page_tables(domain.root).is_err() {
        domain::crash(
            domain,
            format_args!("*** page tables lost their hypervisor slots"),
        );
        return false;
    }
    const FRAME_BYTES: u64 = 7 * 8;
    let base = (frame.rsp & !15).wrapping_sub(FRAME_BYTES);
    if arch::guest_copy::write_bounce_frame_to_guest(base, frame).is_err() {
        domain::crash(
            domain,
            format_args!(
                "*** vcpu {}: cannot write the event bounce frame at {base:#x}",
                vcpu.id.0
            ),
        );
        return false;
    }
    enter_callback(callback, info, frame, base);
    true
}

/// The bounce of [`deliver_pending`], once an upcall is due. The frame
/// saves the mask that check saw, 0 (this vcpu's guest does not run in
/// between), so the cs slot carries no mask bits and the rflags slot has
/// IF set (`arch::guest_copy::write_bounce_frame_to_guest` writes those
/// slots so). Kept out of line: every return to the guest runs the
/// check, and inlined there, the bounce costs every hypercall registers.
///
/// The frame's words go to the guest straight from `frame` (the writer
/// loads them itself), so that nothing but `frame`, the frame's address,
/// the callback and `info` stays live across the seven stores: no
/// callee-saved register to save here. `frame` is rewritten to enter the
/// callback only after the write succeeded; a write that fails leaves the
/// vcpu for good ([`refuse_frame`], which finds the vcpu itself for the
/// same reason), and the mask is set only after the write succeeded, as
/// before.
#[inline(never)]
fn bounce(vcpu: &Vcpu, info: &VcpuInfo, frame: &mut InterruptFrame) {
    // One word to test: a non-zero `event_entry` is the registered
    // callback, already found usable (`register_event_callback`). Zero
    // (none, or not canonical) goes out of line to the registered address
    // and its checks.
    let callback = vcpu.event_entry.load(Ordering::Relaxed);
    if callback == 0 {
        return bounce_to_registered(info, frame);
    }
    bounce_to(callback, info, frame);
}

/// [`bounce`] where `event_entry` is 0: checks the registered event
/// callback. set_callbacks and VCPUOP_initialise take any address, as
/// Xen's do; one the CPU cannot return to (`iretq` to a non-canonical
/// rip faults in ring 0 on real CPUs) crashes the domain, as Xen's failed
/// return to it would, and so does none. Every registration records a
/// usable callback in `event_entry`, so this path sees only unusable
/// ones; it records a usable one anyway, so that the bounce never
/// depends on that. The vcpu is the one this pCPU runs (as for
/// [`deliver_pending`]): found here, so that the bounce keeps nothing
/// live for this path.
#[cold]
#[inline(never)]
fn bounce_to_registered(info: &VcpuInfo, frame: &mut InterruptFrame) {
    let callback = crate::running::with(|_, vcpu| {
        let callback = vcpu.event_callback.load(Ordering::Relaxed);
        if entry_of(callback) != 0 {
            // Relaxed: as in `register_event_callback`.
            vcpu.event_entry.store(callback, Ordering::Relaxed);
        }
        callback
    });
    let Some(callback) = callback else {
        // The return paths run only while this pCPU runs a vcpu.
        unreachable!("an event bounce with no running vcpu")
    };
    if entry_of(callback) == 0 {
        refuse_callback(callback);
    }
    bounce_to(callback, info, frame);
}

/// The callback a bounce may enter for the registered `address`: itself
/// when it is non-zero and canonical, 0 otherwise.
fn entry_of(address: u64) -> u64 {
    if address != 0 && arch::guest_entry::is_canonical(address) {
        address
    } else {
        0
    }
}

/// Registers `address` as `vcpu`'s event callback (set_callbacks,
/// callback_op), any address as Xen takes it, and records whether a
/// bounce may enter it (`Vcpu::event_entry`), so the bounce tests one
/// word. Relaxed: only the vcpu's own flow registers its callbacks and
/// bounces to them (the caller is the vcpu that runs), in program order
/// on one pCPU or across the claim's Release/Acquire (`sched`); or
/// VCPUOP_initialise does, before the vcpu first runs, and its Release
/// store of `is_initialised` publishes both words.
pub fn register_event_callback(vcpu: &Vcpu, address: u64) {
    vcpu.event_callback.store(address, Ordering::Relaxed);
    vcpu.event_entry.store(entry_of(address), Ordering::Relaxed);
}

/// The bounce to `callback`, non-zero and canonical: writes the frame and
/// enters the callback.
#[inline(always)]
fn bounce_to(callback: u64, info: &VcpuInfo, frame: &mut InterruptFrame) {
    const FRAME_BYTES: u64 = 7 * 8;
    let base = (frame.rsp & !15).wrapping_sub(FRAME_BYTES);
    // The write refuses a range that wraps or touches the hypervisor's,
    // and a fault (unmapped, read-only) comes back as an error. Where the
    // direct stores cannot be used (tables not vouched for), the rest of
    // the bounce goes out of line, so that this path makes no call that
    // returns: nothing is kept live across one.
    let Some(written) = arch::guest_copy::write_bounce_frame_direct(base, frame) else {
        return bounce_staged(callback, info, frame, base);
    };
    if written.is_err() {
        refuse_frame(base);
    }
    enter_callback(callback, info, frame, base);
}

/// The rest of [`bounce`] where the direct stores cannot be used: the
/// same write through a staged copy, out of line.
#[cold]
#[inline(never)]
fn bounce_staged(callback: u64, info: &VcpuInfo, frame: &mut InterruptFrame, base: u64) {
    if arch::guest_copy::write_bounce_frame_to_guest(base, frame).is_err() {
        refuse_frame(base);
    }
    enter_callback(callback, info, frame, base);
}

/// Once the bounce frame is written at `base`: rewrites `frame` to enter
/// `callback` on the stack below it, and masks upcalls.
#[inline(always)]
fn enter_callback(callback: u64, info: &VcpuInfo, frame: &mut InterruptFrame, base: u64) {
    frame.rip = callback;
    frame.cs = u64::from(FLAT_RING3_CS64);
    frame.ss = u64::from(FLAT_RING3_DS);
    frame.rsp = base;
    frame.rflags = (frame.rflags & !RFLAGS_CLEARED_ON_BOUNCE) | RFLAGS_IF;
    // Relaxed (a plain store, where SeqCst was a locked xchg): only this
    // vcpu reads its mask with an order to keep: its guest, on this pCPU
    // after the exit, and its own flow in the hypervisor, on this pCPU or
    // on the next one it runs on, after the claim's Release/Acquire
    // (`sched`). Senders do not look at the mask (spec §3.3).
    info.evtchn_upcall_mask.store(1, Ordering::Relaxed);
}

/// An upcall is due but the event callback is missing or not canonical:
/// the domain crashes and the vcpu stops. The vcpu is the one this pCPU
/// runs (as for [`deliver_pending`]): found here, so that the bounce
/// passes nothing for this path.
#[cold]
#[inline(never)]
fn refuse_callback(callback: u64) -> ! {
    crate::running::with(|domain, vcpu| {
        if callback == 0 {
            domain::crash(
                domain,
                format_args!(
                    "*** vcpu {}: an event is due but no event callback is registered",
                    vcpu.id.0
                ),
            );
        } else {
            domain::crash(
                domain,
                format_args!(
                    "*** vcpu {}: the event callback {callback:#x} is not canonical",
                    vcpu.id.0
                ),
            );
        }
        stop_crashed(domain, vcpu)
    });
    // The return paths run only while this pCPU runs a vcpu.
    unreachable!("an event bounce with no running vcpu")
}

/// The bounce frame at `base` cannot be written: the domain crashes (as
/// Xen's does; no #PF is injected) and the vcpu stops. The vcpu is the
/// one this pCPU runs (as for [`deliver_pending`]): found here, so the
/// bounce keeps nothing live across its stores for this path.
#[cold]
#[inline(never)]
fn refuse_frame(base: u64) -> ! {
    crate::running::with(|domain, vcpu| {
        domain::crash(
            domain,
            format_args!(
                "*** vcpu {}: cannot write the event bounce frame at {base:#x}",
                vcpu.id.0
            ),
        );
        stop_crashed(domain, vcpu)
    });
    // The return paths run only while this pCPU runs a vcpu.
    unreachable!("an event bounce with no running vcpu")
}

/// The vcpu of a domain that [`domain::crash`] just shut down stops for
/// good, as every return to the guest stops the vcpus of a domain that is
/// shutting down (`hypercall::return_to_guest`).
fn stop_crashed(domain: &Arc<Domain>, vcpu: &Vcpu) -> ! {
    crate::sched::leave_vcpu(Arc::clone(domain), vcpu.id, VcpuState::Dead)
}
