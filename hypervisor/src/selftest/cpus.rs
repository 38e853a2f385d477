//! `selftest=cpus`: every CPU in the MADT is online, has the APIC id the
//! MADT lists, and takes LAPIC timer interrupts.

use alloc::vec::Vec;

use arch::percpu;
use arch::qemu::ExitCode;

use crate::acpi::Madt;

/// Runs the check.
pub fn run(madt: &Madt) -> ExitCode {
    let expected = madt.processors.len() as u32;
    // Give every CPU time for a few timer ticks (10 ms each).
    super::window::wait_micros(100_000);
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
