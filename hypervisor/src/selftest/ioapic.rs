//! `selftest=ioapic`: route ISA IRQ 0 (the PIT) through the IOAPIC to the
//! bootstrap CPU and count its interrupts over a TSC-measured interval
//! (100 Hz, so that a briefly descheduled vCPU does not merge interrupts).

use core::sync::atomic::{AtomicU64, Ordering};

use arch::idt::{self, InterruptFrame};
use arch::qemu::ExitCode;
use arch::{cpu, percpu, pit, tsc, vectors};

const PIT_RATE_HZ: u32 = 100;
const INTERVAL_MICROS: u64 = 500_000;

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
    tsc::delay_micros(15_000);
    let before = INTERRUPTS.load(Ordering::Relaxed);
    let start = cpu::rdtsc();
    tsc::delay_micros(INTERVAL_MICROS);
    let counted = INTERRUPTS.load(Ordering::Relaxed) - before;
    let elapsed_micros = tsc::ticks_to_micros(cpu::rdtsc() - start);
    crate::irq::mask_legacy_irq(0);
    pit::stop_periodic();

    let divisor = pit::PIT_HZ / u64::from(PIT_RATE_HZ);
    let expected = elapsed_micros * pit::PIT_HZ / (divisor * 1_000_000);
    log::info!(
        "selftest ioapic: ISA IRQ 0 -> GSI {gsi} -> vector {vector:#x}: {counted} interrupts in {elapsed_micros} us, expected {expected}"
    );
    if expected > 0 && (expected * 3 / 4..=expected * 5 / 4).contains(&counted) {
        log::info!(
            "selftest ioapic: PIT interrupts arrive through the IOAPIC at the programmed rate"
        );
        ExitCode::Pass
    } else {
        log::error!("selftest ioapic: FAILED: interrupt count out of range");
        ExitCode::Fail
    }
}
