//! HYPERVISOR_iret called directly (spec §7.5): the guest builds the frame
//! `[flags, rip, cs, rflags, rsp, ss]`, jumps to stub 23, which pushes rcx,
//! r11 and rax, and must land at `rip` with rax, rcx and r11 as they were
//! (flags 0) and `evtchn_upcall_mask` = !IF of the frame.
//!
//! cs carries RPL 0 (0xe030), as in the bounce frames the hypervisor
//! builds for an interrupted guest kernel: an RPL of 3 asks for a switch to
//! guest user mode.

use core::arch::asm;

use sluice_guest::shared_info;
use sluice_guest::{check_eq, upcall};

/// FLAT_KERNEL_CS with RPL 0.
const KERNEL_CS_RPL0: u64 = 0xe030;
/// FLAT_KERNEL_SS.
const KERNEL_SS: u64 = 0xe02b;
/// rflags bit 1 (always one) and IF.
const RFLAGS_IF: u64 = 0x202;
/// rflags bit 1 only.
const RFLAGS_NO_IF: u64 = 0x2;

/// Markers loaded into rax, rcx and r11 before the jump.
const MARK_RAX: u64 = 0x5a5a_0000_1111_2222;
const MARK_RCX: u64 = 0x5a5a_0000_3333_4444;
const MARK_R11: u64 = 0x5a5a_0000_5555_6666;

/// VGCF_in_syscall: return as from a syscall (rcx and r11 not restored).
const VGCF_IN_SYSCALL: u64 = 1 << 8;

/// Returns through HYPERVISOR_iret to the next instruction with the given
/// rflags and iret `flags`; returns the rax, rcx and r11 seen there, and
/// the rip the frame named.
fn iret_to_self(rflags: u64, flags: u64) -> (u64, u64, u64, u64) {
    let target: u64;
    let rax: u64;
    let rcx: u64;
    let r11: u64;
    // SAFETY: the frame names this very code (label 2), the current stack
    // pointer and the kernel selectors, so execution continues after the
    // asm block on the same stack with every other register preserved by
    // the hypervisor; rax, rcx and r11 are declared as outputs. The pushes
    // below the stack pointer are undone by the iret (rsp = saved value).
    unsafe {
        asm!(
            "mov {saved_rsp}, rsp",
            "push {ss}",
            "push {saved_rsp}",
            "push {rflags}",
            "push {cs}",
            "lea {target}, [rip + 2f]",
            "push {target}",
            "push {flags}",
            "mov rax, {mark_rax}",
            "mov rcx, {mark_rcx}",
            "mov r11, {mark_r11}",
            "jmp sluice_hypercall_page + {iret_offset}",
            "2:",
            saved_rsp = out(reg) _,
            target = out(reg) target,
            rflags = in(reg) rflags,
            flags = in(reg) flags,
            ss = in(reg) KERNEL_SS,
            cs = in(reg) KERNEL_CS_RPL0,
            mark_rax = const MARK_RAX,
            mark_rcx = const MARK_RCX,
            mark_r11 = const MARK_R11,
            iret_offset = const 23 * 32,
            out("rax") rax,
            out("rcx") rcx,
            out("r11") r11,
        );
    }
    (rax, rcx, r11, target)
}

/// The mask as seen after an iret.
fn upcall_mask() -> Option<u8> {
    shared_info::get().map(|s| {
        s.vcpu0()
            .evtchn_upcall_mask
            .load(core::sync::atomic::Ordering::SeqCst)
    })
}

/// Direct HYPERVISOR_iret with IF set and clear.
pub fn hypervisor_iret() {
    upcall::unmask_vcpu();
    let (rax, rcx, r11, _) = iret_to_self(RFLAGS_IF, 0);
    check_eq!(
        (rax, rcx, r11),
        (MARK_RAX, MARK_RCX, MARK_R11),
        "HYPERVISOR_iret (flags 0) resumes at the frame's rip with rax, rcx and r11 restored"
    );
    check_eq!(
        upcall_mask(),
        Some(0),
        "HYPERVISOR_iret with IF set leaves evtchn_upcall_mask 0"
    );
    let registers = iret_to_self(RFLAGS_NO_IF, 0);
    check_eq!(
        registers.0,
        MARK_RAX,
        "HYPERVISOR_iret with IF clear resumes with rax restored"
    );
    check_eq!(
        upcall_mask(),
        Some(1),
        "HYPERVISOR_iret with IF clear sets evtchn_upcall_mask to 1"
    );
    upcall::unmask_vcpu();
    check_eq!(
        upcall_mask(),
        Some(0),
        "the vcpu unmasks again after an iret with IF clear"
    );
    // The spec says only that rcx and r11 are not restored; Xen 4.17
    // returns with sysret, which leaves rcx = rip and r11 = rflags.
    let (rax, rcx, r11, target) = iret_to_self(RFLAGS_IF, VGCF_IN_SYSCALL);
    check_eq!(
        (rax, rcx, r11),
        (MARK_RAX, target, RFLAGS_IF),
        "HYPERVISOR_iret with VGCF_in_syscall restores rax; rcx = the frame's rip, r11 = its rflags (sysret)"
    );
}

/// A frame's stack pointer that is not canonical.
const NON_CANONICAL_RSP: u64 = 0x0000_8000_0000_0000;
/// rflags bits a hostile frame sets: IOPL 3, VM and bits the architecture
/// reserves (3, 5, 15, 40), with NT, AC, ID, DF and CF, and IF clear.
const HOSTILE_RFLAGS: u64 =
    (3 << 12) | (1 << 17) | (1 << 3) | (1 << 5) | (1 << 15) | (1 << 40) | NT | AC | ID | DF | 1;
/// NT, AC, ID, DF: kept by HYPERVISOR_iret (a guest's own to hold).
const NT: u64 = 1 << 14;
const AC: u64 = 1 << 18;
const ID: u64 = 1 << 21;
const DF: u64 = 1 << 10;

/// HYPERVISOR_iret to the next instruction with the frame's rsp set to
/// `frame_rsp` and rflags to `rflags`; the code there reads rsp and
/// rflags first, then restores the real stack and clean flags. Returns
/// (rsp, rflags) as seen there. IF should be clear in `rflags`: with the
/// vcpu masked no upcall can be bounced onto a bad stack before it is
/// restored.
fn iret_with(frame_rsp: u64, rflags: u64) -> (u64, u64) {
    let seen_rsp: u64;
    let seen_rflags: u64;
    // SAFETY: the frame names this code (label 2) and the kernel
    // selectors; at label 2 nothing touches memory through rsp before it
    // is reloaded from `saved_rsp`, a register the iret preserves (only
    // rax, rcx and r11 change, declared clobbered) except for the pushfq,
    // which is done after the reload; popfq then clears NT, AC, ID, DF
    // and the arithmetic flags again before Rust code runs.
    unsafe {
        asm!(
            "mov {saved_rsp}, rsp",
            "push {ss}",
            "push {frame_rsp}",
            "push {rflags}",
            "push {cs}",
            "lea rax, [rip + 2f]",
            "push rax",
            "push 0",
            "jmp sluice_hypercall_page + {iret_offset}",
            "2:",
            "mov {seen_rsp}, rsp",
            "mov rsp, {saved_rsp}",
            "pushfq",
            "pop {seen_rflags}",
            "push {clean}",
            "popfq",
            saved_rsp = out(reg) _,
            frame_rsp = in(reg) frame_rsp,
            rflags = in(reg) rflags,
            seen_rsp = out(reg) seen_rsp,
            seen_rflags = out(reg) seen_rflags,
            ss = in(reg) KERNEL_SS,
            cs = in(reg) KERNEL_CS_RPL0,
            clean = const RFLAGS_IF,
            iret_offset = const 23 * 32,
            out("rax") _,
            out("rcx") _,
            out("r11") _,
        );
    }
    (seen_rsp, seen_rflags)
}

/// Frames a guest may hand HYPERVISOR_iret that the CPU's `iretq` would
/// treat oddly: a stack pointer that is not canonical (`iretq` loads it
/// unchecked; only its first use faults) and rflags with IOPL, VM and
/// reserved bits set. Xen 4.17 returns to both; so must Sluice, and the
/// hypervisor must survive.
pub fn hostile_frames() {
    let (rsp, _) = iret_with(NON_CANONICAL_RSP, RFLAGS_NO_IF);
    check_eq!(
        rsp,
        NON_CANONICAL_RSP,
        "HYPERVISOR_iret to a frame with a non-canonical rsp resumes with that rsp"
    );
    let (_, rflags) = iret_with(NON_CANONICAL_RSP, HOSTILE_RFLAGS);
    check_eq!(
        rflags,
        NT | AC | ID | DF | 1 | RFLAGS_IF,
        "HYPERVISOR_iret keeps NT, AC, ID, DF and CF, drops IOPL, VM and reserved bits, sets IF"
    );
    check_eq!(
        upcall_mask(),
        Some(1),
        "HYPERVISOR_iret with IF clear in a hostile frame sets evtchn_upcall_mask to 1"
    );
    upcall::unmask_vcpu();
}
