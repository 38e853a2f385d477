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
mod syscall_probe;
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
        "nx" => pagefault::run_no_execute(),
        "wp" => pagefault::run_write_protect(),
        "ioapic" => ioapic::run(),
        "panic" => fatal::panic(),
        "stackoverflow" => fatal::stack_overflow(),
        "syscall-probe" => syscall_probe::run(),
        _ => {
            log::error!(
                "selftest {name}: no such self-test (cpus, ipi, timer, pagefault, nx, wp, ioapic, panic, stackoverflow, syscall-probe)"
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

/// One counting window.
#[derive(Clone, Copy, Debug)]
struct Window {
    /// How much `counter` advanced.
    counted: u64,
    /// TSC-measured length.
    elapsed_micros: u64,
    /// Longest stretch in which this CPU did not run (between two
    /// consecutive TSC reads of the busy loop).
    longest_stall_micros: u64,
    /// Upper bound on interrupts merged away by stalls: a stall of `g`
    /// covers at most `g / period` extra firings.
    mergeable: u64,
}

/// Counts how far `counter` advances over `micros` of TSC time, with
/// interrupts on, busy-polling the TSC to notice when the vCPU was not
/// running. Under TCG on a loaded host a vCPU can be descheduled for
/// several milliseconds, and a periodic interrupt that fires more than once
/// meanwhile is merged into one (a single pending bit), so the window also
/// bounds how many firings stalls may have merged.
fn count_over(micros: u64, period_micros: u64, counter: impl Fn() -> u64) -> Window {
    use arch::{cpu, tsc};
    cpu::enable_interrupts();
    let period = tsc::micros_to_ticks(period_micros).max(1);
    let before = counter();
    let start = cpu::rdtsc();
    let end = start + tsc::micros_to_ticks(micros);
    let mut last = start;
    let mut longest = 0;
    let mut mergeable = 0;
    loop {
        let now = cpu::rdtsc();
        let gap = now - last;
        longest = longest.max(gap);
        mergeable += gap / period;
        last = now;
        if now >= end {
            break;
        }
        core::hint::spin_loop();
    }
    Window {
        counted: counter() - before,
        elapsed_micros: tsc::ticks_to_micros(last - start),
        longest_stall_micros: tsc::ticks_to_micros(longest),
        mergeable,
    }
}

/// Up to five windows; returns the first in which stalls could have merged
/// at most `max_mergeable` firings (callers allow a quarter of the expected
/// count, so a check's lower bound still means something), and how many
/// windows were discarded.
fn count_over_steady(
    micros: u64,
    period_micros: u64,
    max_mergeable: u64,
    counter: impl Fn() -> u64,
) -> (Option<Window>, u32) {
    const ATTEMPTS: u32 = 5;
    for attempt in 0..ATTEMPTS {
        let window = count_over(micros, period_micros, &counter);
        if window.mergeable <= max_mergeable {
            return (Some(window), attempt);
        }
        log::info!(
            "selftest: window discarded: the vCPU stalled (longest {} us), up to {} firings merged (host busy)",
            window.longest_stall_micros,
            window.mergeable
        );
    }
    (None, ATTEMPTS)
}
