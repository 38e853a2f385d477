//! set_callbacks, callback_op (spec §7.6) and HYPERVISOR_iret (spec §7.5).

use core::sync::atomic::Ordering;

use arch::gdt::{FLAT_RING3_CS64, FLAT_RING3_DS};
use arch::guest_entry::is_canonical;
use arch::idt::InterruptFrame;
use evtchn_core::Errno;

use super::{Call, GuestIn};
use crate::domain;

const CALLBACKOP_REGISTER: u64 = 0;
const CALLBACKOP_UNREGISTER: u64 = 1;
const CALLBACKTYPE_EVENT: u16 = 0;
const CALLBACKTYPE_FAILSAFE: u16 = 1;
const CALLBACKTYPE_SYSCALL: u16 = 2;
const CALLBACKTYPE_NMI: u16 = 4;
const CALLBACKTYPE_SYSENTER: u16 = 5;
const CALLBACKTYPE_SYSCALL32: u16 = 7;
/// VGCF_in_syscall in the iret context's flags.
const VGCF_IN_SYSCALL: u64 = 1 << 8;
const RFLAGS_IF: u64 = 1 << 9;
const RFLAGS_IOPL: u64 = 3 << 12;
const RFLAGS_VM: u64 = 1 << 17;
/// The rflags bits a ring-3 guest can hold (CF..ID, without IOPL and VM).
const RFLAGS_ARCHITECTURAL: u64 = 0x003f_7fd7;

/// The rflags a 64-bit PV vcpu resumes with, from `rflags` the guest gave
/// (HYPERVISOR_iret's frame, VCPUOP_initialise's `user_regs`): Xen 4.17
/// clears IOPL and VM and sets IF on every exit to such a guest
/// (x86_64/entry.S: restore_all_guest; IOPL is virtualised). Reserved bits
/// go too and bit 1 is set: iretq ignores the former and the CPU shows
/// the latter whatever the frame says.
pub(super) fn guest_rflags(rflags: u64) -> u64 {
    (rflags & RFLAGS_ARCHITECTURAL & !(RFLAGS_IOPL | RFLAGS_VM)) | RFLAGS_IF | 2
}

/// `set_callbacks(event, failsafe, syscall)`: registers them, ignores
/// errors, returns 0.
pub fn set_callbacks(call: &mut Call<'_>) -> Result<u64, Errno> {
    let (event, failsafe) = (call.argument(0), call.argument(1));
    crate::upcall::register_event_callback(call.vcpu, event);
    call.vcpu
        .failsafe_callback
        .store(failsafe, Ordering::Relaxed);
    Ok(0)
}

/// `callback_op(cmd, arg)`.
pub fn callback_op(call: &mut Call<'_>) -> Result<u64, Errno> {
    let argument = call.guest_in(1);
    match call.argument(0) {
        CALLBACKOP_REGISTER => {
            let mut bytes = [0u8; 16];
            argument.read(&mut bytes)?;
            let kind = u16::from_le_bytes([bytes[0], bytes[1]]);
            let mut address_bytes = [0u8; 8];
            address_bytes.copy_from_slice(bytes.get(8..16).unwrap_or(&[0; 8]));
            let address = u64::from_le_bytes(address_bytes);
            if !is_canonical(address) {
                return Err(Errno::EINVAL);
            }
            match kind {
                CALLBACKTYPE_EVENT => crate::upcall::register_event_callback(call.vcpu, address),
                CALLBACKTYPE_FAILSAFE => {
                    call.vcpu
                        .failsafe_callback
                        .store(address, Ordering::Relaxed);
                }
                // Accepted and kept nowhere: Sluice has no guest user mode
                // and no NMI delivery yet.
                CALLBACKTYPE_SYSCALL
                | CALLBACKTYPE_NMI
                | CALLBACKTYPE_SYSENTER
                | CALLBACKTYPE_SYSCALL32 => {}
                _ => return Err(Errno::ENOSYS),
            }
            Ok(0)
        }
        CALLBACKOP_UNREGISTER => {
            let mut bytes = [0u8; 4];
            argument.read(&mut bytes)?;
            match u16::from_le_bytes([bytes[0], bytes[1]]) {
                CALLBACKTYPE_NMI => Ok(0),
                CALLBACKTYPE_EVENT
                | CALLBACKTYPE_FAILSAFE
                | CALLBACKTYPE_SYSCALL
                | CALLBACKTYPE_SYSCALL32
                | CALLBACKTYPE_SYSENTER => Err(Errno::EINVAL),
                _ => Err(Errno::ENOSYS),
            }
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// HYPERVISOR_iret: restore the frame the stub left on the guest stack:
/// `[rax, r11, rcx, flags, rip, cs, rflags, rsp, ss]`, read with one range
/// check and nine guarded loads into registers. A frame that cannot be read or returned to crashes
/// the domain (out of line: the common iret is the end of every upcall).
#[inline]
pub fn iret(call: &mut Call<'_>) {
    let Ok(words) = GuestIn(call.frame.rsp).read_nine_words() else {
        refuse_unreadable(call.domain, call.frame);
        return;
    };
    let [rax, r11, rcx, flags, rip, cs, rflags, rsp, ss] = words;
    // Xen's flat kernel cs with RPL 0, 1 or 2: RPL 3 asks for guest user
    // mode, which needs user page tables Sluice's domains never have;
    // other selectors than Xen's flat ones cannot be loaded.
    // One branch each, so that each fails straight to the cold refusal.
    let kernel_cs = u64::from(FLAT_RING3_CS64 & !3)..u64::from(FLAT_RING3_CS64);
    if !kernel_cs.contains(&(cs & 0xffff)) {
        refuse_return(call.domain, cs, ss, rip);
        return;
    }
    if (ss | 3) & 0xffff != u64::from(FLAT_RING3_DS) {
        refuse_return(call.domain, cs, ss, rip);
        return;
    }
    if !is_canonical(rip) {
        refuse_return(call.domain, cs, ss, rip);
        return;
    }
    let frame = &mut *call.frame;
    // The frame's cs and ss need no store: a hypercall's frame is the one
    // the `syscall` entry built (the only caller of the hypercall hook),
    // which holds the flat ring-3 selectors this return goes back with.
    debug_assert_eq!(frame.cs, u64::from(FLAT_RING3_CS64));
    debug_assert_eq!(frame.ss, u64::from(FLAT_RING3_DS));
    frame.rip = rip;
    frame.rsp = rsp;
    frame.rflags = guest_rflags(rflags);
    frame.rax = rax;
    if flags & VGCF_IN_SYSCALL != 0 {
        // sysret-style, as Xen 4.17: rcx and r11 carry rip and rflags.
        frame.rcx = rip;
        frame.r11 = frame.rflags;
    } else {
        frame.rcx = rcx;
        frame.r11 = r11;
    }
    let mask = u8::from(rflags & RFLAGS_IF == 0);
    // The caller is the vcpu this pCPU runs. Relaxed: as the bounce's
    // store of the mask (`upcall`): only this vcpu's own flow and its
    // guest read it, and the return check that follows is on this pCPU.
    if let Some(info) = crate::running::vcpu_info() {
        info.evtchn_upcall_mask.store(mask, Ordering::Relaxed);
    }
}

/// HYPERVISOR_iret's frame at `rsp` cannot be read: the domain crashes.
#[cold]
#[inline(never)]
fn refuse_unreadable(domain: &domain::Domain, frame: &InterruptFrame) {
    // The frame, not its rsp, is passed in: the caller then keeps no
    // copy of the address live across the read for this cold path.
    let rsp = frame.rsp;
    domain::crash(
        domain,
        format_args!("*** HYPERVISOR_iret: unreadable frame at {rsp:#x}"),
    );
}

/// HYPERVISOR_iret's frame names a return Sluice cannot make: the domain
/// crashes.
#[cold]
#[inline(never)]
fn refuse_return(domain: &domain::Domain, cs: u64, ss: u64, rip: u64) {
    domain::crash(
        domain,
        format_args!("*** HYPERVISOR_iret: cannot return to cs={cs:#x} ss={ss:#x} rip={rip:#x}"),
    );
}
