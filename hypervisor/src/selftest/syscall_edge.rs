//! `selftest=syscall-edge`: a `syscall` run as the last two bytes below the
//! end of the lower canonical half (Xen's XSA-7 case). Its return address,
//! 0x0000_8000_0000_0000, is not canonical: neither `sysretq` (on Intel
//! CPUs) nor `iretq` can return there without faulting in ring 0, with the
//! guest's GS loaded. The guest entry must instead hand the guest the #GP
//! its next instruction fetch raises, at that rip, through the exception
//! hook, and the hypervisor must run on.

use core::sync::atomic::{AtomicBool, Ordering};

use arch::gdt::FLAT_RING3_CS64;
use arch::guest_entry::GuestHooks;
use arch::idt::InterruptFrame;
use arch::qemu::ExitCode;

use super::syscall_probe::{Ring3Layout, enter_ring3_at};

/// The last page below the end of the lower canonical half.
const CODE_PAGE: u64 = 0x0000_7fff_ffff_f000;
/// Where the `syscall` (two bytes) sits: it ends the page.
const CODE_OFFSET: usize = 4096 - 2;
/// The first address past the lower canonical half: `syscall`'s return.
const EDGE: u64 = 0x0000_8000_0000_0000;
/// `syscall`
const CODE: [u8; 2] = [0x0f, 0x05];

/// Set once the hypercall hook saw the `syscall`.
static SYSCALL_SEEN: AtomicBool = AtomicBool::new(false);

/// Leaves the frame as `syscall` made it: its rip is [`EDGE`].
extern "C" fn on_syscall(frame: &mut InterruptFrame) {
    log::info!(
        "selftest syscall-edge: syscall from rip {:#x} (rcx {:#x}) reached the hypervisor",
        frame.rip,
        frame.rcx
    );
    // Relaxed: one CPU, and the exception hook runs later on it.
    SYSCALL_SEEN.store(true, Ordering::Relaxed);
}

fn on_exception(frame: &mut InterruptFrame) {
    let seen = SYSCALL_SEEN.load(Ordering::Relaxed);
    log::info!(
        "selftest syscall-edge: the guest got exception {} ({}) error {:#x} at rip {:#x} cs {:#x}",
        frame.vector,
        arch::idt::exception_name(frame.vector),
        frame.error_code,
        frame.rip,
        frame.cs
    );
    let is_expected = seen
        && frame.vector == u64::from(arch::vectors::GENERAL_PROTECTION)
        && frame.error_code == 0
        && frame.rip == EDGE
        && frame.cs == u64::from(FLAT_RING3_CS64);
    if is_expected {
        log::info!("selftest syscall-edge: ok - the return to {EDGE:#x} is the guest's #GP");
        arch::qemu::exit(ExitCode::Pass)
    }
    log::error!("selftest syscall-edge: FAILED: not the #GP at {EDGE:#x} after the syscall");
    arch::qemu::exit(ExitCode::Fail)
}

fn on_return(_frame: &mut InterruptFrame) {}

/// Runs the check; returns only on failure to set it up.
pub fn run() -> ExitCode {
    let layout = Ring3Layout {
        code_page: CODE_PAGE,
        code_offset: CODE_OFFSET,
        stack_page: CODE_PAGE - 4096,
    };
    enter_ring3_at(
        "syscall-edge",
        &layout,
        &CODE,
        GuestHooks {
            hypercall: on_syscall,
            exception: on_exception,
            before_return: on_return,
        },
    )
}
