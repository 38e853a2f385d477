//! Interrupts on the bound pirq: counted exactly, each EOId from the
//! upcall that handles it (as Linux's pirq handler does, well within the
//! hypervisor's 1 ms forced EOI); a slow guest that EOIs late, twice, or
//! never; none after close; a re-bind after close works; unmapping a bound
//! pirq detaches it from the line.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use sluice_guest::evtchn::{self, DOMID_SELF, Port, stat};
use sluice_guest::physdev::{self, XENIRQSTAT_NEEDS_EOI, XENIRQSTAT_SHARED};
use sluice_guest::time::{now_ns, rdtsc};
use sluice_guest::{Errno, check, check_eq, println, sched, shared_info, smp, upcall};

use crate::{HUGE_PIRQ, RTC_PIRQ};

/// Interrupts counted, each EOId by its handler.
pub const INTERRUPTS: u32 = 20;
/// Longest wait for one interrupt (the RTC runs at 64 Hz: 15.6 ms).
pub const ARRIVAL_TIMEOUT_NS: u64 = 2_000_000_000;
/// The window after close (or unmap) in which nothing may arrive.
const SILENCE_WINDOW_NS: u64 = 200_000_000;
/// Rounds of each part of the slow guest's phase.
const SLOW_ROUNDS: u32 = 5;
/// How long the slow guest holds each EOI: well past the hypervisor's
/// 1 ms forced EOI, well short of the next RTC period.
const SLOW_HOLD_NS: u64 = 5_000_000;
/// Interrupts the slow guest EOIs around the forced EOI's deadline.
const RACING_ROUNDS: u32 = 21;
/// The first of their holds; each next one is [`RACING_STEP_NS`] longer
/// (0.5 ms to 1.5 ms).
const RACING_FIRST_NS: u64 = 500_000;
/// The step between two holds.
const RACING_STEP_NS: u64 = 50_000;

/// Events the pirq handler has seen.
static EVENTS: AtomicU32 = AtomicU32::new(0);
/// The same, by the vcpu whose upcall ran the handler.
static EVENTS_ON: [AtomicU32; smp::MAX_VCPUS] = [const { AtomicU32::new(0) }; smp::MAX_VCPUS];
/// Set by the secondary vcpu once its upcalls are unmasked.
static SECONDARY_READY: AtomicBool = AtomicBool::new(false);
/// TSC at each upcall that handled the pirq (for the latency estimate).
static UPCALL_TSC: [AtomicU64; INTERRUPTS as usize] =
    [const { AtomicU64::new(0) }; INTERRUPTS as usize];
/// While not 0, the handler EOIs every event before this [`EVENTS`] count
/// itself, and at this count masks the port instead (so that nothing after
/// it is handled, and its EOI is left to close); 0: it only counts.
static EOI_UNTIL: AtomicU32 = AtomicU32::new(0);
/// The handler's PHYSDEVOP_eoi calls that answered rc 0.
static HANDLER_EOIS: AtomicU32 = AtomicU32::new(0);

/// The pirq port's handler (the upcall has cleared its pending bit):
/// counts the event and, as [`EOI_UNTIL`] says, EOIs it.
pub fn on_pirq(port: u32) {
    let tsc = rdtsc();
    if let Some(count) = EVENTS_ON.get(smp::current_vcpu() as usize) {
        count.fetch_add(1, Ordering::SeqCst);
    }
    let seen = EVENTS.fetch_add(1, Ordering::SeqCst);
    if let Some(slot) = UPCALL_TSC.get(seen as usize) {
        slot.store(tsc, Ordering::SeqCst);
    }
    let until = EOI_UNTIL.load(Ordering::SeqCst);
    if until == 0 {
        return;
    }
    if seen + 1 < until {
        if physdev::eoi(RTC_PIRQ).is_ok() {
            HANDLER_EOIS.fetch_add(1, Ordering::SeqCst);
        }
    } else if let Some(shared) = shared_info::get() {
        shared.mask(port);
    }
}

/// The handler EOIs the next `count` events but the last, and masks the
/// port at the last. Returns the [`EVENTS`] count the last one makes.
pub fn eoi_in_handler(count: u32) -> u32 {
    HANDLER_EOIS.store(0, Ordering::SeqCst);
    let until = EVENTS.load(Ordering::SeqCst) + count;
    EOI_UNTIL.store(until, Ordering::SeqCst);
    until
}

/// The handler only counts from now on.
fn count_only() {
    EOI_UNTIL.store(0, Ordering::SeqCst);
}

/// The PHYSDEVOP_eoi calls of the handler that answered rc 0.
pub fn handler_eois() -> u32 {
    HANDLER_EOIS.load(Ordering::SeqCst)
}

/// Events the handler has seen so far.
pub fn events() -> u32 {
    EVENTS.load(Ordering::SeqCst)
}

/// After close: clears what the handler left on `port` (its pending bit,
/// its guest-side mask), so that a later bind that gets the same port
/// number starts clean.
pub fn scrub_closed_port(port: Port) {
    if let Some(shared) = shared_info::get() {
        shared.clear_pending(port);
        shared.clear_mask(port);
    }
}

/// Binds pirq 8 (BIND_PIRQ__WILL_SHARE in `flags` or not) and installs
/// [`on_pirq`] for its port with upcalls masked, so that an interrupt
/// arriving at once is not dispatched before the handler is in place (it
/// would be counted as nobody's and never EOId).
pub fn bind_with_handler_flags(flags: u32) -> Result<Port, Errno> {
    upcall::mask_vcpu();
    let bound = evtchn::bind_pirq(RTC_PIRQ, flags);
    if let Ok(port) = bound {
        upcall::set_handler(port, on_pirq);
    }
    upcall::unmask_vcpu();
    bound
}

/// [`bind_with_handler_flags`] without sharing.
fn bind_with_handler() -> Result<Port, Errno> {
    bind_with_handler_flags(0)
}

/// Waits (polling `port`) until the handler has seen `count` events or
/// `timeout_ns` passes; returns whether it did.
pub fn wait_for_events(port: Port, count: u32, timeout_ns: u64) -> bool {
    let Some(start) = now_ns() else {
        return false;
    };
    let deadline = start + timeout_ns;
    while EVENTS.load(Ordering::SeqCst) < count {
        let Some(now) = now_ns() else {
            return false;
        };
        if now >= deadline {
            return false;
        }
        // A spurious or timed-out return is fine: the loop looks again.
        let _ = sched::poll(&[port], deadline.min(now + 100_000_000));
    }
    true
}

/// Waits for `rounds` more events than `base`, one at a time, each within
/// ARRIVAL_TIMEOUT_NS of the last; returns how many arrived in time.
fn wait_for_each(port: Port, base: u32, rounds: u32) -> u32 {
    let mut received = 0;
    for count in 1..=rounds {
        if !wait_for_events(port, base + count, ARRIVAL_TIMEOUT_NS) {
            break;
        }
        received = count;
    }
    received
}

/// Spins (events enabled, so upcalls come in) for `window_ns`; returns
/// whether the event count and the port's pending bit stayed as they were.
fn stays_quiet(port: Port, window_ns: u64) -> bool {
    let before = EVENTS.load(Ordering::SeqCst);
    let Some(start) = now_ns() else {
        return false;
    };
    let shared = shared_info::get();
    while now_ns().is_some_and(|now| now < start + window_ns) {
        if EVENTS.load(Ordering::SeqCst) != before
            || shared.is_some_and(|shared| shared.is_pending(port))
        {
            return false;
        }
        core::hint::spin_loop();
    }
    EVENTS.load(Ordering::SeqCst) == before
}

/// Binds pirq 8, receives [`INTERRUPTS`] interrupts, each but the last
/// EOId by the handler, then closes the port without the last EOI.
pub fn counted_interrupts() {
    // The handler EOIs each event but the last, which masks the port: the
    // hypervisor forces that one's EOI, and nothing after it is handled.
    // Set before the bind, so that no event slips by without its EOI.
    let last = eoi_in_handler(INTERRUPTS);
    let base = last - INTERRUPTS;
    let port = match bind_with_handler() {
        Ok(port) => port,
        Err(errno) => {
            check!(false, "bind_pirq of mapped pirq 8 succeeds ({errno:?})");
            return;
        }
    };
    check!(true, "bind_pirq of mapped pirq 8 succeeds (port {port})");
    let status = evtchn::status(DOMID_SELF, port);
    check_eq!(
        status.map(|status| (status.status, status.vcpu, status.pirq())),
        Ok((stat::PIRQ, 0, RTC_PIRQ)),
        "status of the port: pirq, vcpu 0, pirq 8"
    );
    check_eq!(
        evtchn::bind_pirq(RTC_PIRQ, 0),
        Err(Errno::EEXIST),
        "bind_pirq of the bound pirq again fails -EEXIST"
    );
    check_eq!(
        evtchn::bind_pirq(HUGE_PIRQ, 0),
        Err(Errno::EINVAL),
        "bind_pirq of a pirq >= nr_pirqs fails -EINVAL"
    );
    // XSA-46/83: the failed binds took no port.
    match evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF) {
        Ok(next) => {
            check_eq!(next, port + 1, "the failed binds left no port behind");
            let _ = evtchn::close(next);
        }
        Err(errno) => {
            check!(false, "alloc_unbound after the failed binds ({errno:?})");
        }
    }

    let received = wait_for_each(port, base, INTERRUPTS);
    check_eq!(
        received,
        INTERRUPTS,
        "{INTERRUPTS} interrupts of GSI 8 arrive on the port"
    );
    check_eq!(
        handler_eois(),
        INTERRUPTS - 1,
        "every PHYSDEVOP_eoi is rc 0"
    );
    print_upcall_tsc();

    let flags = physdev::irq_status_query(RTC_PIRQ);
    check_eq!(
        flags.map(|flags| flags & (XENIRQSTAT_NEEDS_EOI | XENIRQSTAT_SHARED)),
        Ok(XENIRQSTAT_NEEDS_EOI),
        "irq_status_query of the bound pirq: needs_eoi, not shared"
    );

    // Close without the last EOI (forced by the hypervisor by now, or
    // completed by close): the line is detached.
    check_eq!(
        evtchn::close(port),
        Ok(()),
        "close of the pirq port is rc 0"
    );
    count_only();
    upcall::clear_handler(port);
    scrub_closed_port(port);
    check!(
        stays_quiet(port, SILENCE_WINDOW_NS),
        "after close no event arrives for 200 ms"
    );
    check_eq!(
        EVENTS.load(Ordering::SeqCst) - base,
        INTERRUPTS,
        "the handler saw exactly {INTERRUPTS} events"
    );
    check_eq!(
        EVENTS.load(Ordering::SeqCst),
        last,
        "the masked port handled nothing after the last"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, port).map(|status| status.status),
        Ok(stat::CLOSED),
        "the closed port reads closed"
    );
}

/// Prints the TSC of every counted upcall, to set beside the hypervisor's
/// `loglvl=trace` interrupt times.
fn print_upcall_tsc() {
    sluice_guest::print!("# pirq upcall tsc:");
    for slot in &UPCALL_TSC {
        sluice_guest::print!(" {}", slot.load(Ordering::SeqCst));
    }
    println!();
}

/// A close leaves the line free: binding again gets interrupts again.
pub fn rebind_after_close() {
    let port = match bind_with_handler() {
        Ok(port) => port,
        Err(errno) => {
            check!(false, "bind_pirq after close succeeds ({errno:?})");
            return;
        }
    };
    check!(true, "bind_pirq after close succeeds (port {port})");
    let before = EVENTS.load(Ordering::SeqCst);
    check!(
        wait_for_events(port, before + 1, ARRIVAL_TIMEOUT_NS),
        "the re-bound port receives an interrupt"
    );
    check_eq!(physdev::eoi(RTC_PIRQ), Ok(()), "its PHYSDEVOP_eoi is rc 0");
    check_eq!(
        evtchn::close(port),
        Ok(()),
        "close of the re-bound port is rc 0"
    );
    upcall::clear_handler(port);
}

/// Unmapping a bound pirq detaches it from the line; the port stays a pirq
/// port until closed, and the pirq can no longer be bound.
pub fn unmap_while_bound() {
    let port = match bind_with_handler() {
        Ok(port) => port,
        Err(errno) => {
            check!(false, "bind_pirq before unmap succeeds ({errno:?})");
            return;
        }
    };
    let before = EVENTS.load(Ordering::SeqCst);
    check!(
        wait_for_events(port, before + 1, ARRIVAL_TIMEOUT_NS),
        "the port bound before unmap receives an interrupt"
    );
    check_eq!(
        physdev::unmap_pirq(DOMID_SELF, RTC_PIRQ as i32),
        Ok(()),
        "unmap_pirq of the bound pirq 8 is rc 0"
    );
    check!(
        stays_quiet(port, SILENCE_WINDOW_NS),
        "after unmap no event arrives for 200 ms"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, port).map(|status| status.status),
        Ok(stat::PIRQ),
        "the port stays in state pirq after unmap"
    );
    check_eq!(evtchn::close(port), Ok(()), "close after unmap is rc 0");
    upcall::clear_handler(port);
    check_eq!(
        physdev::unmap_pirq(DOMID_SELF, RTC_PIRQ as i32),
        Err(Errno::EINVAL),
        "unmap_pirq of the unmapped pirq fails -EINVAL"
    );
    check_eq!(
        evtchn::bind_pirq(RTC_PIRQ, 0),
        Err(Errno::EPERM),
        "bind_pirq of the unmapped pirq fails -EPERM"
    );
}

/// The secondary vcpu: takes upcalls, then parks in SCHEDOP_block (the
/// runtime's loop), where each pirq event wakes it.
fn secondary(_vcpu: u32) {
    upcall::unmask_vcpu();
    SECONDARY_READY.store(true, Ordering::SeqCst);
}

/// EVTCHNOP_bind_vcpu of the pirq port to vcpu `target` (on another pCPU):
/// [`INTERRUPTS`] interrupts then arrive as upcalls on `target`, whose
/// handler EOIs each but the last. The hypervisor logs the line's move
/// to `target`'s pCPU (the scenario checks it and where the interrupts
/// were taken).
pub fn counted_on_vcpu(target: u32) {
    check_eq!(
        smp::start(target, secondary),
        Ok(()),
        "vcpu {target} starts"
    );
    let Some(start) = now_ns() else {
        check!(false, "the clock runs");
        return;
    };
    while !SECONDARY_READY.load(Ordering::SeqCst) {
        if now_ns().is_none_or(|now| now > start + ARRIVAL_TIMEOUT_NS) {
            check!(false, "vcpu {target} unmasks its upcalls");
            return;
        }
        let _ = sched::yield_now();
    }
    // Bound and moved with vcpu 0's upcalls masked, so that vcpu 0 takes
    // no event of the port; one that arrived before the move stays pending
    // (bind_vcpu re-raises nothing) and is EOId here.
    upcall::mask_vcpu();
    // Set before the bind: vcpu `target` may take the first event as soon
    // as the port moves. One taken before the move stays pending on vcpu
    // 0 and is EOId below without the handler.
    let base = EVENTS.load(Ordering::SeqCst);
    eoi_in_handler(INTERRUPTS);
    let bound = evtchn::bind_pirq(RTC_PIRQ, 0);
    let port = match bound {
        Ok(port) => port,
        Err(errno) => {
            upcall::unmask_vcpu();
            check!(false, "bind_pirq of mapped pirq 8 succeeds ({errno:?})");
            return;
        }
    };
    upcall::set_handler(port, on_pirq);
    let moved = evtchn::bind_vcpu(port, target);
    let shared = shared_info::get();
    let early = shared.is_some_and(|shared| shared.is_pending(port));
    if early && let Some(shared) = shared {
        shared.clear_pending(port);
        let _ = physdev::eoi(RTC_PIRQ);
    }
    upcall::unmask_vcpu();
    check_eq!(
        moved,
        Ok(()),
        "bind_vcpu of the pirq port to vcpu {target} is rc 0"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, port).map(|status| (status.status, status.vcpu)),
        Ok((stat::PIRQ, target)),
        "status of the port: pirq, vcpu {target}"
    );
    println!("# pirq: an interrupt before the move: {early}");

    let on_vcpu0 = EVENTS_ON
        .first()
        .map_or(0, |count| count.load(Ordering::SeqCst));
    // Vcpu `target`'s handler EOIs each event but the last, which masks
    // the port, so that exactly INTERRUPTS are handled.
    let received = wait_for_each(port, base, INTERRUPTS);
    check_eq!(
        received,
        INTERRUPTS,
        "{INTERRUPTS} interrupts of GSI 8 arrive on the port bound to vcpu {target}"
    );
    check_eq!(
        handler_eois(),
        INTERRUPTS - 1,
        "vcpu {target}'s handler EOId each but the last, every PHYSDEVOP_eoi rc 0"
    );
    check_eq!(
        EVENTS_ON
            .first()
            .map_or(0, |count| count.load(Ordering::SeqCst)),
        on_vcpu0,
        "vcpu 0 handled none of them"
    );
    check_eq!(
        EVENTS_ON
            .get(target as usize)
            .map_or(0, |count| count.load(Ordering::SeqCst)),
        INTERRUPTS,
        "vcpu {target}'s upcalls handled all {INTERRUPTS}"
    );
    check_eq!(
        evtchn::close(port),
        Ok(()),
        "close of the port bound to vcpu {target} is rc 0"
    );
    count_only();
    upcall::clear_handler(port);
    scrub_closed_port(port);
}

/// Spins until `ns` of system time have passed since `start`.
fn spin_until(start: u64, ns: u64) {
    while now_ns().is_some_and(|now| now < start + ns) {
        core::hint::spin_loop();
    }
}

/// A slow guest. First it EOIs each of [`SLOW_ROUNDS`] interrupts 5 ms
/// after seeing it, long after the hypervisor forced its EOI (1 ms), and
/// then EOIs it again: both answer rc 0, as on Xen (the EOI finds nothing
/// owed), and the line keeps interrupting. Then it EOIs
/// [`RACING_ROUNDS`] interrupts 0.5 to 1.5 ms after seeing them, so that
/// its EOI races the forced one (on this pCPU's tick or another's): each
/// answers 0 and the line goes on. Then it sends no EOI at all and
/// still receives [`SLOW_ROUNDS`] more: each EOI is forced, so the line is
/// unmasked without it (without the forced EOI the first of these would
/// be the last).
pub fn slow_eoi() {
    count_only();
    let port = match bind_with_handler() {
        Ok(port) => port,
        Err(errno) => {
            check!(false, "bind_pirq of mapped pirq 8 succeeds ({errno:?})");
            return;
        }
    };
    check!(true, "bind_pirq of mapped pirq 8 succeeds (port {port})");

    let base = events();
    let (mut arrived, mut late, mut twice) = (0, 0, 0);
    for round in 1..=SLOW_ROUNDS {
        if !wait_for_events(port, base + round, ARRIVAL_TIMEOUT_NS) {
            break;
        }
        arrived = round;
        let Some(seen) = now_ns() else {
            break;
        };
        spin_until(seen, SLOW_HOLD_NS);
        if physdev::eoi(RTC_PIRQ).is_ok() {
            late += 1;
        }
        if physdev::eoi(RTC_PIRQ).is_ok() {
            twice += 1;
        }
    }
    check_eq!(
        arrived,
        SLOW_ROUNDS,
        "{SLOW_ROUNDS} interrupts arrive while each is EOId 5 ms late"
    );
    check_eq!(
        late,
        SLOW_ROUNDS,
        "every late PHYSDEVOP_eoi (after the 1 ms forced EOI) is rc 0"
    );
    check_eq!(
        twice,
        SLOW_ROUNDS,
        "every second PHYSDEVOP_eoi of the same interrupt is rc 0"
    );

    let base = events();
    let (mut arrived, mut answered) = (0, 0);
    for round in 1..=RACING_ROUNDS {
        if !wait_for_events(port, base + round, ARRIVAL_TIMEOUT_NS) {
            break;
        }
        arrived = round;
        let Some(seen) = now_ns() else {
            break;
        };
        spin_until(
            seen,
            RACING_FIRST_NS + u64::from(round - 1) * RACING_STEP_NS,
        );
        if physdev::eoi(RTC_PIRQ).is_ok() {
            answered += 1;
        }
    }
    check_eq!(
        (arrived, answered),
        (RACING_ROUNDS, RACING_ROUNDS),
        "{RACING_ROUNDS} interrupts arrive, each EOId 0.5 to 1.5 ms late (racing the forced EOI), every EOI rc 0"
    );

    let base = events();
    let started = now_ns();
    let received = wait_for_each(port, base, SLOW_ROUNDS);
    check_eq!(
        received,
        SLOW_ROUNDS,
        "without any PHYSDEVOP_eoi {SLOW_ROUNDS} more interrupts arrive (each EOI forced)"
    );
    if let (Some(start), Some(end)) = (started, now_ns()) {
        println!(
            "# pirq slow: {received} interrupts without an EOI in {} ms",
            (end - start) / 1_000_000
        );
    }
    let flags = physdev::irq_status_query(RTC_PIRQ);
    check_eq!(
        flags.map(|flags| flags & (XENIRQSTAT_NEEDS_EOI | XENIRQSTAT_SHARED)),
        Ok(XENIRQSTAT_NEEDS_EOI),
        "irq_status_query of the slow guest's pirq: needs_eoi, not shared"
    );
    check_eq!(
        evtchn::close(port),
        Ok(()),
        "close with an EOI owed is rc 0"
    );
    upcall::clear_handler(port);
    scrub_closed_port(port);
    check_eq!(
        physdev::eoi(RTC_PIRQ),
        Ok(()),
        "PHYSDEVOP_eoi of the mapped pirq after close is rc 0"
    );
}
