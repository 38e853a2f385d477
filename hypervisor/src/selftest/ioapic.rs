//! `selftest=ioapic`: route ISA IRQ 0 (the PIT) through the IOAPIC to the
//! bootstrap CPU and count its interrupts over a TSC-measured interval
//! (20 Hz for 2 s: a period longer than the 28-48 ms a busy host's
//! scheduler typically takes the vCPU thread away, so that such stalls
//! merge nothing; the lower bound allows for interrupts that longer
//! stalls provably could have merged).

use core::sync::atomic::{AtomicU64, Ordering};

use arch::idt::{self, InterruptFrame};
use arch::qemu::ExitCode;
use arch::{cpu, percpu, pit, tsc, vectors};

const PIT_RATE_HZ: u32 = 20;
const INTERVAL_MICROS: u64 = 2_000_000;

static INTERRUPTS: AtomicU64 = AtomicU64::new(0);

fn on_pit(_frame: &mut InterruptFrame) {
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
}

/// Runs the check.
pub fn run() -> ExitCode {
    let vector = vectors::LEGACY_IRQ_BASE;
    idt::set_handler(vector, on_pit);
    let Some(gsi) = crate::irq::route_legacy_irq(0, vector, percpu::current().apic_id()) else {
        log::error!("selftest ioapic: FAILED: no IOAPIC serves ISA IRQ 0");
        return ExitCode::Fail;
    };
    pit::start_periodic(PIT_RATE_HZ);
    cpu::enable_interrupts();
    let period_micros = 1_000_000 / u64::from(PIT_RATE_HZ);
    // Skip the first (partial) period.
    tsc::delay_micros(period_micros + period_micros / 4);
    let nominal = INTERVAL_MICROS / period_micros;
    let (window, discarded) =
        super::window::count_over_steady(INTERVAL_MICROS, period_micros, nominal / 4, || {
            INTERRUPTS.load(Ordering::Relaxed)
        });
    crate::irq::mask_legacy_irq(0);
    pit::stop_periodic();
    let Some(window) = window else {
        log::error!(
            "selftest ioapic: FAILED: no window steady enough to judge ({discarded} tried; host too busy)"
        );
        return ExitCode::Fail;
    };
    let counted = window.counted;
    let elapsed_micros = window.elapsed_micros;

    let divisor = pit::PIT_HZ / u64::from(PIT_RATE_HZ);
    let expected = elapsed_micros * pit::PIT_HZ / (divisor * 1_000_000);
    log::info!(
        "selftest ioapic: ISA IRQ 0 -> GSI {gsi} -> vector {vector:#x}: {counted} interrupts in {elapsed_micros} us, expected {expected} (up to {} merged by vCPU stalls)",
        window.mergeable
    );
    if expected > 0 && counted + window.mergeable >= expected * 3 / 4 && counted <= expected * 5 / 4
    {
        log::info!(
            "selftest ioapic: PIT interrupts arrive through the IOAPIC at the programmed rate"
        );
        ExitCode::Pass
    } else {
        log::error!("selftest ioapic: FAILED: interrupt count out of range");
        ExitCode::Fail
    }
}
