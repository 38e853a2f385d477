//! Backtraces by walking saved frame pointers.
//!
//! Sluice is built with `-C force-frame-pointers=yes`, so each frame starts
//! with the caller's `%rbp` followed by the return address. The walk checks
//! every frame address is in the hypervisor's range and mapped before
//! reading it, so a corrupt chain ends the walk instead of faulting.

use crate::layout::{HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START};
use crate::paging;

/// Frames printed at most.
pub const MAX_FRAMES: usize = 32;

/// Calls `visit(depth, return_address)` for each frame above `rbp`.
pub fn walk(mut rbp: u64, mut visit: impl FnMut(usize, u64)) {
    for depth in 0..MAX_FRAMES {
        if !rbp.is_multiple_of(8)
            || !(HYPERVISOR_VIRT_START..HYPERVISOR_VIRT_END - 16).contains(&rbp)
        {
            return;
        }
        if !paging::is_mapped(rbp) || !paging::is_mapped(rbp + 8) {
            return;
        }
        // SAFETY: both words are mapped hypervisor memory (checked just
        // above) and aligned; reading them has no side effect.
        let next = unsafe { core::ptr::read_volatile(rbp as *const u64) };
        // SAFETY: as above.
        let return_address = unsafe { core::ptr::read_volatile((rbp + 8) as *const u64) };
        if return_address == 0 {
            return;
        }
        visit(depth, return_address);
        // Callers' frames sit higher on the stack; anything else is corrupt.
        if next <= rbp {
            return;
        }
        rbp = next;
    }
}

/// Logs a backtrace starting at `rbp` at error level.
pub fn log(rbp: u64) {
    log::error!("backtrace:");
    walk(rbp, |depth, address| {
        log::error!("  #{depth:<2} {address:#018x}")
    });
}
