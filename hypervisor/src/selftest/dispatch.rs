//! Choosing a self-test by name.

use arch::qemu::ExitCode;

use super::{
    cpus, fatal, guest_access, hvtimer, ioapic, ipi, iret_fault, pagefault, pirq_eoi, pirq_follow,
    pirq_map_race, reaper_view, syscall_edge, syscall_floor, syscall_probe, timer,
};
use crate::acpi::Madt;

/// Runs self-test `name`; returns how the run should end.
pub fn run(name: &str, madt: &Madt) -> ExitCode {
    log::info!("selftest {name}: starting");
    match name {
        "cpus" => cpus::run(madt),
        "ipi" => ipi::run(),
        "timer" => timer::run(),
        "hvtimer" => hvtimer::run(),
        "pagefault" => pagefault::run(),
        "nx" => pagefault::run_no_execute(),
        "wp" => pagefault::run_write_protect(),
        "ioapic" => ioapic::run(),
        "iret-fault-syscall" => iret_fault::run_syscall_exit(),
        "iret-fault-exception" => iret_fault::run_interrupt_exit(),
        "iret-fault-ring0" => iret_fault::run_ring0_return(),
        "pirq-eoi" => pirq_eoi::run(),
        "pirq-follow" => pirq_follow::run(),
        "pirq-map-race" => pirq_map_race::run(),
        "reaper-view" => reaper_view::run(),
        "guestcopy" => guest_access::run_copies(),
        "smap" => guest_access::run_smap(),
        "smep" => guest_access::run_smep(),
        "panic" => fatal::panic(),
        "stackoverflow" => fatal::stack_overflow(),
        "syscall-probe" => syscall_probe::run(),
        "syscall-floor" => syscall_floor::run(),
        "syscall-edge" => syscall_edge::run(),
        _ => {
            log::error!(
                "selftest {name}: no such self-test (cpus, ipi, timer, hvtimer, pagefault, nx, wp, ioapic, iret-fault-syscall, iret-fault-exception, iret-fault-ring0, pirq-eoi, pirq-follow, pirq-map-race, reaper-view, guestcopy, smap, smep, panic, stackoverflow, syscall-probe, syscall-floor, syscall-edge)"
            );
            ExitCode::Fail
        }
    }
}
