//! `evtchn-pair`: one interdomain channel between two ends (spec §2.2–§2.6,
//! §2.14; §9.4 "send over an interdomain port → only the peer sees it",
//! "close → peer unbound"; §10 trap 7).
//!
//! Command line: `role=a peer=<domid>` or `role=b peer=<domid>` for the two
//! domains of a Sluice scenario; `role=both` runs end a on vcpu 0 and end b
//! on vcpu 1 of one domain, its own peer (how the Xen oracle checks it).
//!
//! End a allocates port 1 for its peer, checks it is unbound, then
//! allocates port 2 for the peer as b's go; end b binds port 2 (retrying
//! until a has allocated it), closes it and binds port 1, then they play
//! ping-pong over masked ports with SCHEDOP_poll, no upcalls. b closes; a sees its port unbound,
//! awaiting b's domid. Between two unprivileged domains each also checks
//! the privilege rules for the other's ports.
#![no_std]
#![no_main]

mod end;

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use end::{Outcome, Role};
use sluice_guest::evtchn::{self, DOMID_SELF, DomId};
use sluice_guest::start_info::SIF_PRIVILEGED;
use sluice_guest::{StartInfo, check, check_eq, println, smp, tap, time, vcpu};

sluice_guest::entry!(main);

/// The peer domain of `role=both` runs on vcpu 1; its results land here.
static B_DONE: AtomicBool = AtomicBool::new(false);
static B_ROUNDS: AtomicU32 = AtomicU32::new(0);
static B_FAILED: AtomicU32 = AtomicU32::new(0);
/// The domid end b runs with in `role=both` (this domain's own).
static SELF_DOMID: AtomicU32 = AtomicU32::new(0);

/// This domain's real domid: what alloc_unbound records for DOMID_SELF.
fn own_domid() -> Option<DomId> {
    let port = evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF).ok()?;
    let domid = evtchn::status(DOMID_SELF, port)
        .ok()
        .map(|s| s.remote_dom());
    let _ = evtchn::close(port);
    domid
}

fn vcpu1_runs_b(_vcpu: u32) {
    let peer = SELF_DOMID.load(Ordering::SeqCst) as DomId;
    let outcome = end::run(Role::B, peer, end::Report::Silent);
    B_ROUNDS.store(outcome.rounds, Ordering::SeqCst);
    B_FAILED.store(outcome.failures, Ordering::SeqCst);
    B_DONE.store(true, Ordering::SeqCst);
}

fn main(start_info: &'static StartInfo) {
    let role = start_info.arg_value("role").unwrap_or("both");
    let privileged = start_info.flags & SIF_PRIVILEGED != 0;
    match role {
        "a" | "b" => {
            let Some(peer) = start_info
                .arg_value("peer")
                .and_then(|p| p.parse::<DomId>().ok())
            else {
                check!(
                    false,
                    "the command line names the peer domain (peer=<domid>)"
                );
                return;
            };
            let role = if role == "a" { Role::A } else { Role::B };
            println!("# evtchn-pair: end {role:?}, peer domain {peer}");
            let outcome: Outcome = end::run(role, peer, end::Report::Tap);
            check_eq!(
                outcome.failures,
                0,
                "end {role:?} saw every step as the spec says"
            );
            if !privileged {
                end::foreign_privilege(peer);
            }
        }
        _ => both(),
    }
}

/// Both ends in one domain, a on vcpu 0 and b on vcpu 1.
fn both() {
    if !vcpu::exists(1) {
        tap::skip(
            format_args!("both ends of a channel in one domain"),
            "the domain has no vcpu 1",
        );
        return;
    }
    let Some(domid) = own_domid() else {
        check!(false, "this domain learns its own domid");
        return;
    };
    SELF_DOMID.store(u32::from(domid), Ordering::SeqCst);
    check!(
        time::now_ns().is_some(),
        "vcpu 0's time record is published"
    );
    check_eq!(
        smp::start(1, vcpu1_runs_b),
        Ok(()),
        "vcpu 1 starts to run end b"
    );
    let outcome = end::run(Role::A, domid, end::Report::Tap);
    check_eq!(outcome.failures, 0, "end a saw every step as the spec says");
    let limit = time::now_ns().map_or(0, |now| now + 5_000_000_000);
    while !B_DONE.load(Ordering::SeqCst) && time::now_ns().is_some_and(|now| now < limit) {
        core::hint::spin_loop();
    }
    check!(B_DONE.load(Ordering::SeqCst), "end b on vcpu 1 finished");
    check_eq!(
        (
            B_ROUNDS.load(Ordering::SeqCst),
            B_FAILED.load(Ordering::SeqCst)
        ),
        (end::ROUNDS, 0),
        "end b completed every round and saw every step as the spec says"
    );
}
