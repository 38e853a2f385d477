//! `selftest=pirq-follow`: a guest line follows the vcpu it is routed to
//! when the scheduler moves that vcpu to another pCPU (Xen's
//! `evtchn_move_pirqs()` from `vcpu_migrate()`). With no domain behind
//! the id, the bind routes GSI 8 (the RTC, 64 Hz) to the boot CPU as the
//! pCPU of "vcpu 0"; the test then reports moves as `sched` would, and
//! counts on which pCPU each interrupt is taken. Needs a second pCPU.

use arch::qemu::ExitCode;
use arch::{cpu, percpu, tsc};
use evtchn_core::{DomId, PirqHost, PirqSharing, VcpuId};

use crate::pirq::{self, HostPirqs};

/// The line and the pirq it is mapped to.
const GSI: i32 = 8;
const PIRQ: u32 = 8;
/// The domain id that binds it (no domain runs in a self-test).
const DOMAIN: DomId = DomId(3);
/// Longest wait for an interrupt (64 Hz: 15.6 ms).
const ARRIVAL_MICROS: u64 = 2_000_000;
/// The polling step of the wait.
const STEP_MICROS: u64 = 500;

/// EOIs the line (the handler holds it until then) and waits for the
/// next interrupt; returns the pCPU that took it.
fn next_interrupt() -> Option<u32> {
    let before: [u64; 2] = [pirq::interrupts_taken_on(0), pirq::interrupts_taken_on(1)];
    let total = pirq::interrupts_taken();
    let _ = pirq::eoi(DOMAIN, PIRQ);
    let mut waited = 0;
    while pirq::interrupts_taken() == total {
        if waited >= ARRIVAL_MICROS {
            return None;
        }
        tsc::delay_micros(STEP_MICROS);
        waited += STEP_MICROS;
    }
    (0..2u32).find(|&pcpu| {
        before
            .get(pcpu as usize)
            .is_some_and(|&count| pirq::interrupts_taken_on(pcpu) > count)
    })
}

/// Binds the line, moves "vcpu 0", moves another vcpu, and checks where
/// the interrupts land after each.
pub fn run() -> ExitCode {
    if !percpu::by_index(1).is_some_and(|cpu| cpu.is_online()) {
        log::error!("selftest pirq-follow: FAILED: needs a second online pCPU");
        return ExitCode::Fail;
    }
    // The event-channel registry is built here, not first from the
    // line's interrupt handler.
    let _ = crate::events::domains();
    let mapped = pirq::map_gsi(DOMAIN, GSI, GSI);
    let bound = cpu::without_interrupts(|| HostPirqs.bind(DOMAIN, PIRQ, PirqSharing::Exclusive));
    cpu::enable_interrupts();
    let at_bind = next_interrupt();
    cpu::without_interrupts(|| pirq::vcpu_moved(DOMAIN, VcpuId(0), 1));
    let after_move = next_interrupt();
    cpu::without_interrupts(|| pirq::vcpu_moved(DOMAIN, VcpuId(1), 0));
    let after_other_move = next_interrupt();
    cpu::without_interrupts(|| pirq::vcpu_moved(DOMAIN, VcpuId(0), 0));
    let after_move_back = next_interrupt();
    HostPirqs.unbind(DOMAIN, PIRQ);
    cpu::disable_interrupts();
    pirq::forget_domain(DOMAIN);
    log::info!(
        "selftest pirq-follow: map {mapped:?}, bind {bound:?}; interrupt taken on pCPU {at_bind:?} after the bind, {after_move:?} after vcpu 0 moved to pCPU 1, {after_other_move:?} after vcpu 1 moved to pCPU 0, {after_move_back:?} after vcpu 0 moved back"
    );
    if mapped == Ok(PIRQ)
        && bound.is_ok()
        && at_bind == Some(0)
        && after_move == Some(1)
        && after_other_move == Some(1)
        && after_move_back == Some(0)
    {
        log::info!(
            "selftest pirq-follow: the line follows the vcpu it is routed to, and only that vcpu"
        );
        ExitCode::Pass
    } else {
        log::error!("selftest pirq-follow: FAILED");
        ExitCode::Fail
    }
}
