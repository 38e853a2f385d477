//! The `spoil_tables` module word (self-test builds): the first time a
//! suspended vcpu of that domain is to be resumed, the scheduler finds the
//! domain's root table no longer sharing the hypervisor's slots (one
//! software-available bit of its last hypervisor slot flipped, as a stray
//! write would). The domain must crash and its vcpu still stop, so that
//! the domain is freed and the pCPU moves on (scenario
//! `sched-resume-fails`), rather than picking the vcpu again forever.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::domain::Domain;

/// Domain id + 1 whose tables are to be spoiled (0: none).
static ARMED: AtomicU32 = AtomicU32::new(0);

/// The last hypervisor slot of a root table (PML4 271).
const LAST_HYPERVISOR_SLOT: usize = 271;
/// A bit of a PML4 entry the CPU ignores (available to software).
const SOFTWARE_BIT: u64 = 1 << 9;

/// The domain `id` asked for `spoil_tables`.
pub fn arm(id: evtchn_core::DomId) {
    ARMED.store(u32::from(id.0) + 1, Ordering::Relaxed);
}

/// Called before a suspended vcpu of `domain` is resumed: spoils its
/// root table once, if it is the armed domain.
pub fn before_resume(domain: &Domain) {
    let armed = u32::from(domain.id.0) + 1;
    if ARMED
        .compare_exchange(armed, 0, Ordering::Relaxed, Ordering::Relaxed)
        .is_err()
    {
        return;
    }
    let Some(root) = domain.frame_at(domain.root) else {
        log::error!("selftest spoil_tables: d{}: root not found", domain.id.0);
        return;
    };
    // The check compares with the live tables, which may be these very
    // ones (this pCPU ran the vcpu last): leave them first, as a pCPU
    // does that ran another domain or reaped one meanwhile.
    if arch::guest_entry::switch_page_tables(crate::memory::space::hypervisor_root()).is_err() {
        log::error!("selftest spoil_tables: cannot load the hypervisor's tables");
    }
    let entry = root.read_word(LAST_HYPERVISOR_SLOT);
    root.write_word(LAST_HYPERVISOR_SLOT, entry ^ SOFTWARE_BIT);
    log::info!(
        "selftest spoil_tables: d{}: slot {LAST_HYPERVISOR_SLOT} of its root spoiled before a vcpu resumes",
        domain.id.0
    );
}
