//! One end of the channel. Both ends mask their port and wait for it with
//! SCHEDOP_poll, which returns when a masked port becomes pending (spec
//! §3.5, §7.10), so the exchange needs no upcalls and no timing.

use sluice_guest::errno::Errno;
use sluice_guest::evtchn::{self, DOMID_SELF, DomId, Port, stat};
use sluice_guest::{check, check_eq, sched, shared_info, smp, time};

/// Round trips played.
pub const ROUNDS: u32 = 50;
/// How long an end waits for any one step (ns).
const STEP_LIMIT_NS: u64 = 5_000_000_000;
/// End a's channel port (the first in a fresh table).
const CHANNEL_PORT: Port = 1;
/// End a's second unbound port, allocated for b once a has checked the
/// first one's status: b binds it (retrying until it exists) before it
/// binds the channel, so a sees its channel port unbound whatever the two
/// ends' pCPUs and the host's load. The ends share nothing else to
/// sequence on.
const GO_PORT: Port = 2;

/// Which end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Allocates the unbound port and answers.
    A,
    /// Binds to it and serves first.
    B,
}

/// Where an end's observations go.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// One TAP line per observation.
    Tap,
    /// Counted only (end b on vcpu 1 in `role=both`; vcpu 0 reports).
    Silent,
}

/// What an end saw.
pub struct Outcome {
    /// Round trips completed.
    pub rounds: u32,
    /// Observations that disagreed with the spec.
    pub failures: u32,
}

/// Records one observation.
struct Observer {
    report: Report,
    failures: u32,
}

impl Observer {
    fn eq<T: core::fmt::Debug + PartialEq>(&mut self, got: T, expected: T, what: &str) -> bool {
        let passed = match self.report {
            Report::Tap => check_eq!(got, expected, "{what}"),
            Report::Silent => got == expected,
        };
        if !passed {
            self.failures += 1;
        }
        passed
    }

    fn holds(&mut self, condition: bool, what: &str) -> bool {
        let passed = match self.report {
            Report::Tap => check!(condition, "{what}"),
            Report::Silent => condition,
        };
        if !passed {
            self.failures += 1;
        }
        passed
    }
}

fn deadline() -> u64 {
    time::now_ns().map_or(1, |now| now + STEP_LIMIT_NS)
}

/// Waits until `port` is pending (or the step limit), then clears it.
fn receive(port: Port) -> bool {
    let Some(shared) = shared_info::get() else {
        return false;
    };
    let limit = deadline();
    while !shared.is_pending(port) {
        let _ = sched::poll(&[port], limit);
        if time::now_ns().is_none_or(|now| now >= limit) {
            break;
        }
    }
    let arrived = shared.is_pending(port);
    shared.clear_pending(port);
    arrived
}

/// Retries `attempt` (yielding) until it succeeds or the step limit passes.
fn retry(mut attempt: impl FnMut() -> Result<Port, Errno>) -> Result<Port, Errno> {
    let limit = deadline();
    loop {
        let result = attempt();
        if result.is_ok() || time::now_ns().is_none_or(|now| now >= limit) {
            return result;
        }
        let _ = sched::yield_now();
    }
}

/// Plays one end against `peer`; returns what it saw.
pub fn run(role: Role, peer: DomId, report: Report) -> Outcome {
    let mut seen = Observer {
        report,
        failures: 0,
    };
    let Some(shared) = shared_info::get() else {
        seen.holds(false, "shared_info is mapped");
        return Outcome {
            rounds: 0,
            failures: seen.failures,
        };
    };
    let me = smp::current_vcpu();
    let port = match role {
        Role::A => evtchn::alloc_unbound(DOMID_SELF, peer),
        Role::B => {
            // a allocates the go port only after its checks of the
            // channel port: once it binds, b may bind the channel.
            let go = retry(|| evtchn::bind_interdomain(peer, GO_PORT));
            seen.holds(
                go.is_ok(),
                "end b: binds end a's go port once a has checked its channel port",
            );
            if let Ok(go) = go {
                seen.eq(
                    evtchn::close(go),
                    Ok(()),
                    "end b: close of its end of the go port is rc 0",
                );
            }
            evtchn::bind_interdomain(peer, CHANNEL_PORT)
        }
    };
    let Ok(port) = port else {
        seen.eq(port, Ok(0), "the end gets its port");
        return Outcome {
            rounds: 0,
            failures: seen.failures,
        };
    };
    shared.mask(port);
    // Events on this port go to the vcpu playing this end.
    seen.eq(
        evtchn::bind_vcpu(port, me),
        Ok(()),
        "bind_vcpu of the end's port to the vcpu playing it is rc 0",
    );
    if role == Role::A {
        seen.eq(
            port,
            CHANNEL_PORT,
            "end a: alloc_unbound for the peer gets port 1 in a fresh table",
        );
        seen.eq(
            evtchn::status(DOMID_SELF, port).map(|s| (s.status, s.remote_dom())),
            Ok((stat::UNBOUND, peer)),
            "end a: the port is unbound, reserved for the peer's domid",
        );
        // Only now may b bind: the go port tells it so.
        seen.eq(
            evtchn::alloc_unbound(DOMID_SELF, peer),
            Ok(GO_PORT),
            "end a: a second alloc_unbound for the peer (b's go) gets port 2",
        );
    } else {
        // bind_interdomain sets the new local port pending (spec §2.3 step 8).
        seen.holds(
            shared.is_pending(port),
            "end b: the bound port is pending right after bind_interdomain",
        );
        shared.clear_pending(port);
    }

    let mut rounds = 0;
    for round in 0..ROUNDS {
        let ok = match role {
            Role::B => evtchn::send(port).is_ok() && receive(port),
            Role::A => {
                let pinged = receive(port);
                if round == 0 {
                    // b now waits for this pong, so its end is still bound.
                    seen.eq(
                        evtchn::status(DOMID_SELF, port).map(|s| (s.status, s.remote_dom())),
                        Ok((stat::INTERDOMAIN, peer)),
                        "end a: once b has bound, the port is interdomain with the peer",
                    );
                }
                pinged && evtchn::send(port).is_ok()
            }
        };
        if !ok {
            break;
        }
        rounds += 1;
    }
    seen.eq(
        rounds,
        ROUNDS,
        "every ping is answered: each send reaches only the other end",
    );

    match role {
        Role::A => {
            // Wait for b to close: the port turns unbound awaiting b.
            let limit = deadline();
            let mut state = evtchn::status(DOMID_SELF, port).map(|s| s.status);
            while state == Ok(stat::INTERDOMAIN) && time::now_ns().is_some_and(|now| now < limit) {
                let _ = sched::yield_now();
                state = evtchn::status(DOMID_SELF, port).map(|s| s.status);
            }
            seen.eq(
                evtchn::status(DOMID_SELF, port).map(|s| (s.status, s.remote_dom())),
                Ok((stat::UNBOUND, peer)),
                "end a: after the peer closes, the port is unbound awaiting the peer",
            );
            shared.clear_mask(port);
            seen.eq(
                evtchn::close(port),
                Ok(()),
                "end a: close of the unbound port is rc 0",
            );
            // b closed its end of the go port before binding the channel.
            seen.eq(
                evtchn::status(DOMID_SELF, GO_PORT).map(|s| (s.status, s.remote_dom())),
                Ok((stat::UNBOUND, peer)),
                "end a: the go port b bound and closed is unbound awaiting the peer",
            );
            seen.eq(
                evtchn::close(GO_PORT),
                Ok(()),
                "end a: close of the go port is rc 0",
            );
        }
        Role::B => {
            // Let a see the last pong's effect before closing.
            let _ = sched::yield_now();
            shared.clear_mask(port);
            seen.eq(
                evtchn::close(port),
                Ok(()),
                "end b: close of the interdomain port is rc 0",
            );
        }
    }
    Outcome {
        rounds,
        failures: seen.failures,
    }
}

/// Between two domains, an unprivileged one sees the other's ports only
/// through its own channels (spec §2.2 step 3, §2.6 step 2, trap 7).
pub fn foreign_privilege(peer: DomId) {
    check_eq!(
        evtchn::status(peer, 3000).map(|_| ()),
        Err(Errno::EINVAL),
        "status of an invalid port in the peer domain fails -EINVAL (port checked before privilege)"
    );
    check_eq!(
        evtchn::status(peer, 0).map(|_| ()),
        Err(Errno::EPERM),
        "status of a valid port in the peer domain fails -EPERM for an unprivileged domain"
    );
    check_eq!(
        evtchn::alloc_unbound(peer, DOMID_SELF),
        Err(Errno::EPERM),
        "alloc_unbound in the peer domain fails -EPERM for an unprivileged domain"
    );
}
