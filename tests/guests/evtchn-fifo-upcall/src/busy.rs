//! `test=busy`: a sender on vcpu 1 against the queue consumer and a masker
//! on vcpu 0, the race the BUSY bit exists for (spec §4.1, §4.3).
//!
//! Four IPI ports of vcpu 0 share queue 7. vcpu 1 raises them round after
//! round, each only once its previous event was taken (P clear), so the
//! hypervisor keeps linking new events behind a tail word (the port raised
//! last) that vcpu 0 keeps masking and unmasking with the runtime's [`fifo::mask`] and
//! [`fifo::unmask`] (events masked around each pair, as Linux does), while
//! vcpu 0's upcalls consume the queue. When the hypervisor's LINK write
//! meets a tail word that changed, it sets BUSY on it and retries; the
//! unmask must then wait instead of clearing M, or the event could be lost.
//!
//! Checked: vcpu 1 finishes (a lost event would leave its port pending
//! forever and stall it); every event raised is handled exactly once (the
//! consumer runs only on vcpu 0, between the mask/unmask pairs, so an
//! EVTCHNOP_unmask cannot re-raise a taken event); every word ends clear.
//! How often the unmask found BUSY set is printed, not asserted: it depends
//! on how the two vcpus interleave.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use sluice_guest::fifo::{self, MaskCleared};
use sluice_guest::{check, check_eq, evtchn, println, smp, time, upcall, vcpu};

/// IPI ports of vcpu 0 in the race: ports 1..=PORTS.
const PORTS: u32 = 4;
/// Events vcpu 1 raises on each port.
const ROUNDS: u32 = 1500;
/// How long the whole race may take, ns.
const LIMIT_NS: u64 = 60_000_000_000;

/// Events raised per port (index = port).
static RAISED: [AtomicU32; PORTS as usize + 1] = [const { AtomicU32::new(0) }; PORTS as usize + 1];
/// vcpu 1 is done raising (or gave up at the limit).
static SENDER_DONE: AtomicBool = AtomicBool::new(false);
/// vcpu 1 gave up waiting for a port's previous event.
static SENDER_STALLED: AtomicBool = AtomicBool::new(false);
/// The port vcpu 1 raised last: the likeliest tail of queue 7, so the one
/// vcpu 0 masks and unmasks next.
static LAST_RAISED: AtomicU32 = AtomicU32::new(1);
/// Sends that failed on vcpu 1.
static SEND_ERRORS: AtomicU32 = AtomicU32::new(0);

/// vcpu 1: raise every port ROUNDS times, each time after its previous
/// event was taken.
fn sender(vcpu_id: u32) {
    let _ = vcpu::stop_periodic_timer(vcpu_id);
    let limit = time::now_ns().map_or(1, |now| now + LIMIT_NS);
    'rounds: for _ in 0..ROUNDS {
        for port in 1..=PORTS {
            while fifo::is_pending(port) {
                if time::now_ns().is_none_or(|now| now >= limit) {
                    SENDER_STALLED.store(true, Ordering::SeqCst);
                    break 'rounds;
                }
                core::hint::spin_loop();
            }
            if let Some(raised) = RAISED.get(port as usize) {
                raised.fetch_add(1, Ordering::SeqCst);
            }
            LAST_RAISED.store(port, Ordering::SeqCst);
            if evtchn::send(port).is_err() {
                SEND_ERRORS.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    SENDER_DONE.store(true, Ordering::SeqCst);
}

/// The race, on a domain already switched to FIFO (vcpu 0's block only).
pub fn run() {
    if !vcpu::exists(1) {
        sluice_guest::tap::skip(
            format_args!("a sender on vcpu 1 against vcpu 0's masker and consumer"),
            "the domain has no vcpu 1",
        );
        return;
    }
    let ports: [_; PORTS as usize] = core::array::from_fn(|_| evtchn::bind_ipi(0));
    check_eq!(
        ports,
        [Ok(1), Ok(2), Ok(3), Ok(4)],
        "four IPI ports of vcpu 0 on ports 1..=4, all at priority 7"
    );
    upcall::reset_counters();
    check_eq!(smp::start(1, sender), Ok(()), "vcpu 1 comes up to send");
    let mut unmask_calls = 0u64;
    let mut unmask_errors = 0u64;
    while !SENDER_DONE.load(Ordering::SeqCst) {
        let port = LAST_RAISED.load(Ordering::SeqCst);
        upcall::mask_vcpu();
        let masked = fifo::mask(port);
        match fifo::unmask(port) {
            Ok(MaskCleared::Pending) => unmask_calls += 1,
            Ok(MaskCleared::Cleared | MaskCleared::WasClear) => {}
            Err(_) => unmask_errors += 1,
        }
        if masked.is_err() {
            unmask_errors += 1;
        }
        // Upcalls (the consumer) run here, between the pairs.
        upcall::unmask_vcpu();
    }
    upcall::mask_vcpu();
    // Take whatever is still queued.
    upcall::unmask_vcpu();
    upcall::mask_vcpu();
    check!(
        !SENDER_STALLED.load(Ordering::SeqCst),
        "vcpu 1 never waited in vain for a port's previous event (no event lost)"
    );
    check_eq!(
        (SEND_ERRORS.load(Ordering::SeqCst), unmask_errors),
        (0, 0),
        "every send, mask and unmask is rc 0"
    );
    let raised = RAISED.each_ref().map(|count| count.load(Ordering::SeqCst));
    let handled: [u32; PORTS as usize + 1] = core::array::from_fn(|port| {
        if port == 0 {
            0
        } else {
            upcall::port_events(port as u32)
        }
    });
    check_eq!(
        handled,
        raised,
        "every event vcpu 1 raised was handled exactly once on vcpu 0 ({ROUNDS} per port)"
    );
    check_eq!(
        raised.iter().sum::<u32>(),
        PORTS * ROUNDS,
        "vcpu 1 raised all {} events",
        PORTS * ROUNDS
    );
    let words = [1, 2, 3, 4].map(|port| fifo::event_word(port).map(|w| w.load(Ordering::SeqCst)));
    check_eq!(
        words,
        [Some(0); PORTS as usize],
        "every port's event word ends clear (no P, M, L or BUSY left)"
    );
    println!(
        "# unmask found BUSY set {} times; {unmask_calls} unmasks of a pending port went to EVTCHNOP_unmask",
        fifo::busy_waits()
    );
    let closed = (1..=PORTS)
        .filter(|&port| evtchn::close(port).is_ok())
        .count();
    check_eq!(closed, PORTS as usize, "ports 1..=4 close");
}
