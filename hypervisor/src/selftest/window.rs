//! Waiting and counting interrupts over TSC-measured windows.

/// Waits `micros` of TSC time with interrupts enabled.
pub(super) fn wait_micros(micros: u64) {
    arch::cpu::enable_interrupts();
    arch::tsc::delay_micros(micros);
}

/// One counting window.
#[derive(Clone, Copy, Debug)]
pub(super) struct Window {
    /// How much `counter` advanced.
    pub(super) counted: u64,
    /// TSC-measured length.
    pub(super) elapsed_micros: u64,
    /// Longest stretch in which this CPU did not run (between two
    /// consecutive TSC reads of the busy loop).
    pub(super) longest_stall_micros: u64,
    /// Upper bound on interrupts merged away by stalls: a stall of `g`
    /// covers at most `g / period` extra firings.
    pub(super) mergeable: u64,
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
pub(super) fn count_over_steady(
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
