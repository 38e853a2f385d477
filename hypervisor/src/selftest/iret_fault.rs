//! `selftest=iret-fault-syscall` and `selftest=iret-fault-exception`: the
//! exit backstop. A frame whose return `iretq` refuses (here a null ss
//! for ring 3, which the hooks put there; no guest input can, since
//! HYPERVISOR_iret and the other frame writers check) must fault in ring
//! 0 at the exit's `iretq`, and the fault must reach the guest's
//! exception hook as the guest's #GP at the frame's rip (Xen's exit
//! fixup), never the fatal path. One test leaves through the `syscall`
//! entry's exit, the other through the interrupt exit (after a `ud2`).
//!
//! `selftest=iret-fault-ring0`: the backstop is for returns to ring 3
//! only. An interrupt taken in ring 0 whose return frame the exit's
//! `iretq` refuses (a hypervisor bug: here the handler writes an ss
//! beyond the GDT) must stay fatal, with the hypervisor's GS untouched.

use core::sync::atomic::{AtomicU32, Ordering};

use arch::gdt::FLAT_RING3_CS64;
use arch::guest_entry::GuestHooks;
use arch::idt::InterruptFrame;
use arch::qemu::ExitCode;

use super::syscall_probe::{CODE_VIRT, enter_ring3};

/// `syscall; ud2`: the hypercall, then the exception.
const CODE: [u8; 4] = [0x0f, 0x05, 0x0f, 0x0b];
/// Where the `ud2` sits (after the two-byte `syscall`).
const UD2_RIP: u64 = CODE_VIRT + 2;

/// Which exit the test drives: 1 = the `syscall` exit, 2 = the
/// interrupt exit.
static MODE: AtomicU32 = AtomicU32::new(0);
/// Exceptions the hook saw so far.
static EXCEPTIONS: AtomicU32 = AtomicU32::new(0);

/// Spoils the frame of the `syscall` (mode 1): ss null, and rcx no longer
/// the return rip, so that the exit takes `iretq` rather than `sysretq`.
extern "C" fn on_syscall(frame: &mut InterruptFrame) {
    if MODE.load(Ordering::Relaxed) == 1 {
        frame.ss = 0;
        frame.rcx = frame.rcx.wrapping_add(1);
    }
}

fn on_exception(frame: &mut InterruptFrame) {
    let mode = MODE.load(Ordering::Relaxed);
    let seen = EXCEPTIONS.fetch_add(1, Ordering::Relaxed);
    log::info!(
        "selftest iret-fault: exception {} ({}) error {:#x} at rip {:#x} cs {:#x} ss {:#x}",
        frame.vector,
        arch::idt::exception_name(frame.vector),
        frame.error_code,
        frame.rip,
        frame.cs,
        frame.ss
    );
    let is_ud2 = frame.vector == 6 && frame.rip == UD2_RIP;
    if mode == 2 && seen == 0 && is_ud2 {
        // Return to the guest through the interrupt exit with a null ss.
        frame.ss = 0;
        return;
    }
    // The frame the exit's iretq refused: the guest's #GP(0) at its rip.
    let expected_rip = if mode == 1 { CODE_VIRT + 2 } else { UD2_RIP };
    let is_reflected = frame.vector == u64::from(arch::vectors::GENERAL_PROTECTION)
        && frame.error_code == 0
        && frame.rip == expected_rip
        && frame.cs == u64::from(FLAT_RING3_CS64)
        && frame.ss == 0;
    if is_reflected {
        log::info!(
            "selftest iret-fault: ok - the exit's iretq fault is the guest's #GP at {expected_rip:#x}; the hypervisor runs on"
        );
        arch::qemu::exit(ExitCode::Pass)
    }
    log::error!("selftest iret-fault: FAILED: not the reflected #GP");
    arch::qemu::exit(ExitCode::Fail)
}

fn on_return(_frame: &mut InterruptFrame) {}

fn run(mode: u32, name: &str) -> ExitCode {
    MODE.store(mode, Ordering::Relaxed);
    enter_ring3(
        name,
        &CODE,
        GuestHooks {
            hypercall: on_syscall,
            exception: on_exception,
            before_return: on_return,
        },
    )
}

/// Through the `syscall` entry's exit.
pub fn run_syscall_exit() -> ExitCode {
    run(1, "iret-fault-syscall")
}

/// Through the interrupt exit.
pub fn run_interrupt_exit() -> ExitCode {
    run(2, "iret-fault-exception")
}

/// The selector the ring-0 test returns with: beyond any GDT Sluice has.
const BAD_SS: u64 = 0xfff8;

/// The kick handler of `iret-fault-ring0`: spoils the return frame.
fn spoil_ring0_return(frame: &mut InterruptFrame) {
    log::info!(
        "selftest iret-fault-ring0: interrupt from cs {:#x}; returning with ss {BAD_SS:#x}",
        frame.cs
    );
    frame.ss = BAD_SS;
}

/// A fault of the interrupt exit's `iretq` back to ring 0 is fatal.
pub fn run_ring0_return() -> ExitCode {
    arch::idt::set_handler(arch::vectors::KICK, spoil_ring0_return);
    arch::smp::kick(arch::percpu::current());
    arch::cpu::enable_interrupts_and_halt();
    arch::cpu::disable_interrupts();
    log::error!("selftest iret-fault-ring0: FAILED: the spoiled return went through");
    ExitCode::Fail
}
