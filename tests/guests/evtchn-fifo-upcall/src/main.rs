//! `evtchn-fifo-upcall`: the FIFO event-channel ABI as a guest uses it,
//! through upcalls and the runtime's queue consumer
//! ([`sluice_guest::fifo::consume`], spec §4.5).
//!
//! Checked: init_control and expand_array to eight event-array pages; 2500
//! loopback pairs on ports 1..=5000 (beyond the 2-level limit of 4096),
//! each end sent once and each event handled exactly once in its own
//! upcall; priority order within one upcall, including a higher-priority
//! event raised by a handler overtaking the rest of a lower queue; an event
//! for a vcpu without a control block dropped; vcpu 1 brought up with a
//! control block of its own, its ports queued and handled there while vcpu
//! 0's stay on vcpu 0 ([`secondary`]); reset back to 2-level with the next
//! allocation at port 1 and 2-level upcalls working again.
//!
//! With `role=fifo peer=<domid>` / `role=2l peer=<domid>` two domains play
//! the ends of one interdomain channel: the `fifo` end switches to FIFO and
//! allocates port 1 for its peer, the `2l` end stays 2-level and binds to
//! it; then 100 round trips through upcalls on both sides, with exact event
//! counts on each.
//!
//! With `test=busy` (and two vcpus) it runs [`busy`] instead: a sender on
//! vcpu 1 against vcpu 0's queue consumer and masker, the race the BUSY bit
//! exists for.
//!
//! With `evtchn=2l` on its command line (Sluice's module option that keeps
//! the domain on 2-level) it checks instead that init_control answers
//! -EOPNOTSUPP, expand_array and set_priority refuse, and 2-level upcalls
//! carry 200 loopback events exactly once each.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use sluice_guest::errno::Errno;
use sluice_guest::evtchn::{self, DOMID_SELF};
use sluice_guest::fifo::{self, GuestPage};
use sluice_guest::{StartInfo, check, check_eq, println, sched, shared_info, time, upcall, vcpu};

mod busy;
mod secondary;

sluice_guest::entry!(main);

/// vcpu 0's control block (at offset 0).
static CONTROL_PAGE: GuestPage = GuestPage::new();
/// The event array: eight pages, ports 0..8191.
static ARRAY_PAGES: [GuestPage; fifo::MAX_ARRAY_PAGES] =
    [const { GuestPage::new() }; fifo::MAX_ARRAY_PAGES];

/// Loopback pairs bound on FIFO: ports 1..=5000.
const PAIRS: u32 = 2500;
/// Loopback pairs bound on 2-level with `evtchn=2l`: ports 1..=200.
const PAIRS_2L: u32 = 100;

/// Ports in the order their handlers ran (priority checks).
static ORDER: [AtomicU32; 8] = [const { AtomicU32::new(0) }; 8];
/// Entries used in [`ORDER`].
static ORDER_LEN: AtomicU32 = AtomicU32::new(0);
/// The port [`raise_handler`] sends on.
static RAISE_PORT: AtomicU32 = AtomicU32::new(0);

/// Records `port` in [`ORDER`].
fn record_handler(port: u32) {
    let index = ORDER_LEN.fetch_add(1, Ordering::SeqCst);
    if let Some(slot) = ORDER.get(index as usize) {
        slot.store(port, Ordering::SeqCst);
    }
}

/// Records `port`, then raises an event on [`RAISE_PORT`].
fn raise_handler(port: u32) {
    record_handler(port);
    let _ = evtchn::send(RAISE_PORT.load(Ordering::SeqCst));
}

/// The recorded order, padded with zeros.
fn order() -> [u32; 4] {
    let mut seen = [0; 4];
    for (slot, recorded) in seen.iter_mut().zip(ORDER.iter()) {
        *slot = recorded.load(Ordering::SeqCst);
    }
    seen
}

/// Forgets the recorded order.
fn clear_order() {
    for slot in &ORDER {
        slot.store(0, Ordering::SeqCst);
    }
    ORDER_LEN.store(0, Ordering::SeqCst);
}

fn main(start_info: &'static StartInfo) {
    check_eq!(
        upcall::register_callbacks(),
        Ok(()),
        "callback_op registers the event and failsafe callbacks"
    );
    if let Some(role) = start_info.arg_value("role") {
        let peer = start_info
            .arg_value("peer")
            .and_then(|p| p.parse::<u16>().ok());
        check!(
            peer.is_some(),
            "the command line names the peer (peer=<domid>)"
        );
        interdomain(role == "fifo", peer.unwrap_or(0));
        return;
    }
    if start_info.arg_value("evtchn") == Some("2l") {
        two_level_only();
        return;
    }
    if !switch_to_fifo() {
        return;
    }
    if start_info.arg_value("test") == Some("busy") {
        busy::run();
        return;
    }
    many_ports();
    priorities();
    no_control_block();
    secondary::run(&CONTROL_PAGE);
    back_to_two_level();
}

/// Binds `pairs` loopback pairs from port 1 up, sends once on each end with
/// the vcpu unmasked, and checks each port saw exactly one event in an
/// upcall of its own. `what` names the ABI in the TAP lines.
fn loopback_round(pairs: u32, what: &str) {
    let mut bad_binds = 0;
    for pair in 0..pairs {
        let a = evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF);
        let b = a.and_then(|a| evtchn::bind_interdomain(DOMID_SELF, a));
        if (a, b) != (Ok(2 * pair + 1), Ok(2 * pair + 2)) {
            bad_binds += 1;
            if bad_binds <= 3 {
                println!("# pair {pair}: alloc_unbound {a:?}, bind_interdomain {b:?}");
            }
        }
    }
    check_eq!(
        bad_binds,
        0,
        "{what}: {pairs} loopback pairs bind to ports 1..={} in order",
        2 * pairs
    );
    // bind_interdomain raised an event on each new local end (spec §2.3
    // step 8): all of them wait for the first upcall.
    upcall::reset_counters();
    upcall::unmask_vcpu();
    upcall::mask_vcpu();
    let wrong: u32 = (1..=2 * pairs)
        .filter(|&port| upcall::port_events(port) != (port + 1) % 2)
        .count() as u32;
    check_eq!(
        (wrong, upcall::events(), upcall::upcalls()),
        (0, u64::from(pairs), 1),
        "{what}: one upcall on unmasking brings the {pairs} events bind_interdomain raised, one on each bound end"
    );
    upcall::reset_counters();
    upcall::unmask_vcpu();
    let mut bad_sends = 0;
    for port in 1..=2 * pairs {
        if evtchn::send(port).is_err() {
            bad_sends += 1;
        }
    }
    upcall::mask_vcpu();
    check_eq!(
        bad_sends,
        0,
        "{what}: a send on each of the {} ports is rc 0",
        2 * pairs
    );
    let wrong: u32 = (1..=2 * pairs)
        .filter(|&port| upcall::port_events(port) != 1)
        .count() as u32;
    check_eq!(
        (wrong, upcall::events(), upcall::upcalls()),
        (0, u64::from(2 * pairs), u64::from(2 * pairs)),
        "{what}: each of the {} ports gets exactly one event, each in an upcall of its own",
        2 * pairs
    );
    check_eq!(
        upcall::port_events(2 * pairs + 1),
        0,
        "{what}: the port after the last pair gets no event"
    );
    let mut bad_closes = 0;
    for port in 1..=2 * pairs {
        if evtchn::close(port).is_err() {
            bad_closes += 1;
        }
    }
    check_eq!(bad_closes, 0, "{what}: all {} ports close", 2 * pairs);
}

/// `evtchn=2l`: the domain cannot leave 2-level, and 2-level upcalls work.
fn two_level_only() {
    let frame = sluice_guest::smp::machine_frame(CONTROL_PAGE.address()).unwrap_or(0);
    check_eq!(
        evtchn::init_control(frame, 0, 0),
        Err(Errno::EOPNOTSUPP),
        "evtchn=2l: init_control answers -EOPNOTSUPP"
    );
    check_eq!(
        evtchn::init_control(frame, 4, 0),
        Err(Errno::EINVAL),
        "evtchn=2l: init_control still checks its argument first (misaligned offset -EINVAL)"
    );
    let array = sluice_guest::smp::machine_frame(ARRAY_PAGES[0].address()).unwrap_or(0);
    check_eq!(
        evtchn::expand_array(array),
        Err(Errno::EOPNOTSUPP),
        "evtchn=2l: expand_array answers -EOPNOTSUPP"
    );
    check_eq!(
        evtchn::set_priority(1, 3),
        Err(Errno::ENOSYS),
        "evtchn=2l: set_priority answers -ENOSYS (the domain is 2-level)"
    );
    loopback_round(PAIRS_2L, "2-level");
    check!(
        upcall::last_upcall().selector != 0,
        "2-level: the upcalls took a non-zero selector from evtchn_pending_sel"
    );
}

/// init_control for vcpu 0 and eight event-array pages.
fn switch_to_fifo() -> bool {
    let switched = fifo::init_control(&CONTROL_PAGE, 0, 0);
    check_eq!(
        switched,
        Ok(17),
        "init_control for vcpu 0 switches to FIFO and returns link_bits 17"
    );
    if switched.is_err() {
        return false;
    }
    let mut added = 0;
    for page in &ARRAY_PAGES {
        if fifo::expand_array(page) == Ok(()) {
            added += 1;
        }
    }
    check_eq!(
        added,
        fifo::MAX_ARRAY_PAGES,
        "expand_array adds 8 event-array pages (ports 0..8191)"
    );
    added == fifo::MAX_ARRAY_PAGES
}

/// 5000 ports, beyond 2-level's 4096, each used once through upcalls.
fn many_ports() {
    loopback_round(PAIRS, "FIFO");
    let past_2l = (4097..=2 * PAIRS)
        .filter(|&port| upcall::port_events(port) == 1)
        .count();
    check_eq!(
        past_2l,
        (2 * PAIRS - 4096) as usize,
        "FIFO: every port above 4096 was handled through the FIFO consumer"
    );
}

/// Priority order within one upcall.
fn priorities() {
    let ports = [
        evtchn::bind_ipi(0),
        evtchn::bind_ipi(0),
        evtchn::bind_ipi(0),
        evtchn::bind_ipi(0),
    ];
    check_eq!(
        ports,
        [Ok(1), Ok(2), Ok(3), Ok(4)],
        "four IPI ports bind to ports 1..=4"
    );
    let set = [
        evtchn::set_priority(1, 12),
        evtchn::set_priority(2, 3),
        evtchn::set_priority(3, 10),
        evtchn::set_priority(4, 1),
    ];
    check_eq!(
        set,
        [Ok(()), Ok(()), Ok(()), Ok(())],
        "set_priority 12, 3, 10, 1 on ports 1..=4"
    );
    for port in 1..=4 {
        upcall::set_handler(port, record_handler);
    }
    upcall::reset_counters();
    clear_order();
    let sent = [evtchn::send(1), evtchn::send(3), evtchn::send(2)];
    check_eq!(
        sent,
        [Ok(()), Ok(()), Ok(())],
        "sends on ports 1 (prio 12), 3 (prio 10), 2 (prio 3) with the vcpu masked"
    );
    check_eq!(upcall::upcalls(), 0, "no upcall while the vcpu is masked");
    upcall::unmask_vcpu();
    upcall::mask_vcpu();
    check_eq!(
        (order(), upcall::upcalls()),
        ([2, 3, 1, 0], 1),
        "one upcall handles them highest priority first: 2 (3), 3 (10), 1 (12)"
    );

    // A handler of queue 10 raises port 4 (priority 1) while port 5, also
    // priority 10, waits behind it: the consumer takes port 4 next.
    check_eq!(
        evtchn::bind_ipi(0),
        Ok(5),
        "a fifth IPI port binds to port 5"
    );
    let set = [evtchn::set_priority(3, 10), evtchn::set_priority(5, 10)];
    check_eq!(set, [Ok(()), Ok(())], "ports 3 and 5 at priority 10");
    RAISE_PORT.store(4, Ordering::SeqCst);
    upcall::set_handler(3, raise_handler);
    upcall::set_handler(5, record_handler);
    upcall::reset_counters();
    clear_order();
    let sent = [evtchn::send(3), evtchn::send(5)];
    check_eq!(
        sent,
        [Ok(()), Ok(())],
        "sends on ports 3 and 5 with the vcpu masked"
    );
    upcall::unmask_vcpu();
    upcall::mask_vcpu();
    check_eq!(
        (order(), upcall::events()),
        ([3, 4, 5, 0], 3),
        "port 4 (priority 1), raised by port 3's handler, is handled before port 5 (priority 10)"
    );
    for port in 1..=5 {
        upcall::clear_handler(port);
    }
    let closed = (1..=5).filter(|&port| evtchn::close(port).is_ok()).count();
    check_eq!(closed, 5, "ports 1..=5 close");
}

/// An event for a vcpu that has no control block is dropped.
fn no_control_block() {
    if !vcpu::exists(1) {
        sluice_guest::tap::skip(
            format_args!("an event for a vcpu without a control block"),
            "the domain has no vcpu 1",
        );
        return;
    }
    check_eq!(evtchn::bind_ipi(1), Ok(1), "bind_ipi(vcpu 1) gets port 1");
    let a = evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF);
    let b = a.and_then(|a| evtchn::bind_interdomain(DOMID_SELF, a));
    check_eq!(
        (a, b),
        (Ok(2), Ok(3)),
        "a loopback pair binds to ports 2 and 3"
    );
    // Take the event bind_interdomain raised on port 3 (still vcpu 0's).
    upcall::reset_counters();
    upcall::unmask_vcpu();
    upcall::mask_vcpu();
    check_eq!(
        (upcall::port_events(3), upcall::events()),
        (1, 1),
        "binding raised one event on port 3, handled on vcpu 0"
    );
    check_eq!(
        evtchn::bind_vcpu(3, 1),
        Ok(()),
        "bind_vcpu moves port 3 to vcpu 1"
    );
    upcall::reset_counters();
    upcall::unmask_vcpu();
    let sent = [evtchn::send(1), evtchn::send(2)];
    upcall::mask_vcpu();
    check_eq!(
        sent,
        [Ok(()), Ok(())],
        "sends on port 1 (IPI of vcpu 1) and port 2 (reaching port 3) are rc 0"
    );
    let words = [1, 3].map(|port| fifo::event_word(port).map(|w| w.load(Ordering::SeqCst)));
    check_eq!(
        (words, upcall::events(), upcall::upcalls()),
        ([Some(0), Some(0)], 0, 0),
        "events for vcpu 1, which has no control block, are dropped: no P, no upcall"
    );
    let closed = [evtchn::close(1), evtchn::close(2), evtchn::close(3)];
    check_eq!(closed, [Ok(()), Ok(()), Ok(())], "ports 1..=3 close");
}

/// EVTCHNOP_reset leaves FIFO; 2-level upcalls work again.
fn back_to_two_level() {
    check_eq!(
        evtchn::reset(DOMID_SELF),
        Ok(()),
        "reset(DOMID_SELF) under FIFO is rc 0"
    );
    fifo::forget();
    upcall::clear_port_owners();
    check_eq!(
        evtchn::set_priority(1, 7),
        Err(Errno::ENOSYS),
        "after reset the domain is 2-level again (set_priority -ENOSYS)"
    );
    let pending = shared_info::get().map_or(u64::MAX, |shared| {
        shared
            .evtchn_pending
            .iter()
            .map(|word| u64::from(word.load(Ordering::SeqCst).count_ones()))
            .sum()
    });
    check_eq!(
        pending,
        0,
        "no port is pending in the 2-level bitmap after reset"
    );
    check_eq!(
        evtchn::bind_ipi(0),
        Ok(1),
        "after reset the next allocation is port 1"
    );
    upcall::reset_counters();
    upcall::unmask_vcpu();
    check_eq!(evtchn::send(1), Ok(()), "send on port 1 is rc 0");
    upcall::mask_vcpu();
    check_eq!(
        (upcall::port_events(1), upcall::events(), upcall::upcalls()),
        (1, 1, 1),
        "the event on port 1 arrives through one 2-level upcall"
    );
    check!(
        upcall::last_upcall().selector == 1,
        "that upcall took selector bit 0 (port 1's word) from evtchn_pending_sel"
    );
}

/// Round trips between the FIFO end and the 2-level end.
const ROUNDS: u32 = 100;
/// How long one step may wait for the peer, ns.
const STEP_LIMIT_NS: u64 = 20_000_000_000;

/// Yields (with the vcpu unmasked) until `port` has seen `count` events or
/// the step limit passes; returns whether it did.
fn wait_events(port: u32, count: u32) -> bool {
    let limit = time::now_ns().map_or(1, |now| now + STEP_LIMIT_NS);
    while upcall::port_events(port) < count {
        if time::now_ns().is_none_or(|now| now >= limit) {
            return false;
        }
        let _ = sched::yield_now();
    }
    true
}

/// One end of an interdomain channel between a FIFO and a 2-level domain.
fn interdomain(is_fifo: bool, peer: u16) {
    let what = if is_fifo { "fifo end" } else { "2-level end" };
    let port = if is_fifo {
        if !switch_to_fifo() {
            return;
        }
        let port = evtchn::alloc_unbound(DOMID_SELF, peer);
        check_eq!(
            port,
            Ok(1),
            "fifo end: alloc_unbound for the peer gets port 1"
        );
        port
    } else {
        check_eq!(
            evtchn::set_priority(1, 7),
            Err(Errno::ENOSYS),
            "2-level end: the domain is 2-level (set_priority -ENOSYS)"
        );
        // The fifo end allocates port 1 once it is on FIFO: retry until then.
        let limit = time::now_ns().map_or(1, |now| now + STEP_LIMIT_NS);
        let port = loop {
            let bound = evtchn::bind_interdomain(peer, 1);
            if bound.is_ok() || time::now_ns().is_none_or(|now| now >= limit) {
                break bound;
            }
            let _ = sched::yield_now();
        };
        check_eq!(
            port,
            Ok(1),
            "2-level end: bind_interdomain to the peer's port 1 gets port 1"
        );
        // The event bind_interdomain raises on the new end (spec §2.3).
        upcall::reset_counters();
        upcall::unmask_vcpu();
        upcall::mask_vcpu();
        check_eq!(
            (upcall::port_events(1), upcall::events()),
            (1, 1),
            "2-level end: the event binding raised arrives in the first upcall"
        );
        port
    };
    let Ok(port) = port else {
        return;
    };
    upcall::reset_counters();
    upcall::unmask_vcpu();
    let mut rounds = 0;
    for round in 1..=ROUNDS {
        // The 2-level end pings first; the fifo end answers each ping.
        let pinged = is_fifo || evtchn::send(port).is_ok();
        let answered = pinged && wait_events(port, round);
        let ok = answered && (!is_fifo || evtchn::send(port).is_ok());
        if !ok {
            break;
        }
        rounds += 1;
    }
    check_eq!(
        rounds,
        ROUNDS,
        "{what}: {ROUNDS} round trips through upcalls"
    );
    if is_fifo {
        // Wait for the peer to close: the port turns unbound awaiting it.
        let limit = time::now_ns().map_or(1, |now| now + STEP_LIMIT_NS);
        while evtchn::status(DOMID_SELF, port).map(|s| s.status) == Ok(evtchn::stat::INTERDOMAIN)
            && time::now_ns().is_some_and(|now| now < limit)
        {
            let _ = sched::yield_now();
        }
        upcall::mask_vcpu();
        check_eq!(
            evtchn::status(DOMID_SELF, port).map(|s| s.status),
            Ok(evtchn::stat::UNBOUND),
            "fifo end: after the peer closes, the port is unbound awaiting it"
        );
        check_eq!(
            fifo::event_word(port).map(|w| w.load(Ordering::SeqCst)),
            Some(0),
            "fifo end: port 1's event word ends neither pending, masked nor linked"
        );
        check_eq!(
            evtchn::close(port),
            Ok(()),
            "fifo end: close of port 1 is rc 0"
        );
    } else {
        upcall::mask_vcpu();
        check!(
            upcall::last_upcall().selector == 1,
            "2-level end: the pongs came through the 2-level selector (word 0)"
        );
        check_eq!(
            evtchn::close(port),
            Ok(()),
            "2-level end: close of port 1 is rc 0"
        );
    }
    check_eq!(
        (upcall::port_events(port), upcall::events()),
        (ROUNDS, u64::from(ROUNDS)),
        "{what}: exactly {ROUNDS} events, all on port 1"
    );
}
