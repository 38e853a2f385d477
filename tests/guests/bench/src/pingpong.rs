//! The cross-vcpu rows (`pingpong` on the command line, two vcpus): vcpu 0
//! sends on an IPI port of vcpu 1, vcpu 1 answers on an IPI port of vcpu 0,
//! and vcpu 0 times the round trip. Both ports stay masked and both vcpus
//! keep upcalls masked: the answer is seen in the pending bitmap.
//!
//! - `pingpong-spin`: both sides spin on the pending bit;
//! - `pingpong-blocked`: both sides wait in SCHEDOP_poll, so each event
//!   wakes a blocked vcpu;
//! - `fifo-pingpong-spin`, `fifo-pingpong-blocked`: the same two rows once
//!   the domain is on FIFO (a control block for each vcpu, M set in both
//!   ports' event words), waiting on the words' P bits.
//!
//! Under `-icount` the two vcpus share one instruction clock, so a round
//! trip counts the instructions both retire meanwhile (spinning included).

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use sluice_guest::shared_info::SharedInfo;
use sluice_guest::{check, check_eq, evtchn, fifo, sched, shared_info, smp, vcpu};

/// How vcpu 1 waits; DONE ends its loop.
static MODE: AtomicU32 = AtomicU32::new(SPIN);
const SPIN: u32 = 0;
const BLOCKED: u32 = 1;
const DONE: u32 = 2;
/// The IPI port that notifies vcpu 1, and the one that notifies vcpu 0.
static TO_SECONDARY: AtomicU32 = AtomicU32::new(0);
static TO_PRIMARY: AtomicU32 = AtomicU32::new(0);
/// Answers vcpu 1 sent.
static ANSWERS: AtomicU32 = AtomicU32::new(0);
/// Whether the domain is on FIFO: pending state is then the event words'
/// P bits instead of the 2-level bitmap.
static ON_FIFO: AtomicBool = AtomicBool::new(false);

/// Whether `port` is pending on the domain's current ABI.
fn is_pending(shared: &SharedInfo, port: u32) -> bool {
    if ON_FIFO.load(Ordering::SeqCst) {
        fifo::is_pending(port)
    } else {
        shared.is_pending(port)
    }
}

/// Waits until `port` is pending (spinning or in SCHEDOP_poll), clears it.
fn wait(shared: &SharedInfo, port: u32, mode: u32) {
    while !is_pending(shared, port) {
        if mode == BLOCKED {
            let _ = sched::poll(&[port], 0);
        } else {
            core::hint::spin_loop();
        }
    }
    if ON_FIFO.load(Ordering::SeqCst) {
        let _ = fifo::clear_pending(port);
    } else {
        shared.clear_pending(port);
    }
}

fn secondary(vcpu_id: u32) {
    let _ = vcpu::stop_periodic_timer(vcpu_id);
    let Some(shared) = shared_info::get() else {
        return;
    };
    let (to_me, to_primary) = (
        TO_SECONDARY.load(Ordering::SeqCst),
        TO_PRIMARY.load(Ordering::SeqCst),
    );
    loop {
        let mode = MODE.load(Ordering::SeqCst);
        wait(shared, to_me, mode);
        if MODE.load(Ordering::SeqCst) == DONE {
            return;
        }
        ANSWERS.fetch_add(1, Ordering::SeqCst);
        let _ = evtchn::send(to_primary);
    }
}

/// Runs both rows.
pub fn run(shared: &'static SharedInfo) {
    let ports = (evtchn::bind_ipi(1), evtchn::bind_ipi(0));
    check!(
        ports.0.is_ok() && ports.1.is_ok(),
        "bind_ipi for vcpu 1 and vcpu 0 ({ports:?})"
    );
    let (Ok(to_secondary), Ok(to_primary)) = ports else {
        return;
    };
    shared.mask(to_secondary);
    shared.mask(to_primary);
    TO_SECONDARY.store(to_secondary, Ordering::SeqCst);
    TO_PRIMARY.store(to_primary, Ordering::SeqCst);
    check_eq!(smp::start(1, secondary), Ok(()), "vcpu 1 comes up");

    let mut rounds = 0;
    for (name, mode) in [("pingpong-spin", SPIN), ("pingpong-blocked", BLOCKED)] {
        rounds += time_row(shared, name, mode, to_secondary, to_primary);
    }
    // vcpu 1 waits in SCHEDOP_poll for the next ping meanwhile: the switch
    // keeps the port idle, and its next look at the port reads P.
    if super::fifo::switch(2) {
        let masked = [fifo::mask(to_secondary), fifo::mask(to_primary)];
        check_eq!(
            masked,
            [Ok(()), Ok(())],
            "FIFO: M set in both IPI ports' event words"
        );
        ON_FIFO.store(true, Ordering::SeqCst);
        for (name, mode) in [
            ("fifo-pingpong-spin", SPIN),
            ("fifo-pingpong-blocked", BLOCKED),
        ] {
            rounds += time_row(shared, name, mode, to_secondary, to_primary);
        }
    }
    MODE.store(DONE, Ordering::SeqCst);
    let _ = evtchn::send(to_secondary);
    check_eq!(
        ANSWERS.load(Ordering::SeqCst) as usize,
        rounds,
        "vcpu 1 answered every ping"
    );
}

/// Times one row of round trips in `mode`; returns the rounds run.
fn time_row(
    shared: &SharedInfo,
    name: &str,
    mode: u32,
    to_secondary: u32,
    to_primary: u32,
) -> usize {
    MODE.store(mode, Ordering::SeqCst);
    // vcpu 1 may be waiting in the previous mode: one untimed round moves
    // it to this one.
    let _ = evtchn::send(to_secondary);
    wait(shared, to_primary, mode);
    super::measure(name, || {
        let _ = evtchn::send(to_secondary);
        wait(shared, to_primary, mode);
    });
    1 + super::SAMPLES + super::WARM_UP
}
