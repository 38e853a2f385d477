//! `selftest=timer`: the LAPIC timer ticks at the calibrated rate: count
//! ticks of a 20 Hz periodic timer over a TSC-measured interval and
//! compare with the rate the calibration predicts (within ±25%: TCG is
//! noisy). A vCPU descheduled for longer than a period on a loaded host
//! merges ticks (one pending interrupt), hence the long period (50 ms:
//! longer than the 28-48 ms a busy host's scheduler typically takes the
//! vCPU thread away, which at 50 Hz made every window of a loaded run
//! look unsteady), and the lower bound allows for the ticks that stalls
//! provably could have merged.

use core::sync::atomic::Ordering;

use arch::qemu::ExitCode;
use arch::{cpu, lapic, percpu, tsc};

const TEST_HZ: u32 = 20;
const INTERVAL_MICROS: u64 = 2_000_000;

/// Runs the check on the bootstrap CPU.
pub fn run() -> ExitCode {
    let this_cpu = percpu::current();
    let count = lapic::start_periodic_timer(TEST_HZ);
    if count == 0 {
        log::error!("selftest timer: FAILED: the LAPIC timer is not calibrated");
        return ExitCode::Fail;
    }
    cpu::enable_interrupts();
    let period_micros = 1_000_000 / u64::from(TEST_HZ);
    // Skip the first (partial) period.
    tsc::delay_micros(period_micros + period_micros / 4);
    let nominal = INTERVAL_MICROS / period_micros;
    let (window, discarded) =
        super::window::count_over_steady(INTERVAL_MICROS, period_micros, nominal / 4, || {
            this_cpu.timer_ticks.load(Ordering::Relaxed)
        });
    lapic::start_periodic_timer(crate::cpus::TIMER_HZ);
    let Some(window) = window else {
        log::error!(
            "selftest timer: FAILED: no window steady enough to judge ({discarded} tried; host too busy)"
        );
        return ExitCode::Fail;
    };

    // The timer fires every `count` timer clocks, at `timer_hz` clocks/s.
    let ticks = window.counted;
    let elapsed_micros = window.elapsed_micros;
    let expected = elapsed_micros * lapic::timer_hz() / (u64::from(count) * 1_000_000);
    log::info!(
        "selftest timer: measured {ticks} ticks in {elapsed_micros} us, expected {expected} (timer {} Hz / 16, count {count}, {TEST_HZ} Hz; longest stall {} us, up to {} merged)",
        lapic::timer_hz(),
        window.longest_stall_micros,
        window.mergeable
    );
    let low = expected * 3 / 4;
    let high = expected * 5 / 4;
    if expected > 0 && ticks + window.mergeable >= low && ticks <= high {
        log::info!("selftest timer: tick rate within 25% of the calibrated rate");
        ExitCode::Pass
    } else {
        log::error!("selftest timer: FAILED: {ticks} ticks outside [{low}, {high}]");
        ExitCode::Fail
    }
}
