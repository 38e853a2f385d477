//! Two domains, one interdomain channel, N strict round trips (spec §2.3,
//! §2.5, §3.3–§3.5).
//!
//! End a allocates port 1 for its peer; end b binds to it and serves
//! first. Each end sends only after it received, so at most one event is in
//! flight and each end must count exactly N arrivals. How an end waits is
//! the variable: spinning with upcalls on (the kick IPI reaches a running
//! vcpu on another pCPU), SCHEDOP_block, or SCHEDOP_poll on the masked port.

use core::sync::atomic::{AtomicU32, Ordering};

use sluice_guest::evtchn::{self, DOMID_SELF, DomId, Port, stat};
use sluice_guest::{StartInfo, check, check_eq, println, shared_info, upcall};

use crate::common::{self, STEP_LIMIT_NS, Wait};

/// Which end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Allocates the port and answers.
    A,
    /// Binds to it and serves first.
    B,
}

impl Role {
    /// The role the command line's `role=a|b` names; a failed check if
    /// it names none.
    pub fn from_arg(start_info: &StartInfo) -> Option<Role> {
        match start_info.arg_value("role") {
            Some("a") => Some(Role::A),
            Some("b") => Some(Role::B),
            _ => {
                check!(false, "the command line says role=a or role=b");
                None
            }
        }
    }
}

/// Events the upcall handler saw on the channel port.
static RECEIVED: AtomicU32 = AtomicU32::new(0);

fn count_event(_port: u32) {
    RECEIVED.fetch_add(1, Ordering::SeqCst);
}

pub fn main(start_info: &'static StartInfo) {
    let Some(role) = Role::from_arg(start_info) else {
        return;
    };
    let (Some(peer), Some(wait)) = (common::peer(start_info), Wait::from_arg(start_info)) else {
        check!(
            false,
            "the command line names peer=<domid> and wait=spin|block|poll"
        );
        return;
    };
    let rounds = common::arg_u32(start_info, "rounds", 1000);
    println!("# pingpong: end {role:?}, peer d{peer}, {rounds} rounds, waiting by {wait:?}");
    let Some(port) = connect(role, peer) else {
        return;
    };
    play(role, port, wait, rounds, "");
    disconnect(role, port, peer);
}

/// Sets up the channel: a allocates port 1, b binds to it. `None` after a
/// failed check.
pub fn connect(role: Role, peer: DomId) -> Option<Port> {
    match role {
        Role::A => {
            let port = evtchn::alloc_unbound(DOMID_SELF, peer);
            check_eq!(
                port,
                Ok(1),
                "end a: alloc_unbound for d{peer} gets port 1 in a fresh table"
            );
            let port = port.ok()?;
            let bound = common::wait_bound(port);
            check_eq!(
                bound.map(|s| (s.0, s.1)),
                Ok((stat::INTERDOMAIN, peer)),
                "end a: the peer binds; status reads interdomain with d{peer}"
            );
            Some(port)
        }
        Role::B => {
            let port = common::bind_when_offered(peer, 1);
            check!(
                port.is_ok(),
                "end b: bind_interdomain to d{peer} port 1 succeeds ({port:?})"
            );
            let port = port.ok()?;
            check_eq!(
                common::peer_of(port).map(|s| (s.0, s.1, s.2)),
                Ok((stat::INTERDOMAIN, peer, 1)),
                "end b: status of the bound port names d{peer} port 1"
            );
            // bind_interdomain sets the new local port pending (spec §2.3
            // step 8); a only answers, so nothing else can be pending yet.
            let shared = shared_info::get()?;
            check!(
                shared.is_pending(port),
                "end b: the bound port is pending right after bind_interdomain"
            );
            shared.clear_pending(port);
            Some(port)
        }
    }
}

/// Plays `rounds` round trips on `port`; b serves first. Returns whether
/// every round completed and the counts were exact. `label` prefixes the
/// TAP lines (for scenarios that play more than one game).
pub fn play(role: Role, port: Port, wait: Wait, rounds: u32, label: &str) -> bool {
    let Some(shared) = shared_info::get() else {
        return check!(false, "shared_info is mapped");
    };
    let limit_of_step = || common::after(STEP_LIMIT_NS);
    let before = RECEIVED.load(Ordering::SeqCst);
    let mut timer_port = None;
    match wait {
        Wait::Poll => shared.mask(port),
        Wait::Spin | Wait::Block => {
            if wait == Wait::Block {
                match common::prepare_blocking() {
                    Ok(timer) => timer_port = Some(timer),
                    Err(errno) => {
                        return check!(
                            false,
                            "{label}the vcpu can block with a watchdog timer ({errno:?})"
                        );
                    }
                }
            }
            upcall::set_handler(port, count_event);
            shared.clear_mask(port);
        }
    }
    let mut received = 0u32;
    let mut sent = 0u32;
    let mut send_failures = 0u32;
    let receive = |received: u32| -> bool {
        match wait {
            Wait::Poll => common::poll_receive(port, limit_of_step()),
            Wait::Block => common::block_until(
                &|| RECEIVED.load(Ordering::SeqCst) - before > received,
                limit_of_step(),
            ),
            Wait::Spin => common::spin_until(
                &|| RECEIVED.load(Ordering::SeqCst) - before > received,
                limit_of_step(),
            ),
        }
    };
    for _ in 0..rounds {
        if role == Role::B {
            if evtchn::send(port).is_err() {
                send_failures += 1;
            }
            sent += 1;
        }
        if !receive(received) {
            break;
        }
        received += 1;
        if role == Role::A {
            if evtchn::send(port).is_err() {
                send_failures += 1;
            }
            sent += 1;
        }
    }
    // b's last arrival is a's last answer; a waits a little so that an
    // extra event, had one been sent or duplicated, would show.
    common::pause(20_000_000);
    upcall::mask_vcpu();
    let late = match wait {
        Wait::Poll => u32::from(shared.is_pending(port)),
        Wait::Spin | Wait::Block => RECEIVED.load(Ordering::SeqCst) - before - received,
    };
    shared.mask(port);
    upcall::clear_handler(port);
    if let Some(timer) = timer_port {
        let _ = sluice_guest::vcpu::stop_singleshot_timer(sluice_guest::smp::current_vcpu());
        let _ = evtchn::close(timer);
    }
    check_eq!(
        (sent, send_failures),
        (rounds, 0),
        "{label}end {role:?} sent exactly {rounds} events, every send rc 0"
    ) & check_eq!(
        (received, late),
        (rounds, 0),
        "{label}end {role:?} received exactly {rounds} events and nothing after the last"
    )
}

/// b closes; a sees its port turn unbound awaiting b and closes it too.
pub fn disconnect(role: Role, port: Port, peer: DomId) {
    match role {
        Role::A => {
            let limit = common::after(STEP_LIMIT_NS);
            while common::peer_of(port).map(|s| s.0) == Ok(stat::INTERDOMAIN)
                && common::now() < limit
            {
                let _ = sluice_guest::sched::yield_now();
            }
            check_eq!(
                common::peer_of(port).map(|s| (s.0, s.1)),
                Ok((stat::UNBOUND, peer)),
                "end a: after b closes, the port is unbound awaiting d{peer}"
            );
            check_eq!(
                evtchn::close(port),
                Ok(()),
                "end a: close of the unbound port is rc 0"
            );
        }
        Role::B => {
            check_eq!(
                evtchn::close(port),
                Ok(()),
                "end b: close of the interdomain port is rc 0"
            );
        }
    }
    common::check_all_closed(if role == Role::A { "end a" } else { "end b" });
}
