//! The time-stamp counter: frequency, boot reference, delays.
//!
//! The TSC frequency is measured against the PIT (under TCG the TSC ticks at
//! the host's rate, which CPUID's leaf 0x15/0x16 values need not match, so a
//! measurement is the only trustworthy source); CPUID's claim is reported
//! beside it.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::cpu::rdtsc;
use crate::pit;

/// TSC ticks per second, 0 until calibrated.
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// TSC value at boot entry.
static BOOT_TSC: AtomicU64 = AtomicU64::new(0);

/// Records the TSC at boot; timestamps count from here.
pub fn mark_boot() {
    // Relaxed: written once on the bootstrap CPU before any other CPU runs.
    BOOT_TSC.store(rdtsc(), Ordering::Relaxed);
}

/// The TSC value recorded by `mark_boot`.
pub fn boot_tsc() -> u64 {
    BOOT_TSC.load(Ordering::Relaxed)
}

/// Measures the TSC frequency against `SAMPLES` windows of 10 ms of the
/// PIT and keeps the lowest; returns it in Hz.
///
/// Every error source inflates a sample (the vCPU being descheduled between
/// reading the TSC and starting the PIT, or between the PIT's output going
/// high and the loop noticing), none deflates one, so the minimum is the
/// best estimate; under a loaded TCG host the median can be 50% too high.
pub fn calibrate() -> u64 {
    const SAMPLES: usize = 5;
    const WINDOW_PIT_TICKS: u16 = (pit::PIT_HZ / 100) as u16;
    let mut best = u64::MAX;
    for _ in 0..SAMPLES {
        let (start, end) = pit::measure_tsc_over_pit_ticks(WINDOW_PIT_TICKS);
        let rate = end.saturating_sub(start) * pit::PIT_HZ / u64::from(WINDOW_PIT_TICKS);
        if rate != 0 {
            best = best.min(rate);
        }
    }
    let hz = if best == u64::MAX { 0 } else { best };
    // Relaxed: published before the other CPUs start (their start-up is
    // ordered by the SMP hand-off, which has its own barriers).
    TSC_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// TSC ticks per second (0 before `calibrate`).
pub fn hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Seconds and microseconds since `mark_boot`, if the TSC is calibrated.
pub fn since_boot() -> Option<(u64, u32)> {
    let hz = hz();
    if hz == 0 {
        return None;
    }
    let ticks = rdtsc().saturating_sub(boot_tsc());
    let seconds = ticks / hz;
    let micros = ((ticks % hz) * 1_000_000 / hz) as u32;
    Some((seconds, micros))
}

/// Converts TSC ticks to microseconds (0 before calibration).
pub fn ticks_to_micros(ticks: u64) -> u64 {
    match hz() {
        0 => 0,
        hz => (u128::from(ticks) * 1_000_000 / u128::from(hz)) as u64,
    }
}

/// Converts microseconds to TSC ticks (a rough 1 GHz guess before calibration).
pub fn micros_to_ticks(micros: u64) -> u64 {
    match hz() {
        0 => micros * 1000,
        hz => (u128::from(micros) * u128::from(hz) / 1_000_000) as u64,
    }
}

/// Busy-waits at least `micros` microseconds.
pub fn delay_micros(micros: u64) {
    let end = rdtsc().saturating_add(micros_to_ticks(micros));
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}
