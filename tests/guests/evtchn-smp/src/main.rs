//! `evtchn-smp`: event delivery across two vcpus of one domain (spec §2.8,
//! §2.10, §3.3 "mark events pending" and vcpu_kick, §3.5, §5, §7.10,
//! §7.11; §9.4 items 5 and 10).
//!
//! vcpu 0 starts vcpu 1 with VCPUOP_initialise + VCPUOP_up and drives it
//! through a mailbox ([`secondary`]). Checked: vcpu 1 starts masked on its
//! own stack; an IPI bound to vcpu 1 wakes it from SCHEDOP_block and runs
//! its upcall there; an event for a vcpu that is running (spinning without
//! hypercalls, periodic timer stopped) still reaches it (Xen kicks the
//! vcpu's CPU; the check bounds the wait at 2 s and prints the latency, as
//! a hypervisor tick would also deliver it); bind_vcpu
//! moves delivery; a poll on a masked port ends when the other vcpu sends;
//! a per-vcpu VIRQ_TIMER fires on its own vcpu; a vcpu taken down keeps its
//! events pending until it is brought up again.
#![no_std]
#![no_main]

mod secondary;

use core::sync::atomic::{AtomicU32, Ordering};

use secondary::{
    CMD_SELF_DOWN, CMD_SEND, CMD_SEND_LATER, CMD_SINGLESHOT, CMD_SPIN, COMMAND, DONE, READY,
    SEEN_MASK, SEEN_VCPU, SELF_DOWN_RC, SPIN_HIT, SPIN_HIT_AT, SPINNING, spin_until,
};
use sluice_guest::errno::Errno;
use sluice_guest::evtchn::{self, DOMID_SELF, virq};
use sluice_guest::shared_info::{self, SharedInfo};
use sluice_guest::{StartInfo, check, check_eq, println, sched, smp, tap, time, upcall, vcpu};

sluice_guest::entry!(main);

/// Ports below this bound have their handling vcpu recorded.
const RECORDED_PORTS: usize = 64;
/// Handling vcpu + 1 of each port's last event (0 = none).
static HANDLED_ON: [AtomicU32; RECORDED_PORTS] = [const { AtomicU32::new(0) }; RECORDED_PORTS];

fn record(port: u32) {
    if let Some(slot) = HANDLED_ON.get(port as usize) {
        slot.store(smp::current_vcpu() + 1, Ordering::SeqCst);
    }
}

/// The vcpu that handled `port`'s last event, if any.
fn handled_on(port: u32) -> Option<u32> {
    HANDLED_ON
        .get(port as usize)
        .and_then(|slot| slot.load(Ordering::SeqCst).checked_sub(1))
}

/// Forgets where `port` was handled.
fn forget(port: u32) {
    if let Some(slot) = HANDLED_ON.get(port as usize) {
        slot.store(0, Ordering::SeqCst);
    }
}

/// Waits (spinning, events enabled) up to 2 s for `port`'s next event;
/// returns the vcpu that handled it.
fn wait_handled(port: u32) -> Option<u32> {
    spin_until(2_000_000_000, || handled_on(port).is_some());
    handled_on(port)
}

/// Hands vcpu 1 a command, wakes it through `kick_port`, and waits up to
/// 2 s for it to finish; returns whether it did.
fn run_on_vcpu1(command: u64, kick_port: u32) -> bool {
    let before = DONE.load(Ordering::SeqCst);
    COMMAND.store(command, Ordering::SeqCst);
    let _ = evtchn::send(kick_port);
    spin_until(2_000_000_000, || DONE.load(Ordering::SeqCst) != before)
}

fn main(_start_info: &'static StartInfo) {
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return;
    };
    if !vcpu::exists(1) {
        tap::skip(
            format_args!("event delivery across vcpus"),
            "the domain has no vcpu 1",
        );
        return;
    }
    check!(
        time::now_ns().is_some(),
        "vcpu 0's time record is published"
    );
    check_eq!(
        upcall::register_callbacks(),
        Ok(()),
        "callback_op registers the event and failsafe callbacks"
    );
    upcall::unmask_vcpu();

    let to_vcpu1 = evtchn::bind_ipi(1);
    let to_vcpu0 = evtchn::bind_ipi(0);
    check_eq!(
        (to_vcpu1, to_vcpu0),
        (Ok(1), Ok(2)),
        "bind_ipi(vcpu 1) gets port 1, bind_ipi(vcpu 0) port 2"
    );
    let (Ok(to_vcpu1), Ok(to_vcpu0)) = (to_vcpu1, to_vcpu0) else {
        return;
    };
    upcall::set_handler(to_vcpu1, record);
    upcall::set_handler(to_vcpu0, record);

    start_vcpu1(shared);
    if !READY.load(Ordering::SeqCst) {
        return;
    }
    ipis(to_vcpu1, to_vcpu0);
    kick_running(to_vcpu1);
    moving(to_vcpu1);
    poll_across(to_vcpu1, to_vcpu0, shared);
    per_vcpu_timer(to_vcpu1);
    down_and_up(to_vcpu1);
    self_down_and_up(to_vcpu1);
    down_while_blocked();
    upcall::mask_vcpu();
    check_eq!(upcall::failsafes(), 0, "no failsafe callback ran");
}

/// VCPUOP_initialise + VCPUOP_up, and what vcpu 1 sees at start.
fn start_vcpu1(shared: &SharedInfo) {
    check_eq!(vcpu::is_up(1), Ok(false), "vcpu 1 is down before VCPUOP_up");
    check!(
        shared.vcpu(1).is_some_and(|v| v.upcall_masked()),
        "vcpu 1's evtchn_upcall_mask is 1 before it starts"
    );
    check_eq!(
        smp::start(1, secondary::secondary),
        Ok(()),
        "VCPUOP_initialise + VCPUOP_up start vcpu 1"
    );
    check_eq!(
        vcpu::is_up(1),
        Ok(true),
        "VCPUOP_is_up(1) is 1 after VCPUOP_up"
    );
    let again = smp::context_for(1).map(|context| smp::initialise(1, &context));
    check_eq!(
        again,
        Some(Err(Errno::EEXIST)),
        "VCPUOP_initialise of an initialised vcpu fails -EEXIST"
    );
    let ready = spin_until(2_000_000_000, || READY.load(Ordering::SeqCst));
    check!(ready, "vcpu 1 runs its entry");
    check_eq!(
        SEEN_VCPU.load(Ordering::SeqCst),
        1,
        "vcpu 1 runs on its own stack (the runtime sees vcpu 1)"
    );
    check_eq!(
        SEEN_MASK.load(Ordering::SeqCst),
        1,
        "vcpu 1 starts with evtchn_upcall_mask 1"
    );
}

/// IPIs each way.
fn ipis(to_vcpu1: u32, to_vcpu0: u32) {
    // Give vcpu 1 time to reach SCHEDOP_block (not asserted).
    spin_until(20_000_000, || false);
    let vcpu0_before = upcall::upcalls_on(0);
    forget(to_vcpu1);
    check_eq!(
        evtchn::send(to_vcpu1),
        Ok(()),
        "send from vcpu 0 on the IPI bound to vcpu 1 is rc 0"
    );
    check_eq!(
        wait_handled(to_vcpu1),
        Some(1),
        "the IPI wakes vcpu 1 from SCHEDOP_block and its upcall runs on vcpu 1"
    );
    check_eq!(
        upcall::upcalls_on(0),
        vcpu0_before,
        "vcpu 0 gets no upcall for an IPI bound to vcpu 1"
    );

    forget(to_vcpu0);
    let done = run_on_vcpu1(CMD_SEND | u64::from(to_vcpu0), to_vcpu1);
    check!(done, "vcpu 1 carries out a send command");
    check_eq!(
        wait_handled(to_vcpu0),
        Some(0),
        "send from vcpu 1 on the IPI bound to vcpu 0 raises the upcall on vcpu 0, which was running"
    );
}

/// An event for a vcpu that runs guest code without exits.
fn kick_running(to_vcpu1: u32) {
    COMMAND.store(CMD_SPIN, Ordering::SeqCst);
    let done_before = DONE.load(Ordering::SeqCst);
    let _ = evtchn::send(to_vcpu1);
    let spinning = spin_until(2_000_000_000, || SPINNING.load(Ordering::SeqCst));
    check!(
        spinning,
        "vcpu 1 spins with events enabled and no periodic timer"
    );
    spin_until(10_000_000, || false);
    let sent_at = time::now_ns().unwrap_or(0);
    check_eq!(
        evtchn::send(to_vcpu1),
        Ok(()),
        "send to the spinning vcpu 1 is rc 0"
    );
    spin_until(3_000_000_000, || DONE.load(Ordering::SeqCst) != done_before);
    let latency_us = SPIN_HIT_AT.load(Ordering::SeqCst).saturating_sub(sent_at) / 1000;
    check!(
        SPIN_HIT.load(Ordering::SeqCst),
        "an event for vcpu 1 reaches it while it runs guest code without exits"
    );
    println!("# kick latency to a spinning vcpu: {latency_us} us");
}

/// bind_vcpu moves where an interdomain port's events land.
fn moving(to_vcpu1: u32) {
    let remote = evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF);
    let local = remote.and_then(|remote| evtchn::bind_interdomain(DOMID_SELF, remote));
    check_eq!(
        (remote, local),
        (Ok(3), Ok(4)),
        "a loopback pair gets ports 3 and 4"
    );
    let (Ok(remote), Ok(local)) = (remote, local) else {
        return;
    };
    upcall::set_handler(local, record);
    spin_until(10_000_000, || false);
    forget(local);
    check_eq!(evtchn::send(remote), Ok(()), "send toward port 4 is rc 0");
    check_eq!(
        wait_handled(local),
        Some(0),
        "port 4 notifies vcpu 0 at first"
    );
    check_eq!(
        evtchn::bind_vcpu(local, 1),
        Ok(()),
        "bind_vcpu(port 4, vcpu 1) is rc 0"
    );
    forget(local);
    check_eq!(
        evtchn::send(remote),
        Ok(()),
        "send toward the moved port is rc 0"
    );
    check_eq!(
        wait_handled(local),
        Some(1),
        "after bind_vcpu the event is handled on vcpu 1"
    );
    check_eq!(
        evtchn::bind_vcpu(local, 0),
        Ok(()),
        "bind_vcpu(port 4, vcpu 0) is rc 0"
    );
    forget(local);
    check_eq!(
        evtchn::send(remote),
        Ok(()),
        "send toward the port moved back is rc 0"
    );
    check_eq!(
        wait_handled(local),
        Some(0),
        "moved back, the event is handled on vcpu 0 again"
    );
    let _ = to_vcpu1;
    upcall::clear_handler(local);
    check_eq!(
        (evtchn::close(local), evtchn::close(remote)),
        (Ok(()), Ok(())),
        "the pair closes"
    );
}

/// SCHEDOP_poll on vcpu 0 ended by a send from vcpu 1 (§9.4 item 10).
fn poll_across(to_vcpu1: u32, to_vcpu0: u32, shared: &SharedInfo) {
    shared.mask(to_vcpu0);
    shared.clear_pending(to_vcpu0);
    let before = DONE.load(Ordering::SeqCst);
    COMMAND.store(CMD_SEND_LATER | u64::from(to_vcpu0), Ordering::SeqCst);
    let _ = evtchn::send(to_vcpu1);
    let limit = time::now_ns().map_or(1, |now| now + 2_000_000_000);
    check_eq!(
        sched::poll(&[to_vcpu0], limit),
        Ok(()),
        "SCHEDOP_poll on masked port 2 is rc 0"
    );
    check!(
        time::now_ns().is_some_and(|now| now < limit) && shared.is_pending(to_vcpu0),
        "vcpu 1's send to the masked port ends vcpu 0's poll before its timeout"
    );
    spin_until(2_000_000_000, || DONE.load(Ordering::SeqCst) != before);
    forget(to_vcpu0);
    shared.clear_pending(to_vcpu0);
    shared.clear_mask(to_vcpu0);
}

/// A VIRQ_TIMER port bound to vcpu 1 fires for vcpu 1's own timer.
fn per_vcpu_timer(to_vcpu1: u32) {
    let port = evtchn::bind_virq(virq::TIMER, 1);
    check_eq!(port, Ok(3), "bind_virq(VIRQ_TIMER, vcpu 1) gets port 3");
    let Ok(port) = port else {
        return;
    };
    upcall::set_handler(port, record);
    forget(port);
    check!(
        run_on_vcpu1(CMD_SINGLESHOT, to_vcpu1),
        "vcpu 1 arms its own singleshot timer"
    );
    check_eq!(
        wait_handled(port),
        Some(1),
        "vcpu 1's VIRQ_TIMER port fires on vcpu 1"
    );
    upcall::clear_handler(port);
    check_eq!(
        evtchn::close(port),
        Ok(()),
        "close of vcpu 1's VIRQ_TIMER port is rc 0"
    );
}

/// A vcpu that is down receives nothing until it is up again.
fn down_and_up(to_vcpu1: u32) {
    check_eq!(vcpu::down(1), Ok(()), "VCPUOP_down(1) from vcpu 0 is rc 0");
    check_eq!(
        vcpu::is_up(1),
        Ok(false),
        "VCPUOP_is_up(1) is 0 after VCPUOP_down"
    );
    let before = upcall::upcalls_on(1);
    forget(to_vcpu1);
    check_eq!(
        evtchn::send(to_vcpu1),
        Ok(()),
        "send on the IPI of the down vcpu 1 is rc 0"
    );
    spin_until(50_000_000, || false);
    check_eq!(upcall::upcalls_on(1), before, "a down vcpu runs no upcall");
    check_eq!(vcpu::up(1), Ok(()), "VCPUOP_up(1) again is rc 0");
    check_eq!(
        wait_handled(to_vcpu1),
        Some(1),
        "brought up again, vcpu 1 handles the pending event"
    );
}

/// vcpu 1 takes itself down; VCPUOP_up resumes it right after its call,
/// which then returns 0. Twice, so a frame left over from the first time
/// would show as a jump back.
fn self_down_and_up(to_vcpu1: u32) {
    for round in 1..=2 {
        SELF_DOWN_RC.store(u32::MAX, Ordering::SeqCst);
        let before = DONE.load(Ordering::SeqCst);
        COMMAND.store(CMD_SELF_DOWN, Ordering::SeqCst);
        let _ = evtchn::send(to_vcpu1);
        let went_down = spin_until(2_000_000_000, || vcpu::is_up(1) == Ok(false));
        check!(
            went_down,
            "round {round}: VCPUOP_down(1) from vcpu 1 takes it down"
        );
        spin_until(20_000_000, || false);
        check_eq!(
            (
                DONE.load(Ordering::SeqCst),
                SELF_DOWN_RC.load(Ordering::SeqCst)
            ),
            (before, u32::MAX),
            "round {round}: vcpu 1 stays in its VCPUOP_down while down"
        );
        check_eq!(vcpu::up(1), Ok(()), "round {round}: VCPUOP_up(1) is rc 0");
        let resumed = spin_until(2_000_000_000, || DONE.load(Ordering::SeqCst) == before + 1);
        check!(
            resumed,
            "round {round}: vcpu 1 resumes after its VCPUOP_down"
        );
        check_eq!(
            SELF_DOWN_RC.load(Ordering::SeqCst),
            0,
            "round {round}: vcpu 1's VCPUOP_down(1) returns 0 once it is up again"
        );
    }
}

/// Takes vcpu 1 down while it waits in SCHEDOP_block, and leaves it down:
/// the domain then powers off with vcpu 1's hypervisor flow suspended. The
/// hypervisor must still wind that flow up and free the domain (the
/// scenario checks its log for that).
fn down_while_blocked() {
    // vcpu 1 handled its last event and went back to SCHEDOP_block.
    spin_until(50_000_000, || false);
    check_eq!(
        vcpu::down(1),
        Ok(()),
        "VCPUOP_down(1) while vcpu 1 is blocked is rc 0"
    );
    check_eq!(
        vcpu::is_up(1),
        Ok(false),
        "VCPUOP_is_up(1) is 0, and the domain powers off with vcpu 1 down"
    );
}
