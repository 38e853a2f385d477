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

/// Reads the PIT count between two TSC reads: (count, TSC midpoint,
/// bracket width).
fn bracketed_pit_read() -> (u16, u64, u64) {
    let before = rdtsc();
    let count = pit::read_channel2();
    let after = rdtsc();
    (count, before / 2 + after / 2, after - before)
}

/// Measures the TSC frequency against the PIT; returns it in Hz.
///
/// Each of `SAMPLES` windows reads the PIT count at its start and end, each
/// read bracketed by two TSC reads, and spans about 10 ms of PIT time. A
/// vCPU descheduled during a read widens its bracket, so the window with
/// the narrowest brackets wins; delays between the reads do not matter,
/// since both clocks keep running. (Timing an edge of the PIT output
/// instead is off by however long the vCPU was away when it came, which on
/// a loaded TCG host is often milliseconds.)
pub fn calibrate() -> u64 {
    const SAMPLES: usize = 5;
    const WINDOW_PIT_TICKS: u16 = (pit::PIT_HZ / 100) as u16;
    let mut best: Option<(u64, u64)> = None;
    for _ in 0..SAMPLES {
        pit::start_channel2_countdown();
        let (start_count, start_tsc, start_width) = bracketed_pit_read();
        let mut spins: u64 = 0;
        while start_count.wrapping_sub(pit::read_channel2()) < WINDOW_PIT_TICKS
            && spins < 10_000_000
        {
            spins += 1;
            core::hint::spin_loop();
        }
        let (end_count, end_tsc, end_width) = bracketed_pit_read();
        let pit_ticks = u64::from(start_count.wrapping_sub(end_count));
        if pit_ticks == 0 || end_tsc <= start_tsc {
            continue;
        }
        let rate = (end_tsc - start_tsc) * pit::PIT_HZ / pit_ticks;
        let width = start_width + end_width;
        if best.is_none_or(|(best_width, _)| width < best_width) {
            best = Some((width, rate));
        }
    }
    pit::stop_channel2();
    let hz = best.map_or(0, |(_, rate)| rate);
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
