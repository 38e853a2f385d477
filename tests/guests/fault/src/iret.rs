//! `bad-iret=<case>`: HYPERVISOR_iret with a frame the CPU's `iretq`
//! cannot return to, or can only return to with a fault in the guest.
//!
//! On Xen 4.17 (pv/iret.c: do_iret(), then the exit's `iretq` in
//! x86_64/entry.S) a user-mode cs with no user page tables crashes the
//! domain at once; any other selector is ORed with RPL 3 and handed to
//! `iretq`, whose #GP Xen's exception table turns into a #GP of the guest
//! at the frame's rip, and a guest with no #GP handler in its trap table is
//! crashed. Sluice refuses those frames before its exit (it has no trap
//! table and no failsafe_callback to offer): the answer a guest sees is
//! the same, this domain crashes and nothing else does.
//!
//! Xen 4.17's answers, each case booted as dom0 under QEMU TCG: cs-user
//! and cs-data (0xe02b has RPL 3) "domain_crash called from
//! arch/x86/pv/iret.c"; cs-null, ss-null, rip-noncanonical "Unhandled: vec
//! 13, #GP[0000]", ss-code "#GP[e030]", rip-hypervisor "Unhandled: vec 14,
//! #PF[0011]", each then crashed while bouncing to the missing handler.

use core::arch::asm;

use sluice_guest::{check, println};

/// FLAT_KERNEL_CS with RPL 0 and RPL 3, FLAT_KERNEL_SS, the null selector.
const KERNEL_CS_RPL0: u64 = 0xe030;
const USER_CS: u64 = 0xe033;
const KERNEL_SS: u64 = 0xe02b;
const NULL: u64 = 0;
/// rflags bit 1 and IF.
const RFLAGS_IF: u64 = 0x202;
/// The first address past the lower canonical half.
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;
/// An address inside the hypervisor's range (mapped supervisor-only).
const HYPERVISOR_RANGE: u64 = 0xffff_8000_0010_0000;

/// One bad frame: which field is replaced, and by what.
struct Case {
    name: &'static str,
    cs: u64,
    ss: u64,
    /// `None`: the code right after the hypercall.
    rip: Option<u64>,
}

const CASES: [Case; 7] = [
    Case {
        name: "cs-user",
        cs: USER_CS,
        ss: KERNEL_SS,
        rip: None,
    },
    Case {
        name: "cs-data",
        cs: KERNEL_SS,
        ss: KERNEL_SS,
        rip: None,
    },
    Case {
        name: "cs-null",
        cs: NULL,
        ss: KERNEL_SS,
        rip: None,
    },
    Case {
        name: "ss-null",
        cs: KERNEL_CS_RPL0,
        ss: NULL,
        rip: None,
    },
    Case {
        name: "ss-code",
        cs: KERNEL_CS_RPL0,
        ss: KERNEL_CS_RPL0,
        rip: None,
    },
    Case {
        name: "rip-noncanonical",
        cs: KERNEL_CS_RPL0,
        ss: KERNEL_SS,
        rip: Some(NON_CANONICAL),
    },
    Case {
        name: "rip-hypervisor",
        cs: KERNEL_CS_RPL0,
        ss: KERNEL_SS,
        rip: Some(HYPERVISOR_RANGE),
    },
];

/// Runs the case `name`; returns only if the domain survived it (or the
/// case is unknown), which is a failure either way.
pub fn bad_iret(name: &str) {
    let Some(case) = CASES.iter().find(|case| case.name == name) else {
        check!(false, "bad-iret={name} names a known case");
        return;
    };
    println!(
        "# HYPERVISOR_iret to cs={:#x} ss={:#x} ({name}): this domain must crash alone",
        case.cs, case.ss
    );
    iret(case);
    check!(false, "the guest ran on after HYPERVISOR_iret ({name})");
}

/// HYPERVISOR_iret with the case's frame (flags 0, rflags IF, the current
/// rsp).
fn iret(case: &Case) {
    // SAFETY: if the hypervisor returned through this frame at all, it
    // would land at label 2 (or the case's rip) on the current stack with
    // only rax, rcx and r11 changed (declared clobbered); the pushes below
    // rsp are undone by the frame's rsp.
    unsafe {
        asm!(
            "mov {saved_rsp}, rsp",
            "lea rax, [rip + 2f]",
            "test {has_rip}, {has_rip}",
            "cmovnz rax, {rip}",
            "push {ss}",
            "push {saved_rsp}",
            "push {rflags}",
            "push {cs}",
            "push rax",
            "push 0",
            "jmp sluice_hypercall_page + {iret_offset}",
            "2:",
            saved_rsp = out(reg) _,
            has_rip = in(reg) u64::from(case.rip.is_some()),
            rip = in(reg) case.rip.unwrap_or(0),
            ss = in(reg) case.ss,
            cs = in(reg) case.cs,
            rflags = const RFLAGS_IF,
            iret_offset = const 23 * 32,
            out("rax") _,
            out("rcx") _,
            out("r11") _,
        );
    }
}
