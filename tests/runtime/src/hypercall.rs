//! The hypercall page and the raw calling convention (spec §7.2, §7.3).
//!
//! The hypervisor writes 128 stubs of 32 bytes into the page this module
//! reserves in the image (named by the HYPERCALL_PAGE ELF note). Stub `nr`
//! loads `nr` into `eax` and executes `syscall`; it is called with
//! `call page + 32 * nr`, arguments in `rdi, rsi, rdx, r10, r8`, the result
//! in `rax`. Stub 23 (`iret`) is jumped to, never called: see [`crate::upcall`].

use core::arch::{asm, global_asm};

/// Hypercall numbers used by the runtime and the guests (spec §7.1, xen.h).
pub mod nr {
    /// `set_callbacks(event, failsafe, syscall)`.
    pub const SET_CALLBACKS: u32 = 4;
    /// `update_va_mapping(va, new_pte, flags)`.
    pub const UPDATE_VA_MAPPING: u32 = 14;
    /// `set_timer_op(absolute_ns)`.
    pub const SET_TIMER_OP: u32 = 15;
    /// `event_channel_op_compat(evtchn_op *)`, legacy.
    pub const EVENT_CHANNEL_OP_COMPAT: u32 = 16;
    /// `xen_version(cmd, arg)`.
    pub const XEN_VERSION: u32 = 17;
    /// `console_io(cmd, count, buffer)`.
    pub const CONSOLE_IO: u32 = 18;
    /// `iret`: jumped to with an iret frame on the stack.
    pub const IRET: u32 = 23;
    /// `vcpu_op(cmd, vcpuid, arg)`.
    pub const VCPU_OP: u32 = 24;
    /// `sched_op(cmd, arg)`.
    pub const SCHED_OP: u32 = 29;
    /// `callback_op(cmd, arg)`.
    pub const CALLBACK_OP: u32 = 30;
    /// `event_channel_op(cmd, arg)`.
    pub const EVENT_CHANNEL_OP: u32 = 32;
    /// `physdev_op(cmd, arg)`.
    pub const PHYSDEV_OP: u32 = 33;
}

/// Size of one stub in the hypercall page.
pub const STUB_SIZE: u64 = 32;

// The page itself: 4 KiB of int3 so that calling a stub the hypervisor did not
// write traps instead of running into the next one.
global_asm!(
    r#"
    .pushsection .hypercall_page, "ax"
    .balign 4096
    .globl sluice_hypercall_page
sluice_hypercall_page:
    .fill 4096, 1, 0xcc
    .popsection
    "#
);

unsafe extern "C" {
    /// The hypercall page, defined in the assembly above.
    static sluice_hypercall_page: [u8; 4096];
}

/// Virtual address of the hypercall page.
pub fn page_address() -> u64 {
    // Taking the address of an extern static reads nothing.
    (&raw const sluice_hypercall_page) as u64
}

/// Issues hypercall `nr` with five arguments and returns `rax`.
///
/// Unused arguments may be passed as 0. All five argument registers are
/// treated as clobbered (a debug Xen poisons the ones a hypercall used), and
/// so are `rcx` and `r11` (`syscall` destroys them; the stubs restore them,
/// but the runtime does not rely on it).
///
/// # Safety
///
/// The hypercall may read and write guest memory named by its arguments: every
/// pointer argument must be valid for what hypercall `nr` does with it.
pub unsafe fn hypercall5(nr: u32, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let stub = page_address() + u64::from(nr) * STUB_SIZE;
    let result: i64;
    // SAFETY: `stub` is inside the hypercall page the hypervisor filled at
    // build time; the stub uses the stack (call/push/pop) and returns with
    // `ret`, so `nostack` is not claimed. The caller guarantees the memory the
    // arguments name (function contract).
    unsafe {
        asm!(
            "call {stub}",
            stub = in(reg) stub,
            inlateout("rdi") a1 => _,
            inlateout("rsi") a2 => _,
            inlateout("rdx") a3 => _,
            inlateout("r10") a4 => _,
            inlateout("r8") a5 => _,
            lateout("rax") result,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    result
}

/// Issues hypercall `nr` with two arguments (the others zero).
///
/// # Safety
///
/// As for [`hypercall5`].
pub unsafe fn hypercall2(nr: u32, a1: u64, a2: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { hypercall5(nr, a1, a2, 0, 0, 0) }
}

/// Issues hypercall `nr` with three arguments (the others zero).
///
/// # Safety
///
/// As for [`hypercall5`].
pub unsafe fn hypercall3(nr: u32, a1: u64, a2: u64, a3: u64) -> i64 {
    // SAFETY: forwarded contract.
    unsafe { hypercall5(nr, a1, a2, a3, 0, 0) }
}

/// `update_va_mapping` flag: invalidate this one address on the local CPU.
pub const UVMF_INVLPG: u64 = 2;

/// Rewrites the L1 entry that maps `va` to `new_pte` (spec §7.1).
///
/// # Safety
///
/// Whatever `va` mapped before is gone: nothing may still use it through
/// its old meaning, and the new frame must be something the caller is
/// prepared to see at `va`.
pub unsafe fn update_va_mapping(va: u64, new_pte: u64, flags: u64) -> i64 {
    // SAFETY: no pointer argument is dereferenced by the hypervisor; the
    // caller owns the consequences for `va` (function contract).
    unsafe { hypercall3(nr::UPDATE_VA_MAPPING, va, new_pte, flags) }
}
