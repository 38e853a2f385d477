//! `migrate`: vcpus that move between the pCPUs of their domain's
//! affinity, and pinned ones that do not, as a guest sees them. `part=` on
//! the module line picks what runs:
//!
//! - `spread` (3 vcpus, `cpus=0-1` on 2 pCPUs: the builder puts vcpus 0
//!   and 2 on pCPU 0, vcpu 1 on pCPU 1): vcpu 1 does a fixed amount of
//!   work and parks; vcpus 0 and 2 then hand a counter back and forth
//!   until each has made at least [`SPREAD_ROUNDS`] round trips and seen
//!   at least [`MIN_FAST`] fast ones, or [`SPREAD_LIMIT_NS`] passed. Two
//!   vcpus that share a pCPU take turns only when a 10 ms time slice ends
//!   (neither blocks), so the counter comes back to a vcpu less than
//!   [`FAST_NS`] after it handed it over only if the two run at once, on
//!   two pCPUs: one of them must have moved to the pCPU vcpu 1 left idle.
//!   Checked: every vcpu finishes its work, and each of vcpus 0 and 2 sees
//!   at least [`MIN_FAST`] such round trips. (A loaded host only makes
//!   round trips longer, never shorter: QEMU's threads for the two pCPUs
//!   may then seldom run at once, so the hand-off goes on until enough
//!   fast ones came, rather than judging a fixed number of rounds.)
//! - `pinned` (2 vcpus, `cpus=` naming one pCPU): the same hand-off,
//!   [`PINNED_ROUNDS`] times each; pinned vcpus can never run at once, so
//!   no round trip may be fast, even while another pCPU is idle.
//! - `timers` (2 or 3 vcpus on 2 pCPUs): each vcpu, [`TIMER_ROUNDS`]
//!   times, arms its singleshot timer 1 ms ahead, works a while, then
//!   waits for its VIRQ_TIMER in SCHEDOP_poll (1 s timeout); a vcpu that
//!   wakes while its pCPU runs another one is taken by an idle pCPU (see
//!   `timers` for how the work is shaped to make that happen).
//!   Checked: every timer raises exactly one VIRQ_TIMER on its own vcpu,
//!   never before its deadline, and none is lost (a lost one leaves the
//!   wait to its timeout with no tick).
//!
//! - `updown` (3 vcpus, `cpus=0-1` on 2 pCPUs, placed as in `spread`):
//!   vcpu 0 takes vcpu 2 down and up again [`UPDOWN_CYCLES`] times,
//!   working and napping in between, while vcpu 1 works and naps on the
//!   other pCPU, so that vcpu 2 is taken down and brought up while it waits
//!   on a busy pCPU, is moved, or has just been moved. Vcpu 2 keeps a
//!   pattern on its own stack across a stretch of work, over and over.
//!   Checked: every VCPUOP_down and VCPUOP_up succeeds and VCPUOP_is_up
//!   follows them, the pattern is always intact (two pCPUs running vcpu 2
//!   at once would share its stack), and vcpu 2 runs on after the last up.
//!
//! Every part also reads, on each vcpu, its own time record between two
//! reads of vcpu 0's (the runtime's clock): the hypervisor republishes a
//! vcpu's record on the pCPU it moves to, and the records must keep
//! telling one clock, never going back. Checked: no read disagrees.
//!
//! The time a round trip takes is read before the hand-off and after the
//! counter came back, so a preemption anywhere in between only makes it
//! longer: a fast round trip is proof of two vcpus running at once.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use sluice_guest::evtchn::{self, virq};
use sluice_guest::smp::{MAX_VCPUS, note, noted, slot};
use sluice_guest::{StartInfo, check, check_eq, println, sched, smp, time, upcall, vcpu};

sluice_guest::entry!(main);

/// A round trip shorter than this needs both vcpus running at once (two
/// vcpus sharing a pCPU alternate every 10 ms at the soonest).
const FAST_NS: u64 = 8_000_000;
/// Round trips each vcpu of `spread` makes at least.
const SPREAD_ROUNDS: u32 = 300;
/// Fast round trips each vcpu of `spread` must see.
const MIN_FAST: u32 = 20;
/// How long (system time from the part's start) `spread`'s hand-off goes
/// on at most while waiting for [`MIN_FAST`] fast round trips on each
/// side: some 130 times what it takes on an idle host (about 150 ms).
const SPREAD_LIMIT_NS: u64 = 20_000_000_000;
/// Round trips each vcpu of `pinned` makes.
const PINNED_ROUNDS: u32 = 30;
/// Singleshot timers each vcpu of `timers` waits for.
const TIMER_ROUNDS: u32 = 30;
/// Times vcpu 0 of `updown` takes vcpu 2 down and up again.
const UPDOWN_CYCLES: u32 = 400;
/// Words of the pattern vcpu 2 of `updown` keeps on its stack.
const PATTERN_WORDS: usize = 64;
/// Work units of vcpu 1 in `spread`.
const WORK_UNITS: u32 = 200_000;
/// How long (system time) a part may take before it gives up.
const PART_LIMIT_NS: u64 = 40_000_000_000;

/// Which part runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Part {
    Spread,
    Pinned,
    Timers,
    UpDown,
}

/// The part, for the secondary vcpus: 1 spread, 2 pinned, 3 timers.
static PART: AtomicU32 = AtomicU32::new(0);
/// The hand-off counter: the vcpu of side `n` writes when it is `n` mod 2.
static COUNTER: AtomicU64 = AtomicU64::new(0);
/// Set by the `spread` vcpu that ends the hand-off (see [`rendezvous`]).
static HANDOFF_DONE: AtomicBool = AtomicBool::new(false);
/// Set when a part gives up (its time limit passed).
static ABORT: AtomicBool = AtomicBool::new(false);
/// When the part started (system time ns).
static STARTED_NS: AtomicU64 = AtomicU64::new(0);
/// Per vcpu: round trips made, and how many were fast.
static ROUNDS: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static FAST: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
/// Per vcpu: the shortest round trip seen (ns).
static SHORTEST_NS: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(u64::MAX) }; MAX_VCPUS];
/// Per vcpu: its part is done.
static DONE: [AtomicBool; MAX_VCPUS] = [const { AtomicBool::new(false) }; MAX_VCPUS];
/// Per vcpu: the result of its fixed work (kept so it is not optimised out).
static WORK: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// Per vcpu: its VIRQ_TIMER port.
static TIMER_PORT: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
/// Per vcpu: VIRQ_TIMER upcalls handled on it, and when the last one was.
static TICKS: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static LAST_TICK_NS: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// `updown`: vcpu 0 is done taking vcpu 2 down and up; a VCPUOP_down,
/// VCPUOP_up or VCPUOP_is_up answer that was wrong; stretches of vcpu 2
/// whose stack pattern changed; stretches vcpu 2 finished.
static STOP: AtomicBool = AtomicBool::new(false);
static UPDOWN_WRONG: AtomicU32 = AtomicU32::new(0);
/// Which of the four answers of a cycle went wrong (bit 0: down, 1:
/// is_up after it, 2: up, 3: is_up after it), and the last wrong value.
static UPDOWN_WHAT: AtomicU32 = AtomicU32::new(0);
static UPDOWN_LAST: AtomicU64 = AtomicU64::new(0);
static PATTERN_WRONG: AtomicU32 = AtomicU32::new(0);
static STRETCHES: AtomicU64 = AtomicU64::new(0);
/// Per vcpu: reads of its own time record, those that fell outside the
/// two reads of vcpu 0's around them or went back, and the last one (ns).
static CLOCK_READS: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static CLOCK_WRONG: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static LAST_OWN_NS: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// How far two time records of one clock may disagree: each conversion
/// truncates to the ns (a broken record is off by far more).
const CLOCK_SLACK_NS: u64 = 1_000;
/// Per vcpu, timers that: fired more or less than once, fired early.
static TIMER_COUNT_WRONG: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
static TIMER_EARLY: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];
/// Per vcpu: a VIRQ_TIMER of another vcpu's port was handled here.
static TIMER_WRONG_VCPU: [AtomicU32; MAX_VCPUS] = [const { AtomicU32::new(0) }; MAX_VCPUS];

fn now() -> u64 {
    time::now_ns().unwrap_or(0)
}

/// Reads this vcpu's own time record between two reads of vcpu 0's, and
/// notes a read outside them or one before its previous read.
fn check_own_clock(vcpu: u32) {
    let before = now();
    let own = time::vcpu_now_ns(vcpu);
    let after = now();
    note(&CLOCK_READS, vcpu);
    let Some(own) = own else {
        note(&CLOCK_WRONG, vcpu);
        return;
    };
    let last = slot(&LAST_OWN_NS, vcpu).map_or(0, |last| last.swap(own, Ordering::SeqCst));
    if own + CLOCK_SLACK_NS < before || own > after + CLOCK_SLACK_NS || own + CLOCK_SLACK_NS < last
    {
        note(&CLOCK_WRONG, vcpu);
    }
}

/// A fixed amount of work; returns its result.
fn work(units: u32) -> u64 {
    let mut value = 1u64;
    for unit in 0..units {
        value = core::hint::black_box(value.wrapping_mul(6_364_136_223_846_793_005))
            .wrapping_add(u64::from(unit));
    }
    value
}

/// Busy-waits `duration_ns` (events enabled).
fn spin_for(duration_ns: u64) {
    let end = now() + duration_ns;
    while now() < end {
        core::hint::spin_loop();
    }
}

/// Whether the part ran out of time (then it gives up everywhere).
fn out_of_time() -> bool {
    if ABORT.load(Ordering::SeqCst) {
        return true;
    }
    if now() > STARTED_NS.load(Ordering::SeqCst) + PART_LIMIT_NS {
        ABORT.store(true, Ordering::SeqCst);
        return true;
    }
    false
}

/// Whether `spread`'s hand-off may end: both vcpus made at least
/// [`SPREAD_ROUNDS`] round trips and saw [`MIN_FAST`] fast ones, or
/// [`SPREAD_LIMIT_NS`] passed (the checks then tell what was missing).
fn spread_is_done() -> bool {
    let enough = [0, 2]
        .iter()
        .all(|&vcpu| noted(&ROUNDS, vcpu) >= SPREAD_ROUNDS && noted(&FAST, vcpu) >= MIN_FAST);
    enough || now() > STARTED_NS.load(Ordering::SeqCst) + SPREAD_LIMIT_NS
}

/// This vcpu's side of the hand-off: wait until the counter is `side` mod
/// 2, then bump it; a round trip is timed from just before this vcpu's
/// bump to just after it sees the counter back. `pinned` makes `rounds`
/// of them; in `spread`, the vcpu holding the counter ends the hand-off
/// for both once [`spread_is_done`] (the other one sees
/// [`HANDOFF_DONE`] while it waits).
fn rendezvous(vcpu: u32, side: u64, rounds: u32) {
    let is_spread = PART.load(Ordering::SeqCst) == 1;
    let mut handed_at: Option<u64> = None;
    let mut round = 0;
    while is_spread || round < rounds {
        let mut spins = 0u32;
        while COUNTER.load(Ordering::SeqCst) % 2 != side {
            if HANDOFF_DONE.load(Ordering::SeqCst) {
                return;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && out_of_time() {
                return;
            }
            core::hint::spin_loop();
        }
        if let Some(handed_at) = handed_at {
            let trip = now().saturating_sub(handed_at);
            if let Some(shortest) = slot(&SHORTEST_NS, vcpu) {
                shortest.fetch_min(trip, Ordering::SeqCst);
            }
            if trip < FAST_NS
                && let Some(fast) = slot(&FAST, vcpu)
            {
                fast.fetch_add(1, Ordering::SeqCst);
            }
        }
        check_own_clock(vcpu);
        if is_spread && spread_is_done() {
            HANDOFF_DONE.store(true, Ordering::SeqCst);
            return;
        }
        handed_at = Some(now());
        COUNTER.fetch_add(1, Ordering::SeqCst);
        round += 1;
        if let Some(done) = slot(&ROUNDS, vcpu) {
            done.store(round, Ordering::SeqCst);
        }
    }
}

/// The VIRQ_TIMER handler: counts the tick on the vcpu it runs on.
fn tick(port: u32) {
    let vcpu = smp::current_vcpu();
    if slot(&TIMER_PORT, vcpu).is_none_or(|own| own.load(Ordering::SeqCst) != port)
        && let Some(wrong) = slot(&TIMER_WRONG_VCPU, vcpu)
    {
        wrong.fetch_add(1, Ordering::SeqCst);
    }
    if let Some(last) = slot(&LAST_TICK_NS, vcpu) {
        last.store(now(), Ordering::SeqCst);
    }
    if let Some(ticks) = slot(&TICKS, vcpu) {
        ticks.fetch_add(1, Ordering::SeqCst);
    }
}

fn ticks(vcpu: u32) -> u32 {
    slot(&TICKS, vcpu).map_or(0, |ticks| ticks.load(Ordering::SeqCst))
}

/// This vcpu's singleshot timers: arm 1 ms ahead, work a while, wait in
/// SCHEDOP_poll, count what arrived. Vcpu 2 works longer than its timer
/// (1.5 ms), the others briefly (0.3 ms): with `spread`'s placement, vcpu
/// 0's timer fires while vcpu 2 holds their shared pCPU 0, and pCPU 1,
/// where vcpu 1 mostly waits, takes vcpu 0.
fn timers(vcpu: u32) {
    let port = slot(&TIMER_PORT, vcpu).map_or(0, |port| port.load(Ordering::SeqCst));
    for _ in 0..TIMER_ROUNDS {
        if out_of_time() {
            return;
        }
        check_own_clock(vcpu);
        let before = ticks(vcpu);
        let due = now() + 1_000_000;
        if vcpu::set_singleshot_timer(vcpu, due).is_err() {
            note(&TIMER_COUNT_WRONG, vcpu);
            continue;
        }
        spin_for(if vcpu == 2 { 1_500_000 } else { 300_000 });
        // Masked, the tick stays pending on its port for the poll to see.
        upcall::mask_vcpu();
        if ticks(vcpu) == before {
            let _ = sched::poll(&[port], now() + 1_000_000_000);
        }
        upcall::unmask_vcpu();
        let limit = now() + 100_000_000;
        while ticks(vcpu) == before && now() < limit {
            core::hint::spin_loop();
        }
        if ticks(vcpu) != before + 1 {
            note(&TIMER_COUNT_WRONG, vcpu);
        }
        if slot(&LAST_TICK_NS, vcpu).is_some_and(|last| last.load(Ordering::SeqCst) < due) {
            note(&TIMER_EARLY, vcpu);
        }
    }
}

/// Waits in SCHEDOP_poll on this vcpu's VIRQ_TIMER port (no timer armed)
/// for `duration_ns`, leaving its pCPU idle.
fn nap(vcpu: u32, duration_ns: u64) {
    let port = slot(&TIMER_PORT, vcpu).map_or(0, |port| port.load(Ordering::SeqCst));
    let _ = sched::poll(&[port], now() + duration_ns);
}

/// Vcpu 2 of `updown`: over and over, writes a pattern on its stack,
/// works, and checks the pattern, until vcpu 0 is done.
fn keep_pattern() {
    let mut stretch = 0u64;
    while !STOP.load(Ordering::SeqCst) && !out_of_time() {
        let expected = |index: usize| stretch.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (index as u64);
        let mut pattern = [0u64; PATTERN_WORDS];
        for (index, word) in pattern.iter_mut().enumerate() {
            *word = expected(index);
        }
        // The pattern stays in memory, on this vcpu's stack, across the
        // work (and whatever downs, ups and moves happen meanwhile).
        core::hint::black_box(&mut pattern);
        if let Some(result) = slot(&WORK, 2) {
            result.store(work(2_000), Ordering::SeqCst);
        }
        let pattern = core::hint::black_box(&pattern);
        if pattern
            .iter()
            .enumerate()
            .any(|(index, &word)| word != expected(index))
        {
            PATTERN_WRONG.fetch_add(1, Ordering::SeqCst);
        }
        stretch += 1;
        STRETCHES.store(stretch, Ordering::SeqCst);
    }
}

/// Vcpu 0 of `updown`: takes vcpu 2 down and up again, working and
/// napping in between, then waits for vcpu 2 to finish a few more
/// stretches.
fn down_and_up() {
    let note_wrong = |which: u32, answer: Result<u64, sluice_guest::Errno>, right: u64| {
        if answer != Ok(right) {
            UPDOWN_WRONG.fetch_add(1, Ordering::SeqCst);
            UPDOWN_WHAT.fetch_or(1 << which, Ordering::SeqCst);
            UPDOWN_LAST.store(
                match answer {
                    Ok(value) => value,
                    Err(errno) => 1000 + errno.0.unsigned_abs(),
                },
                Ordering::SeqCst,
            );
        }
    };
    for cycle in 0..UPDOWN_CYCLES {
        if out_of_time() {
            break;
        }
        note_wrong(0, vcpu::down(2).map(|()| 0), 0);
        note_wrong(1, vcpu::is_up(2).map(u64::from), 0);
        // From at once to well after vcpu 2 has noticed the down (the kick
        // takes some microseconds to reach it), so that some ups land while
        // it is on its way out.
        let delay_us = [0, 2, 5, 10, 20, 40, 80, 160, 320];
        spin_for(
            delay_us
                .get(cycle as usize % delay_us.len())
                .map_or(0, |us| us * 1000),
        );
        note_wrong(2, vcpu::up(2).map(|()| 0), 0);
        note_wrong(3, vcpu::is_up(2).map(u64::from), 1);
        spin_for(500_000);
        nap(0, 200_000);
    }
    let before = STRETCHES.load(Ordering::SeqCst);
    while STRETCHES.load(Ordering::SeqCst) < before + 5 && !out_of_time() {
        core::hint::spin_loop();
    }
    STOP.store(true, Ordering::SeqCst);
}

/// Vcpu 1 of `updown`: works and naps until vcpu 0 is done, mostly
/// working, so that vcpu 2 brought up on its pCPU waits there until vcpu
/// 0's nap leaves the other pCPU idle to take it.
fn work_and_nap() {
    while !STOP.load(Ordering::SeqCst) && !out_of_time() {
        spin_for(2_000_000);
        nap(1, 500_000);
    }
}

/// What a vcpu runs, by part and vcpu id.
fn run_part(vcpu: u32) {
    match (PART.load(Ordering::SeqCst), vcpu) {
        (1, 1) => {
            if let Some(result) = slot(&WORK, vcpu) {
                result.store(work(WORK_UNITS), Ordering::SeqCst);
            }
        }
        (1 | 2, _) => rendezvous(vcpu, u64::from(vcpu != 0), rounds_of(vcpu)),
        (3, _) => timers(vcpu),
        (4, 0) => down_and_up(),
        (4, 1) => work_and_nap(),
        (4, 2) => keep_pattern(),
        _ => {}
    }
    if let Some(done) = slot(&DONE, vcpu) {
        done.store(true, Ordering::SeqCst);
    }
}

fn rounds_of(_vcpu: u32) -> u32 {
    if PART.load(Ordering::SeqCst) == 1 {
        SPREAD_ROUNDS
    } else {
        PINNED_ROUNDS
    }
}

/// A secondary vcpu's entry: events on, its part, then the runtime parks
/// it in SCHEDOP_block.
fn secondary(vcpu: u32) {
    upcall::unmask_vcpu();
    run_part(vcpu);
}

fn main(start_info: &'static StartInfo) {
    let part = match start_info.arg_value("part") {
        Some("spread") => Part::Spread,
        Some("pinned") => Part::Pinned,
        Some("timers") => Part::Timers,
        Some("updown") => Part::UpDown,
        other => {
            check!(
                false,
                "part= names spread, pinned, timers or updown (got {other:?})"
            );
            return;
        }
    };
    let vcpus = (0..MAX_VCPUS as u32)
        .take_while(|&vcpu| vcpu::exists(vcpu))
        .count() as u32;
    let needed = if matches!(part, Part::Spread | Part::UpDown) {
        3
    } else {
        2
    };
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
    let stopped = (0..vcpus).all(|vcpu| vcpu::stop_periodic_timer(vcpu).is_ok());
    check!(stopped, "every vcpu's periodic timer stops");
    if matches!(part, Part::Timers | Part::UpDown) {
        let bound = (0..vcpus).all(|vcpu| match evtchn::bind_virq(virq::TIMER, vcpu) {
            Ok(port) => {
                if let Some(slot) = slot(&TIMER_PORT, vcpu) {
                    slot.store(port, Ordering::SeqCst);
                }
                upcall::set_handler(port, tick);
                true
            }
            Err(_) => false,
        });
        check!(bound, "VIRQ_TIMER binds on each of the {vcpus} vcpus");
    }
    upcall::unmask_vcpu();
    PART.store(
        match part {
            Part::Spread => 1,
            Part::Pinned => 2,
            Part::Timers => 3,
            Part::UpDown => 4,
        },
        Ordering::SeqCst,
    );
    STARTED_NS.store(now(), Ordering::SeqCst);
    let started = (1..vcpus).all(|vcpu| smp::start(vcpu, secondary).is_ok());
    check!(
        started,
        "VCPUOP_initialise + VCPUOP_up start vcpus 1 to {}",
        vcpus - 1
    );
    if !started {
        return;
    }
    run_part(0);
    // Wait for the others (they give up at the part's limit).
    while !(0..vcpus).all(|vcpu| slot(&DONE, vcpu).is_some_and(|done| done.load(Ordering::SeqCst)))
    {
        if out_of_time()
            && now() > STARTED_NS.load(Ordering::SeqCst) + PART_LIMIT_NS + 1_000_000_000
        {
            break;
        }
        core::hint::spin_loop();
    }
    let elapsed_ms = (now() - STARTED_NS.load(Ordering::SeqCst)) / 1_000_000;
    check!(
        !ABORT.load(Ordering::SeqCst),
        "the part ends within its time limit ({elapsed_ms} ms)"
    );
    match part {
        Part::Spread => report_spread(),
        Part::Pinned => report_pinned(),
        Part::Timers => report_timers(vcpus),
        Part::UpDown => report_updown(),
    }
    upcall::mask_vcpu();
    check_eq!(upcall::failsafes(), 0, "no failsafe callback ran");
}

/// Checks what [`check_own_clock`] saw on `vcpu`.
fn report_clock(vcpu: u32) {
    let reads = noted(&CLOCK_READS, vcpu);
    check!(
        reads > 0 && noted(&CLOCK_WRONG, vcpu) == 0,
        "vcpu {vcpu}'s own time record tells vcpu 0's clock and never goes back ({reads} reads, {} wrong)",
        noted(&CLOCK_WRONG, vcpu)
    );
}

fn report_trips(vcpu: u32) -> (u32, u32) {
    let (rounds, fast) = (noted(&ROUNDS, vcpu), noted(&FAST, vcpu));
    let shortest = slot(&SHORTEST_NS, vcpu).map_or(u64::MAX, |s| s.load(Ordering::SeqCst));
    println!(
        "# vcpu {vcpu}: {rounds} round trips, {fast} under {} ms, shortest {} us",
        FAST_NS / 1_000_000,
        shortest / 1000
    );
    (rounds, fast)
}

fn report_spread() {
    check!(
        slot(&WORK, 1).is_some_and(|result| result.load(Ordering::SeqCst) != 0),
        "vcpu 1 finishes its {WORK_UNITS} units of work"
    );
    for vcpu in [0, 2] {
        report_clock(vcpu);
        let (rounds, fast) = report_trips(vcpu);
        check!(
            rounds >= SPREAD_ROUNDS,
            "vcpu {vcpu} makes at least {SPREAD_ROUNDS} hand-offs (got {rounds})"
        );
        check!(
            fast >= MIN_FAST,
            "vcpu {vcpu} sees at least {MIN_FAST} round trips under {} ms within {} s: vcpus 0 and 2, placed on one pCPU, ran at once on two (got {fast})",
            FAST_NS / 1_000_000,
            SPREAD_LIMIT_NS / 1_000_000_000
        );
    }
}

fn report_pinned() {
    for vcpu in [0, 1] {
        report_clock(vcpu);
        let (rounds, fast) = report_trips(vcpu);
        check_eq!(
            rounds,
            PINNED_ROUNDS,
            "pinned vcpu {vcpu} finishes its {PINNED_ROUNDS} hand-offs"
        );
        check_eq!(
            fast,
            0,
            "pinned vcpu {vcpu} never sees a round trip under {} ms: vcpus pinned to one pCPU never run at once",
            FAST_NS / 1_000_000
        );
    }
}

fn report_updown() {
    check_eq!(
        UPDOWN_WRONG.load(Ordering::SeqCst),
        0,
        "vcpu 0's {UPDOWN_CYCLES} VCPUOP_down and VCPUOP_up of vcpu 2 succeed and VCPUOP_is_up follows them (wrong: {:#x}, last {})",
        UPDOWN_WHAT.load(Ordering::SeqCst),
        UPDOWN_LAST.load(Ordering::SeqCst)
    );
    let stretches = STRETCHES.load(Ordering::SeqCst);
    check_eq!(
        PATTERN_WRONG.load(Ordering::SeqCst),
        0,
        "vcpu 2's stack keeps its pattern across downs, ups and moves ({stretches} stretches)"
    );
    check!(
        !ABORT.load(Ordering::SeqCst) && STOP.load(Ordering::SeqCst),
        "vcpu 2 runs on after its last VCPUOP_up"
    );
}

fn report_timers(vcpus: u32) {
    for vcpu in 0..vcpus {
        println!(
            "# vcpu {vcpu}: {} VIRQ_TIMER ticks for {TIMER_ROUNDS} singleshot timers",
            ticks(vcpu)
        );
        report_clock(vcpu);
        check_eq!(
            noted(&TIMER_COUNT_WRONG, vcpu),
            0,
            "each of vcpu {vcpu}'s {TIMER_ROUNDS} singleshot timers raises VIRQ_TIMER exactly once (none lost)"
        );
        check_eq!(
            noted(&TIMER_EARLY, vcpu),
            0,
            "no singleshot timer of vcpu {vcpu} fires before its deadline"
        );
        check_eq!(
            noted(&TIMER_WRONG_VCPU, vcpu),
            0,
            "vcpu {vcpu} handles only its own VIRQ_TIMER port"
        );
    }
}
