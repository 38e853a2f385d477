//! `selftest=ipi`: two CPUs bounce the kick IPI `ROUNDS` times; each side
//! counts exactly `ROUNDS`; the round trip is measured in TSC cycles.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use arch::idt::{self, InterruptFrame};
use arch::qemu::ExitCode;
use arch::{cpu, percpu, tsc, vectors};

/// Round trips.
const ROUNDS: u64 = 1000;
/// Longest wait for one reply.
const REPLY_TIMEOUT_MICROS: u64 = 200_000;

/// Pings the responder took.
static PINGS: AtomicU64 = AtomicU64::new(0);
/// Replies the initiator took.
static PONGS: AtomicU64 = AtomicU64::new(0);
/// CPU index of the responder.
static RESPONDER: AtomicU32 = AtomicU32::new(u32::MAX);

fn on_kick(_frame: &mut InterruptFrame) {
    let me = percpu::current().index();
    if me == RESPONDER.load(Ordering::Acquire) {
        PINGS.fetch_add(1, Ordering::AcqRel);
        if let Some(initiator) = percpu::by_index(0) {
            arch::smp::kick(initiator);
        }
    } else if me == 0 {
        // Release: pairs with the Acquire in the initiator's wait.
        PONGS.fetch_add(1, Ordering::Release);
    }
}

/// Runs the ping-pong between cpu0 and cpu1.
pub fn run() -> ExitCode {
    let Some(responder) = percpu::by_index(1).filter(|cpu| cpu.is_online()) else {
        log::error!("selftest ipi: FAILED: needs a second online CPU");
        return ExitCode::Fail;
    };
    let initiator = percpu::current();
    let initiator_kicks_before = initiator.kicks_received.load(Ordering::Relaxed);
    let responder_kicks_before = responder.kicks_received.load(Ordering::Relaxed);
    RESPONDER.store(responder.index(), Ordering::Release);
    idt::set_handler(vectors::KICK, on_kick);
    cpu::enable_interrupts();

    let mut samples = Vec::with_capacity(ROUNDS as usize);
    for round in 1..=ROUNDS {
        let start = cpu::rdtsc();
        arch::smp::kick(responder);
        let deadline = start + tsc::micros_to_ticks(REPLY_TIMEOUT_MICROS);
        while PONGS.load(Ordering::Acquire) < round {
            if cpu::rdtsc() > deadline {
                log::error!(
                    "selftest ipi: FAILED: no reply to ping {round} within {REPLY_TIMEOUT_MICROS} us"
                );
                return ExitCode::Fail;
            }
            core::hint::spin_loop();
        }
        samples.push(cpu::rdtsc() - start);
    }
    // Let any stray extra IPI land before counting.
    tsc::delay_micros(10_000);
    let pings = PINGS.load(Ordering::Acquire);
    let pongs = PONGS.load(Ordering::Acquire);
    let responder_kicks = responder.kicks_received.load(Ordering::Relaxed) - responder_kicks_before;
    let initiator_kicks = initiator.kicks_received.load(Ordering::Relaxed) - initiator_kicks_before;
    samples.sort_unstable();
    let median = samples.get(samples.len() / 2).copied().unwrap_or(0);
    let p99 = samples.get(samples.len() * 99 / 100).copied().unwrap_or(0);
    log::info!(
        "bench ipi-roundtrip median={median} p99={p99} cycles ({} us median, {ROUNDS} rounds, cpu0 <-> cpu1)",
        tsc::ticks_to_micros(median)
    );
    log::info!(
        "selftest ipi: cpu1 took {pings} pings ({responder_kicks} kicks), cpu0 took {pongs} replies ({initiator_kicks} kicks)"
    );
    if pings == ROUNDS && pongs == ROUNDS && responder_kicks == ROUNDS && initiator_kicks == ROUNDS
    {
        log::info!("selftest ipi: {ROUNDS} round trips, each side counted exactly {ROUNDS}");
        ExitCode::Pass
    } else {
        log::error!("selftest ipi: FAILED: expected exactly {ROUNDS} on each side");
        ExitCode::Fail
    }
}
