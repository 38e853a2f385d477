//! `timers`: singleshot timers and SCHEDOP_poll timeouts as a guest sees
//! them, where the hypervisor programs each pCPU's LAPIC timer for the
//! earliest deadline it hosts. `part=` on the module line picks what runs:
//!
//! - `precise` (1 vcpu, on a pCPU of its own): [`BURST_ROUNDS`] short
//!   singleshot timers in a row (2 to 152 us ahead, through
//!   VCPUOP_set_singleshot_timer and set_timer_op in turn), the vcpu
//!   spinning with events on; a timer re-armed earlier, one re-armed
//!   later, two cancelled ones, a far-future one replaced by a short one;
//!   then [`POLL_ROUNDS`] SCHEDOP_poll calls on a port nothing sends to,
//!   each with a timeout 10 to 410 us ahead, on a pCPU that has nothing
//!   else to run. Checked: every timer raises VIRQ_TIMER exactly once and
//!   never before its (last) deadline, a replaced or cancelled deadline
//!   never fires, and every poll returns 0, never before its timeout. A
//!   check that needs two calls to come before a deadline sets an attempt
//!   aside (and tries again, a few times) when the host held the vcpu up
//!   past it: the timer then rightly fired.
//! - `shared` (2 vcpus pinned to one pCPU): vcpu 1 spins with no timer
//!   while vcpu 0 arms [`SHARED_ROUNDS`] singleshot timers and blocks in
//!   SCHEDOP_block for each (its deadline comes while vcpu 1 holds the
//!   pCPU), then arms as many more and spins (the two take turns by time
//!   slice, so deadlines come while vcpu 0 waits for the pCPU). Checked:
//!   each raises VIRQ_TIMER exactly once, on vcpu 0, never early; vcpu 1
//!   handles none.
//! - `carry` (3 vcpus on 2 pCPUs): each vcpu arms [`CARRY_ROUNDS`]
//!   singleshot timers 1.5 ms ahead, waits 0.5 ms of it in SCHEDOP_poll
//!   (until 1 ms before the deadline), then spins until 1.5 ms past it. Three such vcpus keep two pCPUs mostly busy
//!   but not always: a poll's timeout wakes a vcpu while another holds
//!   its pCPU, and an idle pCPU takes it with its singleshot deadline
//!   pending (or takes a preempted one), which the pCPU that takes it
//!   must fire. Checked: each timer raises VIRQ_TIMER exactly once on its
//!   own vcpu, never early (the scenario checks that vcpus moved).
//! - `periodic` (1 vcpu): the periodic VIRQ_TIMER. Periods under Xen's
//!   1 ms and past 2^63-1 ns are refused with -EINVAL and start nothing;
//!   a [`PERIOD_NS`] period ticks [`PERIODIC_TICKS`] times while the vcpu
//!   spins; a [`RESET_PERIOD_NS`] period is set right after a tick, then
//!   VCPUOP_stop_periodic_timer stops it. As in Xen 4.17, the ticks count
//!   from the last one raised, even across a stop and a new period.
//!   Checked: the first tick comes from the set itself (the last was long
//!   ago), every tick comes (none lost), the k-th (from 0) no sooner than
//!   k periods after the set (never early), no more ticks than whole
//!   periods passed and the first (at most one per period), a period set
//!   anew right after a tick raises none at once, and none come once
//!   stopped.
//!
//! Every check is on behaviour (counts, and times against deadlines read
//! from the same clock); how late a timer fires is printed as a comment,
//! never judged.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use sluice_guest::errno::Errno;
use sluice_guest::evtchn::{self, virq};
use sluice_guest::smp::{MAX_VCPUS, note, noted, slot};
use sluice_guest::{StartInfo, check, check_eq, println, sched, smp, time, upcall, vcpu};

sluice_guest::entry!(main);

/// Short singleshot timers in a row (`precise`).
const BURST_ROUNDS: u32 = 200;
/// Polls with a timeout (`precise`).
const POLL_ROUNDS: u32 = 40;
/// Singleshot timers per way of waiting (`shared`).
const SHARED_ROUNDS: u32 = 15;
/// Singleshot timers per vcpu (`carry`).
const CARRY_ROUNDS: u32 = 30;
/// The period of `periodic`: not a multiple of the hypervisor's 1 ms
/// scheduler tick, so that a tick that waits for one shows as late.
const PERIOD_NS: u64 = 1_300_000;
/// The period `periodic` sets anew right after a tick.
const RESET_PERIOD_NS: u64 = 20_000_000;
/// Periodic ticks waited for (`periodic`).
const PERIODIC_TICKS: u32 = 100;
/// How long past a deadline a timer may take before it counts as lost.
const GIVE_UP_NS: u64 = 1_000_000_000;
/// How long a check waits after a deadline for a second (wrong) firing.
const QUIET_NS: u64 = 2_000_000;
/// Most attempts at a check whose setting up a held-up host can spoil.
const ATTEMPTS: u32 = 5;
/// More than the guest's clock and the hypervisor's can differ by (the
/// rounding of the time record's scale).
const CLOCK_SLACK_NS: u64 = 20_000;

/// Which part runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Precise,
    Shared,
    Carry,
    Periodic,
}

/// The part, for the secondary vcpus: 1 precise, 2 shared, 3 carry,
/// 4 periodic.
static PART: AtomicU32 = AtomicU32::new(0);
/// Per vcpu: its VIRQ_TIMER port.
static TIMER_PORT: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
/// Per vcpu: VIRQ_TIMER handler runs on it, and the time of the last one.
static FIRED: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static FIRED_AT: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// Vcpu 0: the time of each VIRQ_TIMER handler run, by its count (modulo
/// the length).
static TICK_AT: [AtomicU64; 2 * PERIODIC_TICKS as usize] =
    [const { AtomicU64::new(0) }; 2 * PERIODIC_TICKS as usize];
/// Per vcpu: a VIRQ_TIMER of another vcpu's port was handled on it.
static WRONG_VCPU: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
/// Per vcpu: timers that fired other than once, fired early, or could
/// not be armed; the timers armed; the greatest lateness seen (ns).
static COUNT_WRONG: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static EARLY: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static ARM_FAILED: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static ARMED: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static LATEST_NS: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// Per vcpu: its part is done.
static DONE: [AtomicBool; MAX_VCPUS] = [const { AtomicBool::new(false) }; MAX_VCPUS];
/// The vcpus that only keep a pCPU busy (or idle) stop.
static STOP: AtomicBool = AtomicBool::new(false);

fn now() -> u64 {
    time::now_ns().unwrap_or(0)
}

fn fired(vcpu: u32) -> u32 {
    noted(&FIRED, vcpu)
}

fn fired_at(vcpu: u32) -> u64 {
    slot(&FIRED_AT, vcpu).map_or(0, |at| at.load(Ordering::SeqCst))
}

/// The VIRQ_TIMER handler: counts the run on the vcpu it runs on, with
/// the time.
fn on_timer(port: u32) {
    let at = now();
    let vcpu = smp::current_vcpu();
    if slot(&TIMER_PORT, vcpu).is_none_or(|own| own.load(Ordering::SeqCst) != port) {
        note(&WRONG_VCPU, vcpu);
    }
    if let Some(slot) = slot(&FIRED_AT, vcpu) {
        slot.store(at, Ordering::SeqCst);
    }
    if vcpu == 0
        && let Some(slot) = tick_at(fired(0))
    {
        slot.store(at, Ordering::SeqCst);
    }
    note(&FIRED, vcpu);
}

/// Where vcpu 0's VIRQ_TIMER handler run number `count` (from 0) keeps
/// its time.
fn tick_at(count: u32) -> Option<&'static AtomicU64> {
    TICK_AT.get(count as usize % TICK_AT.len())
}

/// Busy-waits until system time `until` (events on).
fn spin_until(until: u64) {
    while now() < until {
        core::hint::spin_loop();
    }
}

/// Spins (events on) until `vcpu` handled more than `before` timers or
/// `limit` passed; whether it did.
fn wait_fired(vcpu: u32, before: u32, limit: u64) -> bool {
    while fired(vcpu) == before {
        if now() > limit {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// After a timer armed when `vcpu` had handled `before` timers, whose
/// (last) deadline is `deadline`, fired or gave up: waits [`QUIET_NS`]
/// past the deadline, then notes a count other than one and a run before
/// the deadline; keeps the lateness.
fn judge(vcpu: u32, before: u32, deadline: u64) {
    let at = fired_at(vcpu);
    spin_until(deadline + QUIET_NS);
    note(&ARMED, vcpu);
    if fired(vcpu) != before + 1 {
        note(&COUNT_WRONG, vcpu);
        return;
    }
    if at < deadline {
        note(&EARLY, vcpu);
    } else if let Some(latest) = slot(&LATEST_NS, vcpu) {
        latest.fetch_max(at - deadline, Ordering::SeqCst);
    }
}

/// Runs `attempt` until it gives a verdict (`None`: set aside, because
/// the host held this vcpu up where the check needs two calls to come
/// before a deadline, with nothing wrong) or [`ATTEMPTS`] ran; the
/// verdict, false if every attempt was set aside. A timer that is lost or
/// fires wrongly every time still fails: only a held-up host is forgiven,
/// and only a few times in a row.
fn conclusive(what: &str, mut attempt: impl FnMut() -> Option<bool>) -> bool {
    for set_aside in 0..ATTEMPTS {
        if let Some(verdict) = attempt() {
            if set_aside != 0 {
                println!("# {what}: {set_aside} attempt(s) set aside (the host held this vcpu up)");
            }
            return verdict;
        }
        // Nothing of the attempt set aside may reach the next one.
        let _ = vcpu::stop_singleshot_timer(0);
        spin_until(now() + QUIET_NS);
    }
    println!("# {what}: all {ATTEMPTS} attempts set aside");
    false
}

/// One singleshot timer of `vcpu` `ahead_ns` from now, waited for by
/// `wait` (given the count before and the deadline); judged.
fn one_timer(vcpu: u32, ahead_ns: u64, use_timer_op: bool, wait: impl Fn(u32, u64)) {
    let before = fired(vcpu);
    let deadline = now() + ahead_ns;
    let armed = if use_timer_op {
        vcpu::set_timer_op(deadline)
    } else {
        vcpu::set_singleshot_timer(vcpu, deadline)
    };
    if armed.is_err() {
        note(&ARM_FAILED, vcpu);
        return;
    }
    wait(before, deadline);
    judge(vcpu, before, deadline);
}

/// `precise`: the burst, the re-armed, cancelled and far timers, the
/// polls.
fn precise() {
    // A burst with no quiet wait between timers: a second firing of one
    // shows up as an early firing of the next, or in the total.
    let start = fired(0);
    let (mut lost, mut early, mut failed, mut latest) = (0u32, 0u32, 0u32, 0u64);
    let mut last_deadline = now();
    for round in 0..u64::from(BURST_ROUNDS) {
        let before = fired(0);
        let deadline = now() + 2_000 + (round * 7_919) % 150_000;
        last_deadline = deadline;
        let armed = if round % 2 == 0 {
            vcpu::set_singleshot_timer(0, deadline)
        } else {
            vcpu::set_timer_op(deadline)
        };
        if armed.is_err() {
            failed += 1;
            continue;
        }
        if !wait_fired(0, before, deadline + GIVE_UP_NS) {
            lost += 1;
            continue;
        }
        let at = fired_at(0);
        if at < deadline {
            early += 1;
        }
        latest = latest.max(at.saturating_sub(deadline));
    }
    spin_until(last_deadline + QUIET_NS);
    println!("# burst: latest VIRQ_TIMER {latest} ns after its deadline (not judged)");
    check_eq!(
        (failed, lost),
        (0, 0),
        "each of {BURST_ROUNDS} short singleshot timers in a row is armed and fires (set_singleshot_timer and set_timer_op in turn)"
    );
    check_eq!(
        fired(0) - start,
        BURST_ROUNDS,
        "the {BURST_ROUNDS} timers raise VIRQ_TIMER exactly {BURST_ROUNDS} times"
    );
    check_eq!(early, 0, "no timer of the burst fires before its deadline");

    // Re-armed earlier: the later deadline is replaced, the earlier fires.
    // Set aside if the host held this vcpu up to the later deadline (from
    // before the second arming to the handler): which one fired cannot be
    // told then.
    let mut runs = 0;
    let rearmed_earlier = conclusive("a timer re-armed earlier", || {
        let before = fired(0);
        let later = now() + 50_000_000;
        let armed_later = vcpu::set_singleshot_timer(0, later).is_ok();
        let earlier = now() + 500_000;
        let armed_earlier = vcpu::set_singleshot_timer(0, earlier).is_ok();
        let replaced = now();
        wait_fired(0, before, later + GIVE_UP_NS);
        let at = fired_at(0);
        spin_until(later + QUIET_NS);
        runs = fired(0) - before;
        if !(armed_later && armed_earlier) {
            return Some(false);
        }
        if replaced + CLOCK_SLACK_NS >= later || (runs == 1 && at >= later) {
            return None;
        }
        Some(runs == 1 && at >= earlier && at < later)
    });
    check!(
        rearmed_earlier,
        "a timer re-armed earlier fires once, at or after the earlier deadline and before the replaced one ({runs} run(s))"
    );

    // Re-armed later: the earlier deadline (which the pCPU's timer may
    // be armed for) must not fire it. Set aside if the host held this vcpu
    // past the earlier deadline before the second arming returned: the
    // earlier timer then rightly fired.
    let rearmed_later = conclusive("a timer re-armed later", || {
        let before = fired(0);
        let earlier = now() + 300_000;
        let armed_earlier = vcpu::set_singleshot_timer(0, earlier).is_ok();
        let later = now() + 3_000_000;
        let armed_later = vcpu::set_timer_op(later).is_ok();
        let replaced = now();
        wait_fired(0, before, later + GIVE_UP_NS);
        let at = fired_at(0);
        spin_until(later + QUIET_NS);
        runs = fired(0) - before;
        if replaced + CLOCK_SLACK_NS >= earlier {
            return None;
        }
        Some(armed_earlier && armed_later && runs == 1 && at >= later)
    });
    check!(
        rearmed_later,
        "a timer re-armed later fires once, not before the later deadline ({runs} run(s))"
    );

    // Cancelled, both ways. Set aside if the host held this vcpu past the
    // deadline before the last call returned.
    let cancelled = conclusive("a cancelled timer", || {
        let before = fired(0);
        let deadline = now() + 300_000;
        let stopped = vcpu::set_singleshot_timer(0, deadline).is_ok()
            && vcpu::stop_singleshot_timer(0).is_ok()
            && vcpu::set_timer_op(deadline).is_ok()
            && vcpu::set_timer_op(0).is_ok();
        let done = now();
        spin_until(deadline + QUIET_NS);
        if done + CLOCK_SLACK_NS >= deadline {
            return None;
        }
        Some(stopped && fired(0) == before)
    });
    check!(
        cancelled,
        "a singleshot timer stopped (VCPUOP_stop_singleshot_timer, set_timer_op(0)) before its deadline never fires"
    );

    // A deadline with the top bit set is negative as the hypervisor's
    // signed system time: long past, it fires at once (as on Xen 4.17).
    let before = fired(0);
    let negative_armed = vcpu::set_singleshot_timer(0, u64::MAX - 1).is_ok();
    let negative_fired = wait_fired(0, before, now() + GIVE_UP_NS);
    spin_until(now() + QUIET_NS);
    check!(
        negative_armed && negative_fired && fired(0) == before + 1,
        "a singleshot timer at 2^64-2 ns (negative system time) fires at once, once ({} VIRQ_TIMER)",
        fired(0) - before
    );

    // SCHEDOP_poll reads its timeout the same way: 2^64-2 has passed, so
    // the poll returns at once. A singleshot timer a second ahead on the
    // polled port (VIRQ_TIMER) ends the poll if the timeout were taken as
    // the far future instead, so that the check fails rather than hangs.
    let port = slot(&TIMER_PORT, 0).map_or(0, |port| port.load(Ordering::SeqCst));
    let before = fired(0);
    let rescue_armed = vcpu::set_singleshot_timer(0, now() + GIVE_UP_NS).is_ok();
    let polled = sched::poll(&[port], u64::MAX - 1);
    let rescued = fired(0) != before;
    let stopped = vcpu::stop_singleshot_timer(0).is_ok();
    check!(
        rescue_armed && stopped && polled.is_ok() && !rescued,
        "SCHEDOP_poll with a timeout of 2^64-2 ns (negative system time) returns at once ({polled:?}, rescue timer needed: {rescued})"
    );

    // Far future: further than the LAPIC timer counts (about a minute),
    // then replaced by a short one.
    let before = fired(0);
    let far_armed = vcpu::set_singleshot_timer(0, i64::MAX as u64).is_ok();
    spin_until(now() + QUIET_NS);
    let quiet = fired(0) == before;
    check!(
        far_armed && quiet,
        "a singleshot timer at 2^63-1 ns is armed and does not fire"
    );
    one_timer(0, 100_000, false, |before, deadline| {
        wait_fired(0, before, deadline + GIVE_UP_NS);
    });
    check!(
        noted(&COUNT_WRONG, 0) == 0 && noted(&EARLY, 0) == 0 && noted(&ARM_FAILED, 0) == 0,
        "a short timer that replaces a far one fires once, not early"
    );
    let _ = vcpu::stop_singleshot_timer(0);

    // Polls that time out, on a pCPU with nothing else to run.
    let port = slot(&TIMER_PORT, 0).map_or(0, |port| port.load(Ordering::SeqCst));
    let before = fired(0);
    let (mut failed, mut early, mut latest) = (0u32, 0u32, 0u64);
    for round in 0..u64::from(POLL_ROUNDS) {
        let timeout = now() + 10_000 + (round * 13_331) % 400_000;
        if sched::poll(&[port], timeout).is_err() {
            failed += 1;
        }
        let after = now();
        if after < timeout {
            early += 1;
        }
        latest = latest.max(after.saturating_sub(timeout));
    }
    println!("# poll: latest return {latest} ns after its timeout (not judged)");
    check_eq!(
        failed,
        0,
        "each of {POLL_ROUNDS} SCHEDOP_poll calls with a timeout returns 0"
    );
    check_eq!(
        early,
        0,
        "no SCHEDOP_poll returns before its timeout (nothing sent to its port)"
    );
    check_eq!(fired(0), before, "no VIRQ_TIMER while no timer is armed");
}

/// `shared`, vcpu 0: timers waited for in SCHEDOP_block, then spinning,
/// while vcpu 1 keeps the pCPU busy.
fn shared() {
    for round in 0..u64::from(SHARED_ROUNDS) {
        one_timer(
            0,
            200_000 + round * 50_000,
            round % 2 == 1,
            |before, deadline| {
                while fired(0) == before && now() < deadline + GIVE_UP_NS {
                    // Masked from the look to the block: a VIRQ_TIMER in
                    // between stays pending, and SCHEDOP_block (which
                    // clears the mask) returns at once and delivers it.
                    // Unmasked, it would be handled before the block,
                    // which would then wait for an event that never comes.
                    upcall::mask_vcpu();
                    if fired(0) == before {
                        let _ = sched::block();
                    }
                    upcall::unmask_vcpu();
                }
            },
        );
    }
    for round in 0..u64::from(SHARED_ROUNDS) {
        one_timer(
            0,
            3_000_000 + round * 400_000,
            round % 2 == 1,
            |before, deadline| {
                wait_fired(0, before, deadline + GIVE_UP_NS);
            },
        );
    }
}

/// `carry`, every vcpu: arms its timer, then waits in SCHEDOP_poll with a
/// timeout a third of the way there (on its own timer port, not pending
/// yet); the timeout often ends the poll while another vcpu spins on its
/// pCPU, and the woken vcpu is offered to an idle pCPU, which takes it
/// with its deadline pending. Then it spins past the deadline.
fn carry(vcpu: u32) {
    let port = slot(&TIMER_PORT, vcpu).map_or(0, |port| port.load(Ordering::SeqCst));
    for _ in 0..CARRY_ROUNDS {
        one_timer(vcpu, 1_500_000, false, |before, deadline| {
            if fired(vcpu) == before {
                let _ = sched::poll(&[port], deadline - 1_000_000);
            }
            spin_until(deadline + 1_500_000);
            wait_fired(vcpu, before, deadline + GIVE_UP_NS);
        });
    }
}

/// `periodic`: the refused periods, then [`PERIODIC_TICKS`] ticks of a
/// [`PERIOD_NS`] period, a period set anew right after a tick, then the
/// stop.
fn periodic() {
    // Refused periods change nothing: the timer stopped in `main` stays
    // stopped.
    let before = fired(0);
    let refused = [0, 200_000, 999_999, 1 << 63]
        .iter()
        .all(|&period| vcpu::set_periodic_timer(0, period) == Err(Errno::EINVAL));
    spin_until(now() + 5 * PERIOD_NS);
    check!(
        refused && fired(0) == before,
        "periods of 0, 200 us, 999999 ns and 2^63 ns are refused with -EINVAL and start no tick"
    );

    // The ticks count from the last one, long ago (the timer was stopped
    // at start): the first comes from the call itself, its upcall
    // delivered as the call returns.
    let base = fired(0);
    let set_at = now();
    let armed = vcpu::set_periodic_timer(0, PERIOD_NS).is_ok();
    let at_once = fired(0) > base;
    let mut lost = false;
    for count in 0..PERIODIC_TICKS {
        if !wait_fired(0, base + count, now() + GIVE_UP_NS) {
            lost = true;
            break;
        }
    }
    let loop_end = now();
    let ticks = fired(0) - base;

    // The k-th tick (from 0) is due no sooner than k periods after the
    // set: each is due a period after the one before was raised.
    let recorded = ticks.min(TICK_AT.len() as u32);
    let (mut early, mut previous) = (0u32, set_at);
    let mut gaps = 0u64;
    let mut sorted = [0u64; 2 * PERIODIC_TICKS as usize];
    for k in 0..recorded {
        let at = tick_at(base + k).map_or(0, |at| at.load(Ordering::SeqCst));
        if at < set_at + u64::from(k) * PERIOD_NS {
            early += 1;
        }
        if k > 0 {
            let gap = at.saturating_sub(previous + PERIOD_NS);
            gaps += gap;
            if let Some(slot) = sorted.get_mut(k as usize - 1) {
                *slot = at.saturating_sub(previous);
            }
        }
        previous = at;
    }
    let whole_periods = (loop_end - set_at) / PERIOD_NS;
    let measured = recorded.saturating_sub(1) as usize;
    let gaps_seen = sorted.get_mut(..measured).unwrap_or_default();
    gaps_seen.sort_unstable();
    let interval = |index: usize| gaps_seen.get(index).copied().unwrap_or(0);
    println!(
        "# periodic: {ticks} ticks of {PERIOD_NS} ns in {} ns; interval between handled ticks: min {} ns, median {} ns, max {} ns; past the one before + period: mean {} ns (not judged)",
        loop_end - set_at,
        interval(0),
        interval(measured / 2),
        interval(measured.saturating_sub(1)),
        gaps / (measured.max(1) as u64)
    );
    check!(
        armed && at_once,
        "VCPUOP_set_periodic_timer of a timer stopped long ago raises the first tick at once (the ticks count from the last one)"
    );
    check!(
        !lost,
        "each of {PERIODIC_TICKS} ticks of a {PERIOD_NS} ns period comes ({ticks} ticks)"
    );
    check_eq!(
        early,
        0,
        "no periodic tick comes before its deadline (the k-th no sooner than k periods after the set)"
    );
    check!(
        u64::from(ticks) <= 1 + whole_periods,
        "at most one periodic tick per period ({ticks} ticks in {whole_periods} whole periods and the first)"
    );

    // Set anew right after a tick: the next is due a new period after
    // that tick, so none comes at once. Set aside if the host held this
    // vcpu up a whole period past the tick before the call returned.
    let mut runs = 0;
    let reset = conclusive("a period set anew", || {
        let tick = fired(0);
        if !wait_fired(0, tick, now() + GIVE_UP_NS) {
            return Some(false);
        }
        let (before, last) = (fired(0), fired_at(0));
        let set = vcpu::set_periodic_timer(0, RESET_PERIOD_NS).is_ok();
        let returned = now();
        runs = fired(0) - before;
        if returned + CLOCK_SLACK_NS >= last + RESET_PERIOD_NS {
            return None;
        }
        Some(set && runs == 0)
    });
    check!(
        reset,
        "a period set anew right after a tick raises no tick at once ({runs} at once)"
    );

    let stopped = vcpu::stop_periodic_timer(0).is_ok();
    // A tick raised before the stop was handled as the call returned.
    let after_stop = fired(0);
    spin_until(now() + 3 * RESET_PERIOD_NS);
    check!(
        stopped && fired(0) == after_stop,
        "VCPUOP_stop_periodic_timer stops the ticks (none in the 3 periods after)"
    );
}

/// Vcpu 1 of `shared`: keeps the pCPU busy until vcpu 0 is done.
fn bystander() {
    while !STOP.load(Ordering::SeqCst) {
        core::hint::spin_loop();
    }
}

fn run_part(vcpu: u32) {
    match (PART.load(Ordering::SeqCst), vcpu) {
        (1, 0) => precise(),
        (2, 0) => shared(),
        (2, _) => bystander(),
        (3, _) => carry(vcpu),
        (4, 0) => periodic(),
        _ => {}
    }
    if let Some(done) = slot(&DONE, vcpu) {
        done.store(true, Ordering::SeqCst);
    }
}

/// A secondary vcpu's entry: events on, its part, then the runtime parks
/// it in SCHEDOP_block.
fn secondary(vcpu: u32) {
    upcall::unmask_vcpu();
    run_part(vcpu);
}

fn main(start_info: &'static StartInfo) {
    let (part, needed) = match start_info.arg_value("part") {
        Some("precise") => (Part::Precise, 1),
        Some("shared") => (Part::Shared, 2),
        Some("carry") => (Part::Carry, 3),
        Some("periodic") => (Part::Periodic, 1),
        other => {
            check!(
                false,
                "part= names precise, shared, carry or periodic (got {other:?})"
            );
            return;
        }
    };
    let vcpus = (0..MAX_VCPUS as u32)
        .take_while(|&vcpu| vcpu::exists(vcpu))
        .count() as u32;
    if vcpus < needed {
        check!(
            false,
            "the domain has at least {needed} vcpus (got {vcpus})"
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
    let stopped = (0..needed).all(|vcpu| vcpu::stop_periodic_timer(vcpu).is_ok());
    check!(stopped, "every vcpu's periodic timer stops");
    let bound = (0..needed).all(|vcpu| match evtchn::bind_virq(virq::TIMER, vcpu) {
        Ok(port) => {
            if let Some(slot) = slot(&TIMER_PORT, vcpu) {
                slot.store(port, Ordering::SeqCst);
            }
            upcall::set_handler(port, on_timer);
            true
        }
        Err(_) => false,
    });
    check!(bound, "VIRQ_TIMER binds on each of the {needed} vcpus");
    upcall::unmask_vcpu();
    PART.store(
        match part {
            Part::Precise => 1,
            Part::Shared => 2,
            Part::Carry => 3,
            Part::Periodic => 4,
        },
        Ordering::SeqCst,
    );
    let started = (1..needed).all(|vcpu| smp::start(vcpu, secondary).is_ok());
    check!(started, "vcpus 1 to {} start", needed - 1);
    if !started {
        return;
    }
    run_part(0);
    // Every vcpu of `carry` arms timers; vcpu 1 of `shared` then stops.
    let limit = now() + 60_000_000_000;
    let armers: &[u32] = if part == Part::Carry {
        &[0, 1, 2]
    } else {
        &[0]
    };
    while !armers
        .iter()
        .all(|&vcpu| slot(&DONE, vcpu).is_some_and(|done| done.load(Ordering::SeqCst)))
        && now() < limit
    {
        core::hint::spin_loop();
    }
    STOP.store(true, Ordering::SeqCst);
    for &vcpu in armers {
        println!(
            "# vcpu {vcpu}: {} timers judged, latest VIRQ_TIMER {} ns after its deadline (not judged)",
            noted(&ARMED, vcpu),
            slot(&LATEST_NS, vcpu).map_or(0, |latest| latest.load(Ordering::SeqCst))
        );
        if matches!(part, Part::Precise | Part::Periodic) {
            continue;
        }
        let rounds = if part == Part::Shared {
            2 * SHARED_ROUNDS
        } else {
            CARRY_ROUNDS
        };
        check_eq!(
            (noted(&ARMED, vcpu), noted(&ARM_FAILED, vcpu)),
            (rounds, 0),
            "vcpu {vcpu} arms all its {rounds} singleshot timers"
        );
        check_eq!(
            noted(&COUNT_WRONG, vcpu),
            0,
            "each of vcpu {vcpu}'s {rounds} singleshot timers raises VIRQ_TIMER exactly once (none lost)"
        );
        check_eq!(
            noted(&EARLY, vcpu),
            0,
            "no singleshot timer of vcpu {vcpu} fires before its deadline"
        );
    }
    if part == Part::Shared {
        check_eq!(
            fired(1),
            0,
            "vcpu 1, which armed no timer, handles no VIRQ_TIMER"
        );
    }
    let wrong = (0..needed)
        .map(|vcpu| noted(&WRONG_VCPU, vcpu))
        .sum::<u32>();
    check_eq!(wrong, 0, "each vcpu handles only its own VIRQ_TIMER port");
    upcall::mask_vcpu();
    check_eq!(upcall::failsafes(), 0, "no failsafe callback ran");
}
