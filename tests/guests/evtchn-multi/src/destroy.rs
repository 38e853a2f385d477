//! A domain destroyed in the middle of a conversation (spec §2.14, §2.16).
//!
//! The survivor (d1) allocates port 1 for the victim (d2) and answers its
//! pings. After some rounds the victim sends one more ping and crashes
//! itself, which destroys it: the survivor's port must read unbound naming
//! the dead domain, sends on it return 0, binding to the dead domain fails
//! -ESRCH, and the survivor binds again, to a third domain (d3) that has
//! been waiting with a port allocated for it. At the end the survivor
//! closes everything; the hypervisor reports its open channel count when it
//! stops.

use sluice_guest::errno::Errno;
use sluice_guest::evtchn::{self, DOMID_SELF, DomId, Port, stat};
use sluice_guest::{StartInfo, check, check_eq, println, shared_info, tap};

use crate::common::{self, Wait};
use crate::pingpong::{self, Role};

/// The three parts.
const SURVIVOR: DomId = 1;
const VICTIM: DomId = 2;
const LATE: DomId = 3;

pub fn main(start_info: &'static StartInfo) {
    let rounds = common::arg_u32(start_info, "rounds", 20);
    match start_info.arg_value("role") {
        Some("survivor") => survivor(rounds),
        Some("victim") => victim(rounds),
        Some("late") => late(rounds),
        _ => {
            check!(false, "the command line says role=survivor, victim or late");
        }
    }
}

/// Answers pings on the masked `port` until none comes for a while; returns
/// how many it answered.
fn answer_until_silent(port: Port) -> u32 {
    let mut answered = 0;
    loop {
        let limit = common::after(200_000_000);
        if !common::poll_receive(port, limit) {
            // Silent for 200 ms: is the peer still there?
            if common::peer_of(port).map(|s| s.0) == Ok(stat::INTERDOMAIN) {
                continue;
            }
            return answered;
        }
        let _ = evtchn::send(port);
        answered += 1;
    }
}

fn survivor(rounds: u32) {
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return;
    };
    println!("# destroy: survivor d{SURVIVOR}, victim d{VICTIM}, late peer d{LATE}");
    let Some(port) = pingpong::connect(Role::A, VICTIM) else {
        return;
    };
    shared.mask(port);
    let answered = answer_until_silent(port);
    check_eq!(
        answered,
        rounds + 1,
        "the survivor answered every ping the victim sent before crashing ({} rounds and the last ping)",
        rounds
    );
    check_eq!(
        common::peer_of(port).map(|s| (s.0, s.1)),
        Ok((stat::UNBOUND, VICTIM)),
        "after the victim is destroyed, the survivor's port reads unbound naming the dead domain"
    );
    check_eq!(
        evtchn::send(port),
        Ok(()),
        "a send on the orphaned port returns 0 (dropped)"
    );
    check_eq!(
        evtchn::bind_interdomain(VICTIM, 1),
        Err(Errno::ESRCH),
        "bind_interdomain to the destroyed domain fails -ESRCH"
    );
    // The late domain offered its port 1 to us from the start.
    let new_port = common::bind_when_offered(LATE, 1);
    check_eq!(
        new_port,
        Ok(2),
        "the survivor binds to d{LATE}'s port 1 and gets port 2 (port 1 still unbound)"
    );
    let Ok(new_port) = new_port else {
        return;
    };
    shared.clear_pending(new_port);
    pingpong::play(Role::B, new_port, Wait::Poll, rounds, "with d3: ");
    check_eq!(
        evtchn::close(new_port),
        Ok(()),
        "the survivor closes its channel to d{LATE}"
    );
    check_eq!(
        evtchn::close(port),
        Ok(()),
        "the survivor closes the orphaned port"
    );
    common::check_all_closed("survivor");
}

fn victim(rounds: u32) {
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return;
    };
    let Some(port) = pingpong::connect(Role::B, SURVIVOR) else {
        return;
    };
    shared.mask(port);
    let mut answered = 0;
    for _ in 0..rounds {
        let _ = evtchn::send(port);
        if !common::poll_receive(port, common::after(common::STEP_LIMIT_NS)) {
            break;
        }
        answered += 1;
    }
    check_eq!(answered, rounds, "the victim's {rounds} pings are answered");
    let _ = evtchn::send(port);
    println!("# victim: one more ping sent; crashing on purpose in the middle of the conversation");
    tap::shutdown_failed()
}

fn late(rounds: u32) {
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return;
    };
    let port = evtchn::alloc_unbound(DOMID_SELF, SURVIVOR);
    check_eq!(
        port,
        Ok(1),
        "the late domain allocates port 1 for d{SURVIVOR}"
    );
    let Ok(port) = port else {
        return;
    };
    shared.mask(port);
    // The survivor binds only after the victim is gone: wait long.
    let limit = common::after(40_000_000_000);
    let mut bound = common::peer_of(port);
    while bound.map(|s| s.0) != Ok(stat::INTERDOMAIN) && common::now() < limit {
        let _ = sluice_guest::sched::poll(&[port], common::after(50_000_000));
        bound = common::peer_of(port);
    }
    check_eq!(
        bound.map(|s| (s.0, s.1)),
        Ok((stat::INTERDOMAIN, SURVIVOR)),
        "the survivor binds to the late domain's waiting port"
    );
    pingpong::play(Role::A, port, Wait::Poll, rounds, "with d1: ");
    pingpong::disconnect(Role::A, port, SURVIVOR);
}
