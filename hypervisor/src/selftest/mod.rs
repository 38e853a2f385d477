//! Boot self-tests (`--features selftest`, chosen with `selftest=<name>`).
//!
//! Each test prints what it measured and a verdict line that appears only
//! when its check passed; the run ends with the pass or fail exit code
//! (`pagefault` ends with the panic code, by design). The scenarios under
//! `tests/scenarios/` name the lines they expect.

mod cpus;
mod fatal;
mod ioapic;
mod ipi;
mod pagefault;
mod timer;

use arch::qemu::ExitCode;

use crate::acpi::Madt;

/// Runs self-test `name`; returns how the run should end.
pub fn run(name: &str, madt: &Madt) -> ExitCode {
    log::info!("selftest {name}: starting");
    match name {
        "cpus" => cpus::run(madt),
        "ipi" => ipi::run(),
        "timer" => timer::run(),
        "pagefault" => pagefault::run(),
        "ioapic" => ioapic::run(),
        "panic" => fatal::panic(),
        "stackoverflow" => fatal::stack_overflow(),
        _ => {
            log::error!(
                "selftest {name}: no such self-test (cpus, ipi, timer, pagefault, ioapic, panic, stackoverflow)"
            );
            ExitCode::Fail
        }
    }
}

/// Waits `micros` of TSC time with interrupts enabled.
fn wait_micros(micros: u64) {
    arch::cpu::enable_interrupts();
    arch::tsc::delay_micros(micros);
}
