//! Guest timers: the default 10 ms periodic VIRQ_TIMER, the singleshot
//! timer (set_timer_op, VCPUOP_set_singleshot_timer) and SCHEDOP_poll
//! timeouts, on each pCPU's LAPIC timer. Deadlines are absolute system
//! time (ns).
//!
//! The periodic timer follows Xen: it only ticks while its vcpu runs; a
//! blocked or polling vcpu gets no tick (so no periodic tick ends a block),
//! and when the vcpu runs again an overdue tick is raised at once
//! ([`on_switch_in`]). As in Xen 4.17, the next tick is due one period
//! after the last one raised (not after the missed deadline): ticks never
//! come closer than a period, a vcpu held up for several periods gets
//! one, and a period set anew counts from the last tick ([`set_periodic`]).
//!
//! Every deadline fires when it is due. A pCPU that runs vcpus
//! ([`start_guest_tick`], before its first vcpu) drives its LAPIC timer
//! one-shot, and every expiry programs the next one for the earliest of
//! its next scheduler tick (every 1 ms: the time slice's preemption hint,
//! `hvtimer`, and, taken in a guest, a quiescent point for the reaper),
//! the periodic tick of the vcpu running on it, and the singleshot and
//! poll deadlines of every vcpu in its run queue. It remembers what it
//! armed the LAPIC for ([`PcpuTimer::armed_for_ns`]).
//!
//! The rule that keeps every deadline: for each pCPU, while a vcpu of its
//! queue has a deadline `d` (a periodic one: the vcpu running on it, but
//! see below for a period another vcpu sets), either the pCPU's LAPIC is armed for `d` or
//! earlier, or a timer interrupt is pending on it (whose handler scans the
//! queue and arms again). It holds because a deadline only ever comes to
//! a pCPU's queue on that pCPU, with interrupts off around the look at
//! `armed_for_ns` and the programming, so no timer interrupt of its own
//! comes in between:
//! - a vcpu arms a singleshot timer or a poll timeout only for itself, so
//!   it does so while it runs, claimed by this pCPU and in its queue; it
//!   stores the deadline, then [`note_deadline`] re-arms the LAPIC if `d`
//!   is earlier than what it is armed for. A timer interrupt after the store and
//!   before the look sees the deadline in its scan and arms for it (and
//!   moves `armed_for_ns`), so nothing between the two is missed;
//! - a vcpu moves only by `sched::steal`, which the pCPU that takes it
//!   runs for itself: it moves the vcpu into its own queue and then,
//!   interrupts still off, [`on_arrive`] starts this pCPU's one-shot
//!   timer if the vcpu is the first it takes, and arms it for the vcpu's
//!   deadlines, before it runs it. The pCPU it left may still be armed for
//!   them: its interrupt then finds nothing due and arms for what it
//!   still hosts. A vcpu that blocks again with its poll timeout on the
//!   new pCPU keeps it (`block_until` re-suspends with the same deadline),
//!   which is why the poll deadline is carried too;
//! - a periodic deadline counts only while its vcpu runs. It comes to the
//!   pCPU with the vcpu: as the vcpu starts to run there, [`on_switch_in`]
//!   (on that pCPU) raises an overdue tick and notes the next one
//!   (`PcpuTimer::periodic_due_ns`, and the LAPIC as for a singleshot
//!   deadline); a vcpu that sets its own period ([`set_periodic`]) notes
//!   it the same way. The expiry looks at the running vcpu's periodic
//!   timer when the noted tick is due and on every scheduler tick, and
//!   notes the next. A vcpu that sets another's period cannot arm that
//!   vcpu's pCPU: a running target's new deadline is found by its pCPU's
//!   next scheduler tick, at most 1 ms later, so its tick may be that
//!   late (never early, never lost); a target that does not run notes it
//!   when it runs again. When the vcpu stops running, the pCPU may stay
//!   armed for (and keep the note of) its periodic deadline: that expiry
//!   finds nothing due (it looks only at the vcpu running then) and arms
//!   for what is left, so it costs one empty expiry, once;
//! - the expiry ([`on_tick`]) scans the queue: it fires what is due and
//!   arms for the earliest deadline still pending (or the next tick). It
//!   waits for its queue if another pCPU holds it (moving a vcpu, or
//!   looking for one to take): a scan that skipped would leave the
//!   deadline it was armed for to a later tick (and could keep skipping:
//!   `sched`'s `RunQueue`). Since every expiry arms for the next tick at
//!   the latest, even a deadline left out of a scan would be late, not
//!   lost.
//!
//! Nothing fires early: the LAPIC count is rounded up, and whatever the
//! calibration says, every expiry compares each deadline with the clock;
//! an interrupt that comes before a deadline (a calibration a little off,
//! or the LAPIC's longest count, about a minute, for a far one) arms again
//! for the rest. A past deadline fires at once, from the arming call
//! ([`set_singleshot`]; a poll whose timeout has passed does not wait).
//! Cancelling a deadline only clears it; the LAPIC's expiry for it then
//! finds nothing due.
//!
//! A pCPU that never ran a vcpu keeps the periodic boot tick
//! (`cpus::TIMER_HZ`), each interrupt a scheduler tick; it hosts no vcpu
//! with a deadline (a vcpu arms one only while running, and the pCPU that
//! takes a vcpu from another starts its one-shot timer as it takes it).
//! An idle pCPU's `hlt` ends at its expiry as at any interrupt, so the
//! deadlines of the blocked and polling vcpus it hosts fire on time.
//!
//! A destroyed domain's timers are cancelled (`domain::kill` clears its
//! deadlines and takes its vcpus off their pCPUs' lists) and go with the
//! domain when the reaper frees it; a timer interrupt taken in a guest is
//! one of the reaper's quiescent points.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arch::percpu::{self, MAX_CPUS};
use evtchn_core::Virq;

use crate::domain::{Domain, Vcpu, VcpuState};

/// Xen's default periodic timer for PV vcpus.
pub const DEFAULT_PERIOD_NS: u64 = 10_000_000;

/// Starts the default 10 ms periodic timer of a new vcpu, counted from
/// now (its first tick one period after the domain is built).
pub fn start_default_periodic(vcpu: &Vcpu) {
    vcpu.periodic_last_ns
        .store(crate::time::now_ns(), Ordering::Relaxed);
    vcpu.periodic_period_ns
        .store(DEFAULT_PERIOD_NS, Ordering::Release);
}

fn raise_timer(domain: &Domain, vcpu: &Vcpu) {
    let events = crate::events::domains();
    match domain.events.get() {
        Some(handle) => events.send_vcpu_virq_to(handle, vcpu.id, Virq::TIMER),
        None => events.send_vcpu_virq(domain.id, vcpu.id, Virq::TIMER),
    }
}

/// Raises `vcpu`'s periodic tick if one is due at `now` (a period after
/// the last one: at most one, however many periods passed) and returns
/// when the next is due (0: no periodic timer). Called on the pCPU that
/// runs the vcpu, and by VCPUOP_set_periodic_timer from any: the tick is
/// raised by whoever moves `periodic_last_ns`, so two at once raise it
/// once (Xen serialises the same with a per-vcpu lock).
fn periodic(domain: &Domain, vcpu: &Vcpu, now: u64) -> u64 {
    // Acquire: pairs with the Release stores of the period.
    let period = vcpu.periodic_period_ns.load(Ordering::Acquire);
    if period == 0 {
        return 0;
    }
    let last = vcpu.periodic_last_ns.load(Ordering::Relaxed);
    let next = last.saturating_add(period);
    if now < next {
        return next;
    }
    if vcpu
        .periodic_last_ns
        .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
    {
        raise_timer(domain, vcpu);
        return now.saturating_add(period);
    }
    // Raised by the other caller just now: the next is due a period on.
    vcpu.periodic_last_ns
        .load(Ordering::Relaxed)
        .saturating_add(period)
}

/// `vcpu` runs on this pCPU again (first entry, or the end of a block or
/// poll): an overdue periodic tick fires at once, and the LAPIC is armed
/// for the next one (module doc).
pub fn on_switch_in(domain: &Domain, vcpu: &Vcpu) {
    if vcpu.periodic_period_ns.load(Ordering::Relaxed) == 0 {
        // No periodic timer (the common case on a block's way out): only
        // a note another vcpu left goes. An expiry in between notes the
        // same for this vcpu, or, if another vcpu set a period just now,
        // the next scheduler tick finds it (module doc).
        if let Some(timer) = this_pcpu_timer()
            && timer.periodic_due_ns.load(Ordering::Relaxed) != 0
        {
            timer.periodic_due_ns.store(0, Ordering::Relaxed);
        }
        return;
    }
    // Interrupts off: this pCPU's expiry cannot come between the tick and
    // the note (either would do it right; this keeps it simple).
    arch::cpu::without_interrupts(|| {
        note_periodic(periodic(domain, vcpu, crate::time::now_ns()));
    });
}

/// VCPUOP_set_periodic_timer (`period_ns` checked by the caller), as Xen
/// 4.17's vcpu_set_periodic_timer(): the ticks keep their count from the
/// last one raised, so the next is due a new period after it, at once if
/// that has passed (a vcpu whose timer was stopped a while gets its first
/// tick from the call). `is_self`: the caller sets its own, running on
/// this pCPU, which is armed for the next tick; another vcpu's pCPU finds
/// it on its next expiry, or the vcpu as it runs again (module doc).
pub fn set_periodic(domain: &Domain, vcpu: &Vcpu, period_ns: u64, is_self: bool) {
    vcpu.periodic_period_ns.store(period_ns, Ordering::Release);
    let next = periodic(domain, vcpu, crate::time::now_ns());
    if is_self {
        note_periodic(next);
    }
}

/// VCPUOP_stop_periodic_timer: no more ticks; the time of the last one
/// stays (a later VCPUOP_set_periodic_timer counts from it).
pub fn stop_periodic(vcpu: &Vcpu) {
    vcpu.periodic_period_ns.store(0, Ordering::Release);
}

/// A pCPU's LAPIC timer as guest timers use it. Only its own pCPU
/// touches it, with interrupts off (its timer interrupt, or a caller that
/// turned them off), so every access is Relaxed.
struct PcpuTimer {
    /// Whether the LAPIC runs one-shot for guest timers ([`start_guest_tick`]).
    is_one_shot: AtomicBool,
    /// The system time the LAPIC is armed to fire at.
    armed_for_ns: AtomicU64,
    /// When the next scheduler tick is due.
    next_tick_ns: AtomicU64,
    /// The next periodic tick of the vcpu running here, as last noted
    /// (0: none): [`on_switch_in`], [`set_periodic`] on itself, and the
    /// expiry that finds it due or is a scheduler tick, which look at the
    /// vcpu again. Only a note: one left by a vcpu that stopped running
    /// here costs one expiry that finds nothing due.
    periodic_due_ns: AtomicU64,
}

static PCPU_TIMERS: [PcpuTimer; MAX_CPUS] = [const {
    PcpuTimer {
        is_one_shot: AtomicBool::new(false),
        armed_for_ns: AtomicU64::new(0),
        next_tick_ns: AtomicU64::new(0),
        periodic_due_ns: AtomicU64::new(0),
    }
}; MAX_CPUS];

fn this_pcpu_timer() -> Option<&'static PcpuTimer> {
    PCPU_TIMERS.get(percpu::current().index() as usize)
}

impl PcpuTimer {
    /// Programs the LAPIC to fire at `at_ns` (at once if that has passed).
    /// Interrupts off.
    fn arm(&self, at_ns: u64) {
        self.armed_for_ns.store(at_ns, Ordering::Relaxed);
        arch::lapic::arm_one_shot(at_ns.saturating_sub(crate::time::now_ns()));
    }
}

/// Where the scheduler tick after one due at `due_ns`, taken at `now_ns`,
/// goes: one period on, keeping the ticks' phase (idle pCPUs look at busy
/// ones' queues on their ticks: `sched`), or one period after `now_ns` if
/// the interrupt came a period or more late.
fn tick_after(due_ns: u64, now_ns: u64, period_ns: u64) -> u64 {
    let next = due_ns.saturating_add(period_ns);
    if next > now_ns {
        next
    } else {
        now_ns.saturating_add(period_ns)
    }
}

/// The earlier of `earliest` and `deadline_ns` (0: no deadline).
fn earlier(earliest: u64, deadline_ns: u64) -> u64 {
    if deadline_ns == 0 {
        earliest
    } else {
        earliest.min(deadline_ns)
    }
}

/// This pCPU is about to run its first vcpu: its LAPIC timer goes
/// one-shot, first armed for the scheduler tick one period from now. Call
/// with interrupts off, on every switch to a vcpu and as the pCPU takes a
/// vcpu from another (only the first call does anything). An uncalibrated
/// LAPIC timer keeps the boot tick.
pub fn start_guest_tick() {
    let Some(timer) = this_pcpu_timer() else {
        return;
    };
    if timer.is_one_shot.load(Ordering::Relaxed) || !arch::lapic::start_one_shot_timer() {
        return;
    }
    let next_tick = crate::time::now_ns().saturating_add(crate::sched::TICK_NS);
    timer.next_tick_ns.store(next_tick, Ordering::Relaxed);
    timer.is_one_shot.store(true, Ordering::Relaxed);
    timer.arm(next_tick);
}

/// A vcpu of this pCPU's queue has a deadline at `deadline_ns` (not 0):
/// if the LAPIC is armed for later, arms it for the deadline (module doc).
fn note_deadline(deadline_ns: u64) {
    arch::cpu::without_interrupts(|| {
        if let Some(timer) = this_pcpu_timer()
            && timer.is_one_shot.load(Ordering::Relaxed)
            && deadline_ns < timer.armed_for_ns.load(Ordering::Relaxed)
        {
            timer.arm(deadline_ns);
        }
    });
}

/// The vcpu running on this pCPU has its next periodic tick at `next_ns`
/// (0: none): noted for the expiry, and the LAPIC armed for it if it is
/// armed for later.
fn note_periodic(next_ns: u64) {
    arch::cpu::without_interrupts(|| {
        if let Some(timer) = this_pcpu_timer() {
            timer.periodic_due_ns.store(next_ns, Ordering::Relaxed);
        }
        if next_ns != 0 {
            note_deadline(next_ns);
        }
    });
}

/// `vcpu` of `domain` was just moved into this pCPU's queue
/// (`sched::steal`, by this pCPU, interrupts off): its pending singleshot
/// and poll deadlines are this pCPU's to fire now (module doc). The first
/// vcpu a pCPU takes may be the first it runs: its one-shot timer starts
/// here, so that the deadlines are armed for rather than left to its
/// first tick.
pub fn on_arrive(domain: &Domain, vcpu: &Vcpu) {
    start_guest_tick();
    let singleshot = vcpu.singleshot_deadline_ns.load(Ordering::Relaxed);
    let poll = vcpu.poll_deadline_ns.load(Ordering::Relaxed);
    let deadline = earlier(earlier(u64::MAX, singleshot), poll);
    if deadline == u64::MAX {
        return;
    }
    note_deadline(deadline);
    // For a reader of a debug log (`timer-carry` shows such moves): how
    // far ahead each deadline is (negative: overdue, as when the pCPU it
    // left was held up; 0: none).
    if log::log_enabled!(log::Level::Debug) {
        let now = i128::from(crate::time::now_ns());
        let ahead = |deadline: u64| {
            if deadline == 0 {
                0
            } else {
                i128::from(deadline) - now
            }
        };
        log::debug!(
            "d{}v{} brings deadlines to pCPU {}: singleshot in {} ns, poll in {} ns (0: none)",
            domain.id.0,
            vcpu.id.0,
            percpu::current().index(),
            ahead(singleshot),
            ahead(poll),
        );
    }
}

/// The LAPIC timer interrupt of this pCPU: on a scheduler tick, the
/// tick's duties; on every expiry, the periodic timer of the vcpu running
/// now and the singleshot and poll deadlines of every vcpu the pCPU
/// hosts; then the next expiry (module doc).
pub fn on_tick(frame: &mut arch::idt::InterruptFrame) {
    if frame.cs & 3 == 3 {
        // In a live domain's guest: a quiescent point for freeing dead ones.
        crate::domain::reaper::on_guest_tick();
    }
    let now = crate::time::now_ns();
    let timer = this_pcpu_timer();
    let is_one_shot = timer.is_some_and(|timer| timer.is_one_shot.load(Ordering::Relaxed));
    // With the boot tick (periodic) every interrupt is a tick.
    let mut next_tick = u64::MAX;
    let mut is_tick = true;
    if let Some(timer) = timer
        && is_one_shot
    {
        let due = timer.next_tick_ns.load(Ordering::Relaxed);
        is_tick = now >= due;
        next_tick = if is_tick {
            tick_after(due, now, crate::sched::TICK_NS)
        } else {
            due
        };
        timer.next_tick_ns.store(next_tick, Ordering::Relaxed);
    }
    if is_tick {
        // The hypervisor's own timers (`hvtimer`), on every pCPU's tick.
        crate::hvtimer::run_due(now);
        // The time slice of the vcpu running here.
        crate::sched::on_tick(now);
    }
    let mut earliest = next_tick;
    // The periodic timer of the vcpu running here: when its noted tick is
    // due, and on every scheduler tick (which finds a period another vcpu
    // set, and a note left by a vcpu that no longer runs here).
    if let Some(timer) = timer {
        let due = timer.periodic_due_ns.load(Ordering::Relaxed);
        let due = if is_tick || (due != 0 && now >= due) {
            let next = match crate::sched::hosted_from_interrupt() {
                Some((domain, vcpu_id)) => domain
                    .vcpu(vcpu_id)
                    .filter(|vcpu| vcpu.state() == VcpuState::Running)
                    .map_or(0, |vcpu| periodic(&domain, vcpu, now)),
                None => 0,
            };
            timer.periodic_due_ns.store(next, Ordering::Relaxed);
            next
        } else {
            due
        };
        earliest = earlier(earliest, due);
    }
    // A vcpu whose domain's registry slot is being written this instant
    // would be skipped (`domain::try_get`); a slot is written only to
    // register a domain (before its vcpus join a queue) or to destroy one
    // (after its deadlines are cleared and its vcpus left their queues),
    // so no pending deadline is left out of `earliest`.
    crate::sched::for_each_hosted_from_interrupt(|domain, vcpu| {
        let deadline = vcpu.singleshot_deadline_ns.load(Ordering::Relaxed);
        if deadline != 0 && now >= deadline {
            if vcpu
                .singleshot_deadline_ns
                .compare_exchange(deadline, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                raise_timer(domain, vcpu);
            }
        } else {
            earliest = earlier(earliest, deadline);
        }
        let poll_deadline = vcpu.poll_deadline_ns.load(Ordering::Relaxed);
        if poll_deadline != 0 && now >= poll_deadline {
            vcpu.poll_deadline_ns.store(0, Ordering::Relaxed);
            crate::sched::kick(vcpu);
        } else {
            earliest = earlier(earliest, poll_deadline);
        }
    });
    if let Some(timer) = timer
        && is_one_shot
    {
        timer.arm(earliest);
    }
}

/// A guest's absolute deadline as system time: the ABI's `u64` is a
/// signed count of ns in the hypervisor (Xen's `s_time_t`), so a value with
/// the top bit set is negative, long past. Returns 1 (the past, and not
/// the "no deadline" 0) for those, the deadline itself otherwise.
pub fn from_guest_deadline(deadline_ns: u64) -> u64 {
    if deadline_ns > i64::MAX as u64 {
        1
    } else {
        deadline_ns
    }
}

/// Arms the singleshot timer at `deadline_ns` (a past deadline, negative
/// ones included: [`from_guest_deadline`], fires at once, from the
/// caller's return path). `vcpu` is the caller, running on this pCPU.
pub fn set_singleshot(domain: &Domain, vcpu: &Vcpu, deadline_ns: u64) {
    let deadline_ns = from_guest_deadline(deadline_ns);
    if deadline_ns <= crate::time::now_ns() {
        vcpu.singleshot_deadline_ns.store(0, Ordering::Relaxed);
        raise_timer(domain, vcpu);
    } else {
        vcpu.singleshot_deadline_ns
            .store(deadline_ns, Ordering::Relaxed);
        note_deadline(deadline_ns);
    }
}

/// Sets the SCHEDOP_poll timeout of `vcpu`, the caller, running on this
/// pCPU (0: none); it fires by kicking the vcpu ([`on_tick`]).
pub fn set_poll_deadline(vcpu: &Vcpu, deadline_ns: u64) {
    vcpu.poll_deadline_ns.store(deadline_ns, Ordering::Relaxed);
    if deadline_ns != 0 {
        note_deadline(deadline_ns);
    }
}
