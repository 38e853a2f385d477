//! Guest timers on the pCPU's LAPIC timer tick: the default 10 ms periodic
//! VIRQ_TIMER, the singleshot timer (set_timer_op, VCPUOP_set_singleshot_timer)
//! and SCHEDOP_poll timeouts. Deadlines are absolute system time (ns).
//!
//! The periodic timer follows Xen: it only ticks while its vcpu runs; a
//! blocked or polling vcpu gets no tick (so no periodic tick ends a block),
//! and when the vcpu runs again an overdue tick is raised at once
//! ([`on_switch_in`]). Deadlines belong to the vcpu, not to a pCPU: the
//! LAPIC tick of each pCPU checks the vcpus of its own run queue, so when a
//! vcpu moves (`sched`) its pending singleshot or poll deadline fires on
//! the pCPU that holds it then, with nothing to carry over (a move takes
//! both queues' locks, and so does an idle pCPU looking for a vcpu to
//! take, at each of its ticks while some queue holds two; a tick that
//! finds its queue locked waits for it rather than skip its scan, so a
//! deadline is neither lost nor late). They resolve
//! to the tick period (1 ms once the pCPU runs vcpus:
//! `sched::GUEST_TICK_HZ`; a pCPU starts that tick before it runs its
//! first vcpu, one taken from another pCPU included). A destroyed domain's
//! timers are cancelled (`domain::kill` clears its deadlines and takes its
//! vcpus off their pCPUs' lists) and go with the domain when the reaper
//! frees it; a tick taken in a guest is one of the reaper's quiescent
//! points.

use core::sync::atomic::Ordering;

use evtchn_core::Virq;

use crate::domain::{Domain, Vcpu, VcpuState};

/// Xen's default periodic timer for PV vcpus.
pub const DEFAULT_PERIOD_NS: u64 = 10_000_000;

/// Starts the default 10 ms periodic timer of a new vcpu.
pub fn start_default_periodic(vcpu: &Vcpu) {
    vcpu.periodic_period_ns
        .store(DEFAULT_PERIOD_NS, Ordering::Relaxed);
    vcpu.periodic_next_ns
        .store(crate::time::now_ns() + DEFAULT_PERIOD_NS, Ordering::Relaxed);
}

fn raise_timer(domain: &Domain, vcpu: &Vcpu) {
    let events = crate::events::domains();
    match domain.events.get() {
        Some(handle) => events.send_vcpu_virq_to(handle, vcpu.id, Virq::TIMER),
        None => events.send_vcpu_virq(domain.id, vcpu.id, Virq::TIMER),
    }
}

/// Raises a due periodic tick (at most one) and moves the next one past now.
fn periodic(domain: &Domain, vcpu: &Vcpu, now: u64) {
    let period = vcpu.periodic_period_ns.load(Ordering::Relaxed);
    if period == 0 {
        return;
    }
    let next = vcpu.periodic_next_ns.load(Ordering::Relaxed);
    if now < next {
        return;
    }
    let missed = (now - next) / period + 1;
    vcpu.periodic_next_ns
        .store(next + missed * period, Ordering::Relaxed);
    raise_timer(domain, vcpu);
}

/// The vcpu runs again (first entry, or the end of a block or poll): an
/// overdue periodic tick fires at once.
pub fn on_switch_in(domain: &Domain, vcpu: &Vcpu) {
    periodic(domain, vcpu, crate::time::now_ns());
}

/// The LAPIC timer interrupt of this pCPU: the periodic timer of the vcpu
/// running now, and the singleshot and poll deadlines of every vcpu the
/// pCPU hosts.
pub fn on_tick(frame: &mut arch::idt::InterruptFrame) {
    if frame.cs & 3 == 3 {
        // In a live domain's guest: a quiescent point for freeing dead ones.
        crate::domain::reaper::on_guest_tick();
    }
    let now = crate::time::now_ns();
    // The hypervisor's own timers (`hvtimer`), on every pCPU's tick.
    crate::hvtimer::run_due(now);
    // The time slice of the vcpu running here.
    crate::sched::on_tick(now);
    if let Some((domain, vcpu_id)) = crate::sched::hosted_from_interrupt()
        && let Some(vcpu) = domain.vcpu(vcpu_id)
        && vcpu.state() == VcpuState::Running
    {
        periodic(&domain, vcpu, now);
    }
    crate::sched::for_each_hosted_from_interrupt(|domain, vcpu| {
        let deadline = vcpu.singleshot_deadline_ns.load(Ordering::Relaxed);
        if deadline != 0
            && now >= deadline
            && vcpu
                .singleshot_deadline_ns
                .compare_exchange(deadline, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            raise_timer(domain, vcpu);
        }
        let poll_deadline = vcpu.poll_deadline_ns.load(Ordering::Relaxed);
        if poll_deadline != 0 && now >= poll_deadline {
            vcpu.poll_deadline_ns.store(0, Ordering::Relaxed);
            crate::sched::kick(vcpu);
        }
    });
}

/// Arms the singleshot timer at `deadline_ns` (a past deadline fires at
/// once, from the caller's return path).
pub fn set_singleshot(domain: &Domain, vcpu: &Vcpu, deadline_ns: u64) {
    if deadline_ns <= crate::time::now_ns() {
        vcpu.singleshot_deadline_ns.store(0, Ordering::Relaxed);
        raise_timer(domain, vcpu);
    } else {
        vcpu.singleshot_deadline_ns
            .store(deadline_ns, Ordering::Relaxed);
    }
}
