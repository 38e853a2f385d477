//! Event delivery through the upcall, polling and blocking, and the
//! VIRQ_TIMER the hypervisor runs for every PV vcpu (spec §3.3, §3.4, §7.4,
//! §7.5, §7.10, §7.11, §5; §9.4 items 1–8, 12; §10 traps 3, 9, 10, 13).
//!
//! On entry every port but 0 is free and vcpu 0 is still masked with no
//! callback registered.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use sluice_guest::errno::Errno;
use sluice_guest::evtchn::{self, DOMID_SELF, stat, virq};
use sluice_guest::{check, check_eq, println, sched, time, upcall, vcpu};

use crate::{Ctx, FAR_PORT};

/// Port and count seen by [`record_handler`].
static HANDLED_PORT: AtomicU32 = AtomicU32::new(0);
static HANDLED_COUNT: AtomicU32 = AtomicU32::new(0);

fn record_handler(port: u32) {
    HANDLED_PORT.store(port, Ordering::SeqCst);
    HANDLED_COUNT.fetch_add(1, Ordering::SeqCst);
}

/// System times of the first timer ticks, for the report.
const TICKS_KEPT: usize = 8;
static TICK_TIMES: [AtomicU64; TICKS_KEPT] = [const { AtomicU64::new(0) }; TICKS_KEPT];
static TICKS: AtomicU32 = AtomicU32::new(0);

fn tick_handler(_port: u32) {
    let tick = TICKS.fetch_add(1, Ordering::SeqCst) as usize;
    if let Some(slot) = TICK_TIMES.get(tick) {
        slot.store(time::now_ns().unwrap_or(0), Ordering::SeqCst);
    }
}

/// Now plus `delta_ns`, in system time. Without a time record it is 1 ns
/// after boot, already past, so that a poll returns at once instead of
/// blocking forever and the checks after it fail.
fn deadline(delta_ns: u64) -> u64 {
    time::now_ns().map_or(1, |now| now + delta_ns)
}

/// Upcalls: delivery, the bounce frame, masking at port and vcpu level,
/// handlers, the second selector word, block and poll.
pub fn delivery(ctx: &Ctx) {
    let shared = ctx.shared;
    let vcpu0 = shared.vcpu0();
    ctx.clear_events();
    upcall::reset_counters();

    check_eq!(
        upcall::register_callbacks(),
        Ok(()),
        "callback_op registers the event and failsafe callbacks"
    );
    upcall::unmask_vcpu();
    check_eq!(
        upcall::upcalls(),
        0,
        "unmasking the vcpu with nothing pending raises no upcall"
    );

    check_eq!(evtchn::bind_ipi(0), Ok(1), "bind_ipi(vcpu 0) gets port 1");
    check_eq!(
        evtchn::send(1),
        Ok(()),
        "send on the IPI port with the vcpu unmasked is rc 0"
    );
    check_eq!(
        (
            upcall::upcalls(),
            upcall::port_events(1),
            upcall::last_port()
        ),
        (1, 1, Some(1)),
        "the upcall runs once, before send returns, and dispatches port 1"
    );
    let frame = upcall::last_upcall();
    println!(
        "# bounce frame: rip={:#x} cs={:#x} rflags={:#x} ss={:#x}",
        frame.rip, frame.cs, frame.rflags, frame.ss
    );
    check_eq!(
        frame.mask_inside,
        1,
        "inside the callback evtchn_upcall_mask is 1"
    );
    check_eq!(
        frame.saved_mask(),
        0,
        "the bounce frame's cs slot carries the saved mask (0) in bits 32..40"
    );
    check!(
        frame.interrupts_enabled(),
        "the bounce frame's rflags has IF set (= !saved mask) (rflags {:#x})",
        frame.rflags
    );
    check_eq!(
        frame.cs & 0xffff,
        0xe030,
        "the bounce frame's cs selector is FLAT_KERNEL_CS with RPL cleared (0xe030): kernel mode was interrupted"
    );
    check_eq!(
        frame.entry_rsp % 16,
        8,
        "the callback starts with rsp = 8 (mod 16): a 7-slot frame below a 16-byte aligned start"
    );
    // The spec names only cs; Xen 4.17 leaves ss as the guest had it.
    check_eq!(
        frame.ss,
        0xe02b,
        "the bounce frame's ss is FLAT_KERNEL_SS 0xe02b (RPL kept)"
    );
    let after_syscall = sluice_guest::hypercall::page_address()
        + u64::from(sluice_guest::hypercall::nr::EVENT_CHANNEL_OP)
            * sluice_guest::hypercall::STUB_SIZE
        + 10;
    check_eq!(
        frame.rip,
        after_syscall,
        "the upcall interrupts the send's return: the frame's rip is just past stub 32's syscall"
    );
    check_eq!(frame.selector, 1, "the callback took selector word 0 only");
    check!(
        !vcpu0.upcall_masked(),
        "HYPERVISOR_iret restores evtchn_upcall_mask to 0"
    );
    check_eq!(
        ctx.signal(1),
        (false, false, false),
        "after the upcall nothing is left pending"
    );

    upcall::set_handler(1, record_handler);
    check_eq!(
        evtchn::send(1),
        Ok(()),
        "send on the IPI port with a handler is rc 0"
    );
    check_eq!(
        (
            HANDLED_COUNT.load(Ordering::SeqCst),
            HANDLED_PORT.load(Ordering::SeqCst)
        ),
        (1, 1),
        "the per-port handler runs once with its port"
    );
    upcall::clear_handler(1);

    shared.mask(1);
    let before = upcall::upcalls();
    check_eq!(evtchn::send(1), Ok(()), "send on a masked port is rc 0");
    check_eq!(
        upcall::upcalls(),
        before,
        "an event on a masked port raises no upcall"
    );
    check_eq!(
        ctx.signal(1),
        (true, false, false),
        "an event on a masked port only sets its pending bit"
    );
    check_eq!(
        evtchn::unmask(1),
        Ok(()),
        "EVTCHNOP_unmask of the pending port is rc 0"
    );
    check_eq!(
        (upcall::upcalls(), upcall::port_events(1)),
        (before + 1, 3),
        "EVTCHNOP_unmask of a pending port delivers its upcall"
    );

    upcall::mask_vcpu();
    let before = upcall::upcalls();
    check_eq!(evtchn::send(1), Ok(()), "send with the vcpu masked is rc 0");
    check_eq!(
        upcall::upcalls(),
        before,
        "no upcall while evtchn_upcall_mask is 1"
    );
    check!(
        vcpu0.upcall_pending(),
        "evtchn_upcall_pending is set while the vcpu is masked"
    );
    upcall::unmask_vcpu();
    check_eq!(
        upcall::upcalls(),
        before + 1,
        "clearing the mask plus a hypercall delivers the pending upcall"
    );

    // A loopback pair: the bind itself raises an upcall on the new port.
    check_eq!(
        evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF),
        Ok(2),
        "alloc_unbound gets port 2"
    );
    check_eq!(
        evtchn::bind_interdomain(DOMID_SELF, 2),
        Ok(3),
        "bind_interdomain gets port 3"
    );
    check_eq!(
        upcall::port_events(3),
        1,
        "bind_interdomain's pending bit arrives as an upcall on the new port"
    );
    check_eq!(evtchn::send(3), Ok(()), "send on loopback port 3 is rc 0");
    check_eq!(
        (upcall::port_events(2), upcall::port_events(3)),
        (1, 1),
        "send on port 3 raises an upcall on its peer, port 2, only"
    );
    check_eq!(evtchn::send(2), Ok(()), "send on loopback port 2 is rc 0");
    check_eq!(
        upcall::port_events(3),
        2,
        "send on port 2 raises an upcall on port 3"
    );

    second_selector_word();
    block_and_poll(ctx);
}

/// A port in word 1 of the bitmaps (spec §9.4 item 4), reached by filling
/// ports 4..=65; the table grows past its first 64-port bucket on the way.
fn second_selector_word() {
    let mut filled = 0;
    for port in 4..=65u32 {
        if evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF) == Ok(port) {
            filled += 1;
        }
    }
    check_eq!(
        filled,
        62,
        "alloc_unbound fills ports 4..=65 in order, growing the table past port 63"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, 127).map(|s| s.status),
        Ok(stat::CLOSED),
        "after the table grew, free port 127 is valid: status rc 0, closed"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, 128).map(|_| ()),
        Err(Errno::EINVAL),
        "the table grows in 64-port buckets: port 128 is still invalid"
    );
    check_eq!(
        evtchn::bind_ipi(0),
        Ok(66),
        "bind_ipi gets port 66, in selector word 1"
    );
    check_eq!(evtchn::send(66), Ok(()), "send on port 66 is rc 0");
    check_eq!(
        (upcall::port_events(66), upcall::last_upcall().selector),
        (1, 0b10),
        "an event on port 66 raises an upcall with selector bit 1"
    );
    let closed = (4..=66u32)
        .filter(|&port| evtchn::close(port) == Ok(()))
        .count();
    check_eq!(closed, 63, "ports 4..=66 close");
}

/// SCHEDOP_block and SCHEDOP_poll (spec §7.10).
fn block_and_poll(ctx: &Ctx) {
    let shared = ctx.shared;
    let vcpu0 = shared.vcpu0();
    let first = time::now_ns();
    let version = vcpu0.time.version.load(Ordering::SeqCst);
    check!(
        first.is_some() && version != 0 && version.is_multiple_of(2),
        "vcpu 0's time record is published: version even and non-zero ({version}), multiplier set"
    );

    upcall::mask_vcpu();
    let before = upcall::port_events(1);
    check_eq!(
        evtchn::send(1),
        Ok(()),
        "send on port 1 with the vcpu masked is rc 0"
    );
    check_eq!(
        sched::block(),
        Ok(()),
        "SCHEDOP_block with an upcall pending returns rc 0 at once"
    );
    check!(
        !vcpu0.upcall_masked(),
        "SCHEDOP_block clears evtchn_upcall_mask"
    );
    check_eq!(
        upcall::port_events(1),
        before + 1,
        "the pending upcall is delivered as SCHEDOP_block returns"
    );

    shared.mask(1);
    check_eq!(evtchn::send(1), Ok(()), "send on masked port 1 is rc 0");
    let limit = deadline(5_000_000_000);
    check_eq!(
        sched::poll(&[1], limit),
        Ok(()),
        "SCHEDOP_poll on a pending masked port is rc 0"
    );
    check!(
        time::now_ns().is_some_and(|now| now < limit),
        "SCHEDOP_poll on a pending masked port returns at once, not at its timeout"
    );
    check!(
        shared.is_pending(1),
        "SCHEDOP_poll leaves the pending bit set"
    );
    shared.clear_pending(1);
    shared.clear_mask(1);

    let start = time::now_ns().unwrap_or(0);
    check_eq!(
        sched::poll(&[1], deadline(20_000_000)),
        Ok(()),
        "SCHEDOP_poll of an idle port with a timeout is rc 0"
    );
    println!(
        "# SCHEDOP_poll with a 20 ms timeout took {} us",
        time::now_ns().unwrap_or(0).saturating_sub(start) / 1000
    );
    check_eq!(
        sched::poll(&[5], deadline(1_000_000)),
        Err(Errno::EINVAL),
        "SCHEDOP_poll of a free port fails -EINVAL"
    );
    check_eq!(
        sched::poll(&[FAR_PORT], deadline(1_000_000)),
        Err(Errno::EINVAL),
        "SCHEDOP_poll of a port beyond the table fails -EINVAL"
    );
    let many = [1u32; 129];
    check_eq!(
        sched::poll(&many, deadline(1_000_000)),
        Err(Errno::EINVAL),
        "SCHEDOP_poll of 129 ports fails -EINVAL"
    );
}

/// Busy-waits `duration_ns` of system time with events enabled.
fn spin_for(duration_ns: u64) {
    let end = deadline(duration_ns);
    while time::now_ns().is_some_and(|now| now < end) {
        core::hint::spin_loop();
    }
}

/// Prints the intervals between the recorded ticks.
fn report_tick_intervals(what: &str) {
    let times: [u64; TICKS_KEPT] =
        core::array::from_fn(|i| TICK_TIMES.get(i).map_or(0, |t| t.load(Ordering::SeqCst)));
    let mut line = sluice_guest::console::Console::new();
    let _ = core::fmt::Write::write_fmt(&mut line, format_args!("# {what} intervals (us):"));
    for pair in times.windows(2) {
        if let [earlier, later] = pair
            && *earlier != 0
            && *later != 0
        {
            let _ = core::fmt::Write::write_fmt(
                &mut line,
                format_args!(" {}", later.saturating_sub(*earlier) / 1000),
            );
        }
    }
    let _ = core::fmt::Write::write_str(&mut line, "\n");
}

/// Clears the recorded tick times.
fn reset_ticks() {
    for slot in &TICK_TIMES {
        slot.store(0, Ordering::SeqCst);
    }
    TICKS.store(0, Ordering::SeqCst);
}

/// VIRQ_TIMER: the default periodic timer, stopping it, singleshots.
///
/// Xen 4.17 runs a PV vcpu's periodic timer only while the vcpu is running:
/// the scheduler stops it when the vcpu is switched out and, when it is
/// switched in again, sends one overdue tick at once and re-arms
/// (common/sched/core.c: sched_switch_units() stops `periodic_timer`,
/// vcpu_periodic_timer_work() on the way in). A blocked vcpu is therefore
/// never woken by it. The spec's §5 states only "10 ms periodic by default".
pub fn timers(ctx: &Ctx) {
    let port = evtchn::bind_virq(virq::TIMER, 0);
    check!(
        port.is_ok(),
        "bind_virq(VIRQ_TIMER, vcpu 0) succeeds ({port:?})"
    );
    let Ok(port) = port else {
        return;
    };
    upcall::set_handler(port, tick_handler);
    reset_ticks();
    // Wait for two ticks rather than counting them over a fixed window: a
    // loaded host can stall the vcpu for longer than a period, and this
    // checks that the timer runs, not its rate.
    let end = deadline(2_000_000_000);
    while TICKS.load(Ordering::SeqCst) < 2 && time::now_ns().is_some_and(|now| now < end) {
        core::hint::spin_loop();
    }
    let ticks = TICKS.load(Ordering::SeqCst);
    check!(
        ticks >= 2,
        "VIRQ_TIMER ticks while the vcpu runs although no timer was armed (default periodic timer; {ticks} ticks within 2 s)"
    );
    report_tick_intervals("periodic VIRQ_TIMER while running");

    let before = TICKS.load(Ordering::SeqCst);
    let limit = deadline(300_000_000);
    check_eq!(
        sched::poll(&[port], limit),
        Ok(()),
        "SCHEDOP_poll on the VIRQ_TIMER port for 300 ms is rc 0"
    );
    let woke_at = time::now_ns().unwrap_or(0);
    let overdue = TICKS.load(Ordering::SeqCst) - before;
    check!(
        woke_at >= limit,
        "the periodic timer does not wake a blocked vcpu: the poll runs to its timeout"
    );
    check!(
        (1..=3).contains(&overdue),
        "back on the CPU, the vcpu gets one overdue periodic tick at once, not one per missed period ({overdue})"
    );

    check_eq!(
        vcpu::stop_periodic_timer(0),
        Ok(()),
        "VCPUOP_stop_periodic_timer is rc 0"
    );
    let before = TICKS.load(Ordering::SeqCst);
    spin_for(100_000_000);
    check_eq!(
        TICKS.load(Ordering::SeqCst),
        before,
        "after stop_periodic_timer no tick arrives in 100 ms of running"
    );
    ctx.shared.clear_pending(port);

    let before = TICKS.load(Ordering::SeqCst);
    let past = time::now_ns()
        .unwrap_or(2_000_000)
        .saturating_sub(1_000_000);
    check_eq!(
        vcpu::set_singleshot_timer(0, past),
        Ok(()),
        "a singleshot timer in the past is accepted (rc 0)"
    );
    let _ = sched::poll(&[port], deadline(1_000_000_000));
    check_eq!(
        TICKS.load(Ordering::SeqCst),
        before + 1,
        "a singleshot timer in the past fires once"
    );

    reset_ticks();
    let due = deadline(20_000_000);
    check_eq!(
        vcpu::set_singleshot_timer(0, due),
        Ok(()),
        "a singleshot timer 20 ms ahead is rc 0"
    );
    let _ = sched::poll(&[port], deadline(2_000_000_000));
    check_eq!(
        TICKS.load(Ordering::SeqCst),
        1,
        "a singleshot timer 20 ms ahead wakes the polling vcpu and fires once"
    );
    let fired_at = TICK_TIMES.first().map_or(0, |t| t.load(Ordering::SeqCst));
    check!(
        fired_at >= due,
        "the singleshot timer does not fire before its deadline"
    );
    println!(
        "# singleshot fired {} us after its deadline",
        fired_at.saturating_sub(due) / 1000
    );
    upcall::clear_handler(port);
    check_eq!(
        evtchn::close(port),
        Ok(()),
        "close of the VIRQ_TIMER port is rc 0"
    );
}

/// Leaves the domain as it found it: masked, nothing bound.
pub fn cleanup(ctx: &Ctx) {
    upcall::mask_vcpu();
    check_eq!(
        evtchn::reset(DOMID_SELF),
        Ok(()),
        "final reset(DOMID_SELF) is rc 0"
    );
    ctx.clear_events();
    check_eq!(upcall::failsafes(), 0, "no failsafe callback ran");
}
