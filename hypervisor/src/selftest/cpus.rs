//! `selftest=cpus`: every CPU in the MADT is online, has the APIC id the
//! MADT lists, and takes LAPIC timer interrupts.

use alloc::vec::Vec;

use arch::percpu;
use arch::qemu::ExitCode;

use crate::acpi::Madt;

/// Longest wait for every online CPU's first timer tick.
const TICK_WAIT_MICROS: u64 = 10_000_000;
/// The polling step of that wait.
const TICK_STEP_MICROS: u64 = 10_000;

/// Whether every online CPU has counted a LAPIC timer interrupt.
fn every_online_cpu_ticked() -> bool {
    (0..percpu::count()).all(|index| {
        percpu::by_index(index).is_none_or(|cpu| {
            !cpu.is_online() || cpu.timer_ticks.load(core::sync::atomic::Ordering::Relaxed) != 0
        })
    })
}

/// Runs the check.
pub fn run(madt: &Madt) -> ExitCode {
    let expected = madt.processors.len() as u32;
    // Wait until every online CPU has taken a timer tick (10 ms each), as
    // long as a loaded host needs: a vCPU thread can be kept off the host
    // for far longer than a fixed wait. A CPU that never ticks still
    // fails, once the wait gives up.
    super::window::wait_micros(0);
    let mut waited = 0;
    while waited < TICK_WAIT_MICROS && !every_online_cpu_ticked() {
        arch::tsc::delay_micros(TICK_STEP_MICROS);
        waited += TICK_STEP_MICROS;
    }
    let mut problems = 0;
    let mut seen_ids = Vec::new();
    for index in 0..percpu::count() {
        let Some(cpu) = percpu::by_index(index) else {
            continue;
        };
        let ticks = cpu.timer_ticks.load(core::sync::atomic::Ordering::Relaxed);
        let is_listed = madt
            .processors
            .iter()
            .any(|entry| entry.apic_id == cpu.apic_id());
        log::info!(
            "selftest cpus: cpu{index} APIC id {} online={} timer ticks={ticks} in MADT={is_listed}",
            cpu.apic_id(),
            cpu.is_online()
        );
        if !cpu.is_online() || ticks == 0 || !is_listed || seen_ids.contains(&cpu.apic_id()) {
            problems += 1;
        }
        seen_ids.push(cpu.apic_id());
    }
    let online = percpu::online_count();
    if online == expected && problems == 0 {
        log::info!("selftest cpus: {online} of {expected} CPUs online");
        ExitCode::Pass
    } else {
        log::error!(
            "selftest cpus: FAILED: {online} of {expected} CPUs online, {problems} CPU(s) wrong"
        );
        ExitCode::Fail
    }
}
