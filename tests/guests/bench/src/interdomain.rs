//! The interdomain rows (`interdomain=a|b peer=<domid>` on the command
//! line): two one-vcpu domains, each pinned to its own pCPU, share one
//! interdomain channel. End a allocates the port for its peer and times the
//! round trips; end b binds to it and echoes every event. Both ends keep
//! the port masked and upcalls masked: an event is seen in the pending
//! bitmap, as in the cross-vcpu rows of [`super::pingpong`].
//!
//! - `interdomain-pingpong-spin`: both ends spin on the pending bit;
//! - `interdomain-pingpong-blocked`: both ends wait in SCHEDOP_poll.
//!
//! No memory is shared, so both ends know the protocol: b says it is ready
//! once bound, each row plays `1 + WARM_UP + SAMPLES` round trips (one
//! untimed round moves b to the row's way of waiting), and a ends with one
//! more event ("done"). Under `-icount` the two pCPUs share one
//! instruction clock, so a round trip counts the instructions both retire
//! meanwhile (spinning included).

use sluice_guest::evtchn::{self, DOMID_SELF, DomId, Port};
use sluice_guest::shared_info::SharedInfo;
use sluice_guest::{StartInfo, check, check_eq, sched, time};

/// How long (system time) a set-up step or the end's check waits for the
/// other end before the check fails.
const STEP_LIMIT_NS: u64 = 5_000_000_000;
/// How long an end watches for an event it must not see after the rows.
const QUIET_NS: u64 = 1_000_000;
/// Round trips per row, the untimed first one included.
const ROUNDS_PER_ROW: usize = 1 + super::WARM_UP + super::SAMPLES;
/// The rows, in the order both ends play them, with how each end waits.
const ROWS: [(&str, Wait); 2] = [
    ("interdomain-pingpong-spin", Wait::Spin),
    ("interdomain-pingpong-blocked", Wait::Poll),
];

/// How an end waits for the next event.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Spins on the port's pending bit.
    Spin,
    /// Blocks in SCHEDOP_poll on the port.
    Poll,
}

/// Waits until `port` is pending, then clears it.
fn wait(shared: &SharedInfo, port: Port, how: Wait) {
    while !shared.is_pending(port) {
        if how == Wait::Poll {
            let _ = sched::poll(&[port], 0);
        } else {
            core::hint::spin_loop();
        }
    }
    shared.clear_pending(port);
}

/// Waits in SCHEDOP_poll until `port` is pending or `ns` of system time
/// passed; clears it and returns true if it was pending.
fn wait_for(shared: &SharedInfo, port: Port, ns: u64) -> bool {
    let deadline = time::now_ns().unwrap_or(0).saturating_add(ns);
    while !shared.is_pending(port) && time::now_ns().unwrap_or(u64::MAX) < deadline {
        let _ = sched::poll(&[port], deadline);
    }
    let pending = shared.is_pending(port);
    shared.clear_pending(port);
    pending
}

/// Runs this end's half of both rows (`interdomain=a|b`, `peer=<domid>`).
pub fn run(shared: &'static SharedInfo, start_info: &StartInfo) {
    let peer = start_info
        .arg_value("peer")
        .and_then(|peer| peer.parse::<DomId>().ok());
    let role = start_info.arg_value("interdomain");
    match (role, peer) {
        (Some("a"), Some(peer)) => timer_end(shared, peer),
        (Some("b"), Some(peer)) => echo_end(shared, peer),
        _ => {
            check!(
                false,
                "the command line says interdomain=a|b and peer=<domid>"
            );
        }
    }
}

/// End a: offers port 1 to the peer, times the round trips.
fn timer_end(shared: &SharedInfo, peer: DomId) {
    // A free port's mask bit stays when it is allocated.
    shared.mask(1);
    let port = evtchn::alloc_unbound(DOMID_SELF, peer);
    check_eq!(
        port,
        Ok(1),
        "end a: alloc_unbound for d{peer} gets port 1 in a fresh table"
    );
    let Ok(port) = port else {
        return;
    };
    if !check!(
        wait_for(shared, port, STEP_LIMIT_NS),
        "end a: d{peer} bound the channel and said it is ready"
    ) {
        return;
    }

    let mut is_ok = true;
    let mut rounds = 0;
    for (name, how) in ROWS {
        is_ok &= evtchn::send(port).is_ok();
        wait(shared, port, how);
        rounds += 1;
        super::measure(name, || {
            is_ok &= evtchn::send(port).is_ok();
            wait(shared, port, how);
            rounds += 1;
        });
    }
    check!(is_ok, "end a: every send on the channel is rc 0");
    check_eq!(
        rounds,
        ROWS.len() * ROUNDS_PER_ROW,
        "end a: every round trip came back"
    );
    check!(evtchn::send(port).is_ok(), "end a: the done event is sent");
    check!(
        !wait_for(shared, port, QUIET_NS),
        "end a: no answer beyond one per ping arrives"
    );
}

/// End b: binds to the peer's port 1, echoes every event.
fn echo_end(shared: &SharedInfo, peer: DomId) {
    let deadline = time::now_ns().unwrap_or(0).saturating_add(STEP_LIMIT_NS);
    let port = loop {
        let bound = evtchn::bind_interdomain(peer, 1);
        if bound.is_ok() || time::now_ns().unwrap_or(u64::MAX) >= deadline {
            break bound;
        }
        let _ = sched::yield_now();
    };
    if !check!(
        port.is_ok(),
        "end b: bind_interdomain to d{peer} port 1 succeeds ({port:?})"
    ) {
        return;
    }
    let Ok(port) = port else {
        return;
    };
    shared.mask(port);
    // Binding set the new port pending; a sends nothing before b is ready.
    shared.clear_pending(port);
    let mut is_ok = evtchn::send(port).is_ok();

    let mut echoed = 0;
    for (_, how) in ROWS {
        for _ in 0..ROUNDS_PER_ROW {
            wait(shared, port, how);
            is_ok &= evtchn::send(port).is_ok();
            echoed += 1;
        }
    }
    check!(is_ok, "end b: every send on the channel is rc 0");
    let done = wait_for(shared, port, STEP_LIMIT_NS);
    let after_done = wait_for(shared, port, QUIET_NS);
    check!(
        echoed == ROWS.len() * ROUNDS_PER_ROW && done && !after_done,
        "end b: echoed exactly {} pings, then saw the done event and nothing after it (echoed {echoed}, done {done}, more {after_done})",
        ROWS.len() * ROUNDS_PER_ROW
    );
}
