//! `selftest=timer`: the LAPIC timer ticks at the calibrated rate: count
//! ticks of a 100 Hz periodic timer over a TSC-measured interval and
//! compare with the rate the calibration predicts (within ±25%: TCG is
//! noisy). The period is 10 ms because a vCPU descheduled for longer than
//! a period on a loaded host merges ticks (one pending interrupt).

use core::sync::atomic::Ordering;

use arch::qemu::ExitCode;
use arch::{cpu, lapic, percpu, tsc};

const TEST_HZ: u32 = 100;
const INTERVAL_MICROS: u64 = 500_000;

/// Runs the check on the bootstrap CPU.
pub fn run() -> ExitCode {
    let this_cpu = percpu::current();
    let count = lapic::start_periodic_timer(TEST_HZ);
    if count == 0 {
        log::error!("selftest timer: FAILED: the LAPIC timer is not calibrated");
        return ExitCode::Fail;
    }
    cpu::enable_interrupts();
    // Skip the first (partial) period.
    tsc::delay_micros(15_000);
    let ticks_before = this_cpu.timer_ticks.load(Ordering::Relaxed);
    let start = cpu::rdtsc();
    tsc::delay_micros(INTERVAL_MICROS);
    let ticks = this_cpu.timer_ticks.load(Ordering::Relaxed) - ticks_before;
    let elapsed_micros = tsc::ticks_to_micros(cpu::rdtsc() - start);
    lapic::start_periodic_timer(crate::cpus::TIMER_HZ);

    // The timer fires every `count` timer clocks, at `timer_hz` clocks/s.
    let expected = elapsed_micros * lapic::timer_hz() / (u64::from(count) * 1_000_000);
    log::info!(
        "selftest timer: measured {ticks} ticks in {elapsed_micros} us, expected {expected} (timer {} Hz / 16, count {count}, {TEST_HZ} Hz)",
        lapic::timer_hz()
    );
    let low = expected * 3 / 4;
    let high = expected * 5 / 4;
    if expected > 0 && (low..=high).contains(&ticks) {
        log::info!("selftest timer: tick rate within 25% of the calibrated rate");
        ExitCode::Pass
    } else {
        log::error!("selftest timer: FAILED: {ticks} ticks outside [{low}, {high}]");
        ExitCode::Fail
    }
}
