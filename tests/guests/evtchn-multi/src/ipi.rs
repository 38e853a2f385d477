//! Two vcpus of one domain on two pCPUs: IPI round trips and a VIRQ_TIMER
//! on each vcpu (spec §2.7, §2.8, §5; §9.4 "IPI to the other vcpu").
//!
//! vcpu 0 binds an IPI port for each vcpu; vcpu 0 sends on vcpu 1's port
//! and waits in SCHEDOP_block for the answer on its own, N times. Then each
//! vcpu arms its singleshot timer K times and waits for each tick. Every
//! handler records the vcpu it ran on: an event must reach only the vcpu
//! its port notifies.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use sluice_guest::evtchn::{self, virq};
use sluice_guest::{StartInfo, check, check_eq, println, smp, upcall, vcpu};

use crate::common::{self, STEP_LIMIT_NS};

/// IPI port of each vcpu.
static IPI_PORT: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
/// VIRQ_TIMER port of each vcpu.
static TIMER_PORT: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
/// IPI events handled, by the vcpu the port notifies.
static IPIS: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
/// VIRQ_TIMER events handled, by the vcpu the port notifies.
static TICKS: [AtomicU32; 2] = [const { AtomicU32::new(0) }; 2];
/// Events handled on a vcpu other than the one their port notifies.
static WRONG_VCPU: AtomicU32 = AtomicU32::new(0);
/// Round trips and ticks to play (set by vcpu 0 before vcpu 1 starts).
static ROUNDS: AtomicU32 = AtomicU32::new(0);
static TICKS_WANTED: AtomicU32 = AtomicU32::new(0);
/// What vcpu 1 saw.
static V1_READY: AtomicBool = AtomicBool::new(false);
static V1_DONE: AtomicBool = AtomicBool::new(false);
static V1_ROUNDS: AtomicU32 = AtomicU32::new(0);
static V1_TICKS: AtomicU32 = AtomicU32::new(0);
static V1_SETUP_ERRORS: AtomicU32 = AtomicU32::new(0);

/// Where an out-of-range index lands (none does: indexes are vcpu 0 or 1).
static NOWHERE: AtomicU32 = AtomicU32::new(0);

/// Element `index` of a per-vcpu array.
fn at(array: &'static [AtomicU32; 2], index: usize) -> &'static AtomicU32 {
    array.get(index).unwrap_or(&NOWHERE)
}

fn owner_of(ports: &[AtomicU32; 2], port: u32) -> Option<usize> {
    ports.iter().position(|p| p.load(Ordering::SeqCst) == port)
}

fn on_ipi(port: u32) {
    if let Some(owner) = owner_of(&IPI_PORT, port) {
        if owner as u32 != smp::current_vcpu() {
            WRONG_VCPU.fetch_add(1, Ordering::SeqCst);
        }
        at(&IPIS, owner).fetch_add(1, Ordering::SeqCst);
    }
}

fn on_tick(port: u32) {
    if let Some(owner) = owner_of(&TIMER_PORT, port) {
        if owner as u32 != smp::current_vcpu() {
            WRONG_VCPU.fetch_add(1, Ordering::SeqCst);
        }
        at(&TICKS, owner).fetch_add(1, Ordering::SeqCst);
    }
}

/// Binds this vcpu's timer for blocking waits; records its port.
fn setup_timer(me: usize) -> bool {
    match common::prepare_blocking() {
        Ok(port) => {
            at(&TIMER_PORT, me).store(port, Ordering::SeqCst);
            upcall::set_handler(port, on_tick);
            true
        }
        Err(_) => false,
    }
}

/// K singleshot ticks on the calling vcpu, each awaited; returns how many
/// arrived in all, counted 30 ms after the last (so an extra one shows).
fn take_ticks(me: usize, wanted: u32) -> u32 {
    let _ = vcpu::stop_singleshot_timer(me as u32);
    common::pause(2_000_000);
    let before = at(&TICKS, me).load(Ordering::SeqCst);
    for k in 0..wanted {
        let _ = vcpu::set_singleshot_timer(me as u32, common::after(1_000_000));
        if !common::block_until_unguarded(
            &|| at(&TICKS, me).load(Ordering::SeqCst) - before > k,
            common::after(STEP_LIMIT_NS),
        ) {
            break;
        }
    }
    common::pause(30_000_000);
    at(&TICKS, me).load(Ordering::SeqCst) - before
}

fn vcpu1(_vcpu: u32) {
    if !setup_timer(1) {
        V1_SETUP_ERRORS.fetch_add(1, Ordering::SeqCst);
    }
    V1_READY.store(true, Ordering::SeqCst);
    let rounds = ROUNDS.load(Ordering::SeqCst);
    let mut played = 0;
    for round in 0..rounds {
        if !common::block_until(
            &|| IPIS[1].load(Ordering::SeqCst) > round,
            common::after(STEP_LIMIT_NS),
        ) {
            break;
        }
        if evtchn::send(IPI_PORT[0].load(Ordering::SeqCst)).is_err() {
            break;
        }
        played += 1;
    }
    V1_ROUNDS.store(played, Ordering::SeqCst);
    V1_TICKS.store(
        take_ticks(1, TICKS_WANTED.load(Ordering::SeqCst)),
        Ordering::SeqCst,
    );
    V1_DONE.store(true, Ordering::SeqCst);
}

pub fn main(start_info: &'static StartInfo) {
    let rounds = common::arg_u32(start_info, "rounds", 1000);
    let ticks = common::arg_u32(start_info, "ticks", 20);
    ROUNDS.store(rounds, Ordering::SeqCst);
    TICKS_WANTED.store(ticks, Ordering::SeqCst);
    println!("# ipi: {rounds} round trips between vcpus 0 and 1, then {ticks} timer ticks each");
    if !check!(vcpu::exists(1), "the domain has vcpu 1") {
        return;
    }
    let ports = (evtchn::bind_ipi(0), evtchn::bind_ipi(1));
    check_eq!(
        ports,
        (Ok(1), Ok(2)),
        "bind_ipi for vcpu 0 and vcpu 1 get ports 1 and 2 (lowest free)"
    );
    let (Ok(p0), Ok(p1)) = ports else {
        return;
    };
    IPI_PORT[0].store(p0, Ordering::SeqCst);
    IPI_PORT[1].store(p1, Ordering::SeqCst);
    upcall::set_handler(p0, on_ipi);
    upcall::set_handler(p1, on_ipi);
    check!(
        setup_timer(0),
        "vcpu 0 binds VIRQ_TIMER after stopping its periodic timer"
    );
    // The watchdog every blocking wait relies on: with nothing else to
    // wake it, a block ends at its singleshot timer (so a lost wake-up in
    // the other tests shows as a failed wait, not a hang).
    let started = common::now();
    let is_done = common::block_until(&|| false, common::after(50_000_000));
    let waited_ms = common::now().saturating_sub(started) / 1_000_000;
    check!(
        !is_done && (50..5000).contains(&waited_ms),
        "a block with nothing to wait for ends at its watchdog timer ({waited_ms} ms for 50 ms)"
    );
    check_eq!(smp::start(1, vcpu1), Ok(()), "vcpu 1 starts");
    check!(
        common::spin_until(
            &|| V1_READY.load(Ordering::SeqCst),
            common::after(STEP_LIMIT_NS)
        ),
        "vcpu 1 runs and binds its own VIRQ_TIMER"
    );
    check_eq!(
        V1_SETUP_ERRORS.load(Ordering::SeqCst),
        0,
        "vcpu 1 stopped its periodic timer and bound VIRQ_TIMER"
    );
    check_eq!(
        (
            evtchn::status(evtchn::DOMID_SELF, TIMER_PORT[0].load(Ordering::SeqCst)).map(|s| (
                s.status,
                s.vcpu,
                s.virq()
            )),
            evtchn::status(evtchn::DOMID_SELF, TIMER_PORT[1].load(Ordering::SeqCst)).map(|s| (
                s.status,
                s.vcpu,
                s.virq()
            ))
        ),
        (
            Ok((evtchn::stat::VIRQ, 0, virq::TIMER)),
            Ok((evtchn::stat::VIRQ, 1, virq::TIMER))
        ),
        "each vcpu has its own VIRQ_TIMER port notifying it"
    );
    let mut played = 0;
    for round in 0..rounds {
        if evtchn::send(p1).is_err() {
            break;
        }
        if !common::block_until(
            &|| IPIS[0].load(Ordering::SeqCst) > round,
            common::after(STEP_LIMIT_NS),
        ) {
            break;
        }
        played += 1;
    }
    let my_ticks = take_ticks(0, ticks);
    check!(
        common::spin_until(
            &|| V1_DONE.load(Ordering::SeqCst),
            common::after(STEP_LIMIT_NS)
        ),
        "vcpu 1 finishes its rounds and ticks"
    );
    upcall::mask_vcpu();
    check_eq!(
        (played, V1_ROUNDS.load(Ordering::SeqCst)),
        (rounds, rounds),
        "both vcpus complete {rounds} IPI round trips"
    );
    check_eq!(
        (
            IPIS[0].load(Ordering::SeqCst),
            IPIS[1].load(Ordering::SeqCst)
        ),
        (rounds, rounds),
        "each vcpu's IPI port delivered exactly {rounds} events"
    );
    check_eq!(
        (my_ticks, V1_TICKS.load(Ordering::SeqCst)),
        (ticks, ticks),
        "each vcpu took exactly {ticks} VIRQ_TIMER ticks from its singleshot timer"
    );
    check_eq!(
        WRONG_VCPU.load(Ordering::SeqCst),
        0,
        "every event ran on the vcpu its port notifies"
    );
    check!(
        upcall::upcalls_on(1) >= u64::from(rounds),
        "vcpu 1 took its upcalls itself ({} upcalls)",
        upcall::upcalls_on(1)
    );
}
