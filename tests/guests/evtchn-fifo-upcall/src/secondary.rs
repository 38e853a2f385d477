//! FIFO on a secondary vcpu with a control block of its own (spec §4.1,
//! §4.2): vcpu 1 comes up (VCPUOP_initialise + VCPUOP_up), gets its own
//! control block with init_control, and the ports that notify it (an IPI
//! port bound to vcpu 1, a loopback end moved there with bind_vcpu, and
//! VIRQ_TIMER bound to vcpu 1 and raised by its own singleshot timer) are
//! linked on vcpu 1's queues, at their priorities, and handled by upcalls
//! on vcpu 1; an event for vcpu 0 stays on vcpu 0's queue meanwhile.
//!
//! Every check runs on vcpu 0; vcpu 1 only records what its upcalls saw.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use sluice_guest::errno::Errno;
use sluice_guest::evtchn::{self, DOMID_SELF};
use sluice_guest::fifo::{self, GuestPage, LINKED, PENDING};
use sluice_guest::{check, check_eq, sched, shared_info, smp, time, upcall, vcpu};

/// Where vcpu 1's control block sits in the control page (vcpu 0's is at
/// 0; 8-aligned, and the 72-byte block fits).
const VCPU1_OFFSET: u32 = 128;
/// Round trips to vcpu 1 while it is blocked.
const BLOCKED_ROUNDS: u32 = 50;
/// How long vcpu 0 waits for vcpu 1 at one step, ns.
const STEP_LIMIT_NS: u64 = 20_000_000_000;

/// Set by vcpu 0 once the events for vcpu 1 are queued: vcpu 1 unmasks.
static GO: AtomicBool = AtomicBool::new(false);
/// Set by vcpu 1 once its first upcall is over and before it parks.
static FIRST_DONE: AtomicBool = AtomicBool::new(false);
/// Ports handled on vcpu 1, in order (first upcall only).
static VCPU1_ORDER: [AtomicU32; 4] = [const { AtomicU32::new(0) }; 4];
static VCPU1_ORDER_LEN: AtomicU32 = AtomicU32::new(0);
/// Events each port's handler saw on a vcpu other than the one its port
/// notifies.
static WRONG_VCPU: AtomicU32 = AtomicU32::new(0);
/// Set by vcpu 0: the next event on port 1 makes vcpu 1's handler arm
/// vcpu 1's singleshot timer (only a vcpu can arm its own).
static ARM_TIMER: AtomicBool = AtomicBool::new(false);
/// The singleshot timer's delay, ns.
const TIMER_DELAY_NS: u64 = 2_000_000;
/// The vcpu each recorded port notifies, by port (ports 1..=7).
static EXPECTED_VCPU: [AtomicU32; 8] = [const { AtomicU32::new(u32::MAX) }; 8];

/// Records `port` and whether it ran on the vcpu it notifies.
fn record(port: u32) {
    let here = smp::current_vcpu();
    let expected = EXPECTED_VCPU
        .get(port as usize)
        .map_or(u32::MAX, |v| v.load(Ordering::SeqCst));
    if expected != here {
        WRONG_VCPU.fetch_add(1, Ordering::SeqCst);
    }
    if port == 1 && here == 1 && ARM_TIMER.swap(false, Ordering::SeqCst) {
        let deadline = time::now_ns().map_or(0, |now| now + TIMER_DELAY_NS);
        let _ = vcpu::set_singleshot_timer(1, deadline);
    }
    if here == 1 && !FIRST_DONE.load(Ordering::SeqCst) {
        let index = VCPU1_ORDER_LEN.fetch_add(1, Ordering::SeqCst);
        if let Some(slot) = VCPU1_ORDER.get(index as usize) {
            slot.store(port, Ordering::SeqCst);
        }
    }
}

/// vcpu 1: waits (events masked, as it came up) until vcpu 0 has queued
/// its events, takes them in one upcall, then parks in SCHEDOP_block (the
/// runtime's loop after this returns), where further events wake it.
fn vcpu1_main(vcpu_id: u32) {
    let _ = vcpu::stop_periodic_timer(vcpu_id);
    while !GO.load(Ordering::SeqCst) {
        core::hint::spin_loop();
    }
    upcall::unmask_vcpu();
    FIRST_DONE.store(true, Ordering::SeqCst);
}

/// Waits until `done()` or the step limit; returns `done()`.
fn wait_for(done: impl Fn() -> bool) -> bool {
    let limit = time::now_ns().map_or(1, |now| now + STEP_LIMIT_NS);
    while !done() {
        if time::now_ns().is_none_or(|now| now >= limit) {
            return false;
        }
        let _ = sched::yield_now();
    }
    true
}

/// The ready word and the heads of queues `queues` of `vcpu`'s block.
fn queue_state(vcpu: u32, queues: [usize; 2]) -> Option<(u32, [u32; 2])> {
    let block = fifo::control_block(vcpu)?;
    let heads = queues.map(|queue| {
        block
            .head
            .get(queue)
            .map_or(u32::MAX, |head| head.load(Ordering::SeqCst))
    });
    Some((block.ready.load(Ordering::SeqCst), heads))
}

/// The scenario; `control_page` already holds vcpu 0's block at offset 0.
pub fn run(control_page: &'static GuestPage) {
    if !vcpu::exists(1) {
        sluice_guest::tap::skip(
            format_args!("FIFO events on vcpu 1 with its own control block"),
            "the domain has no vcpu 1",
        );
        return;
    }
    check_eq!(
        smp::start(1, vcpu1_main),
        Ok(()),
        "vcpu 1 comes up (VCPUOP_initialise + VCPUOP_up)"
    );
    check_eq!(
        fifo::init_control(control_page, VCPU1_OFFSET, 1),
        Ok(17),
        "init_control for vcpu 1 (its block at offset 128 of the same page) is rc 0, link_bits 17"
    );
    check_eq!(
        fifo::init_control(control_page, VCPU1_OFFSET, 1),
        Err(Errno::EINVAL),
        "a second init_control for vcpu 1 is -EINVAL"
    );

    let ipi1 = evtchn::bind_ipi(1);
    let ipi0 = evtchn::bind_ipi(0);
    let a = evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF);
    let b = a.and_then(|a| evtchn::bind_interdomain(DOMID_SELF, a));
    check_eq!(
        (ipi1, ipi0, a, b),
        (Ok(1), Ok(2), Ok(3), Ok(4)),
        "IPI of vcpu 1 on port 1, IPI of vcpu 0 on port 2, loopback pair on ports 3 and 4"
    );
    // Take the event bind_interdomain raised on port 4 while it is still
    // vcpu 0's, then move port 4 to vcpu 1.
    upcall::unmask_vcpu();
    upcall::mask_vcpu();
    check_eq!(
        evtchn::bind_vcpu(4, 1),
        Ok(()),
        "bind_vcpu moves port 4 to vcpu 1"
    );
    let set = [evtchn::set_priority(1, 9), evtchn::set_priority(4, 2)];
    check_eq!(
        set,
        [Ok(()), Ok(())],
        "set_priority 9 on port 1 and 2 on port 4"
    );
    for (port, notified) in [(1, 1), (2, 0), (3, 0), (4, 1)] {
        if let Some(slot) = EXPECTED_VCPU.get(port as usize) {
            slot.store(notified, Ordering::SeqCst);
        }
        upcall::set_handler(port, record);
    }
    upcall::reset_counters();

    // Both vcpus masked: the events wait on their vcpus' queues.
    let sent = [evtchn::send(1), evtchn::send(3), evtchn::send(2)];
    check_eq!(
        sent,
        [Ok(()), Ok(()), Ok(())],
        "sends on port 1 (vcpu 1), port 3 (reaching port 4, vcpu 1) and port 2 (vcpu 0) are rc 0"
    );
    check_eq!(
        queue_state(1, [9, 2]),
        Some(((1 << 9) | (1 << 2), [1, 4])),
        "vcpu 1's control block: queues 9 and 2 ready, port 1 heads queue 9, port 4 heads queue 2"
    );
    check_eq!(
        queue_state(0, [7, 2]),
        Some((1 << 7, [2, 0])),
        "vcpu 0's control block: only queue 7 ready, port 2 at its head; none of vcpu 1's ports"
    );
    let upcall_pending = [0, 1].map(|v| {
        shared_info::vcpu_info(v).map(|info| info.evtchn_upcall_pending.load(Ordering::SeqCst))
    });
    check_eq!(
        upcall_pending,
        [Some(1), Some(1)],
        "each vcpu's evtchn_upcall_pending is set"
    );
    check_eq!(
        fifo::event_word(2).map(|w| w.load(Ordering::SeqCst)),
        Some(PENDING | LINKED),
        "port 2's event word is pending and linked"
    );

    GO.store(true, Ordering::SeqCst);
    let finished = wait_for(|| FIRST_DONE.load(Ordering::SeqCst));
    check!(finished, "vcpu 1 unmasks and finishes its first upcall");
    let order = VCPU1_ORDER
        .each_ref()
        .map(|slot| slot.load(Ordering::SeqCst));
    check_eq!(
        (order, upcall::upcalls_on(1), upcall::upcalls_on(0)),
        ([4, 1, 0, 0], 1, 0),
        "vcpu 1's one upcall takes port 4 (priority 2) before port 1 (priority 9); vcpu 0 had no upcall"
    );
    check_eq!(
        upcall::port_events(2),
        0,
        "port 2 (vcpu 0's) is still waiting for vcpu 0"
    );
    upcall::unmask_vcpu();
    upcall::mask_vcpu();
    check_eq!(
        (upcall::port_events(2), upcall::upcalls_on(0)),
        (1, 1),
        "unmasking vcpu 0 brings port 2's event in one upcall on vcpu 0"
    );

    // vcpu 1 now waits in SCHEDOP_block: each event wakes it.
    let mut rounds = 0;
    for round in 1..=BLOCKED_ROUNDS {
        let port = if round % 2 == 0 { 1 } else { 3 };
        let watched = if port == 1 { 1 } else { 4 };
        let before = upcall::port_events(watched);
        if evtchn::send(port).is_err() || !wait_for(|| upcall::port_events(watched) > before) {
            break;
        }
        rounds += 1;
    }
    check_eq!(
        rounds,
        BLOCKED_ROUNDS,
        "{BLOCKED_ROUNDS} events alternately on ports 1 and 4 each wake vcpu 1 from SCHEDOP_block"
    );
    check_eq!(
        (
            upcall::port_events(1),
            upcall::port_events(4),
            WRONG_VCPU.load(Ordering::SeqCst)
        ),
        (1 + BLOCKED_ROUNDS / 2, 1 + BLOCKED_ROUNDS / 2, 0),
        "ports 1 and 4 each saw exactly their events, every one on vcpu 1, as port 2's on vcpu 0"
    );

    // VIRQ_TIMER of vcpu 1, raised by vcpu 1's own singleshot timer, which
    // port 1's handler arms on vcpu 1.
    let virq = evtchn::bind_virq(evtchn::virq::TIMER, 1);
    check_eq!(virq, Ok(5), "bind_virq(VIRQ_TIMER, vcpu 1) gets port 5");
    if let Some(slot) = EXPECTED_VCPU.get(5) {
        slot.store(1, Ordering::SeqCst);
    }
    upcall::set_handler(5, record);
    ARM_TIMER.store(true, Ordering::SeqCst);
    let sent = evtchn::send(1);
    let fired = wait_for(|| upcall::port_events(5) >= 1);
    check!(
        sent.is_ok() && fired,
        "vcpu 1 arms its singleshot timer from port 1's handler and its VIRQ_TIMER arrives"
    );
    check_eq!(
        (
            upcall::port_events(5),
            upcall::last_vcpu(),
            WRONG_VCPU.load(Ordering::SeqCst)
        ),
        (1, Some(1), 0),
        "the one VIRQ_TIMER event is handled on vcpu 1, through its queues"
    );
    for port in 1..=5 {
        upcall::clear_handler(port);
    }
    let closed = (1..=5).filter(|&port| evtchn::close(port).is_ok()).count();
    check_eq!(closed, 5, "ports 1..=5 close");
}
