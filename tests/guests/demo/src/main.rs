//! `demo`: what `./qemu-run.sh` boots (tests/demo.toml): a privileged
//! control domain and two guests exchanging events, each saying what it
//! does. One image, three roles chosen by `role=` on its command line:
//!
//! - `role=control` (dom0, `priv`): offers port 1 to d1 and port 2 to d2
//!   (EVTCHNOP_alloc_unbound), reads the guests' static channel with its
//!   privileged EVTCHNOP_status, waits until both guests report in over
//!   their ports, and prints the summary. With `interactive` it then stays,
//!   printing every VIRQ_DEBUG (a debug key pressed on the console).
//! - `role=ping` (d1): finds the static channel `static=P` (declared on the
//!   hypervisor's command line, `evtchn=1:P,2:P`) already bound, offers
//!   port 1 to d2, plays `rounds=N` ping-pong rounds over it, tells d2 over
//!   the static channel that it is done, and reports to d0.
//! - `role=pong` (d2): binds to d1's offered port, answers each ping,
//!   waits for d1's word on the static channel, and reports to d0.
//!
//! - `role=keys` (the debug-keys scenario): binds VIRQ_DEBUG, says so,
//!   waits for the VIRQ a debug key typed on the console raises, then stays
//!   up to 3 s for the VIRQs of the keys typed after it.
//!
//! Ports follow Xen's lowest-free allocation, so the numbers are known in
//! advance. Every wait is SCHEDOP_poll on a port with the vcpu's upcalls
//! masked (no callback), with a time limit so that a broken run ends. Each
//! step is also a TAP check, so the demo's scenario can judge it.
#![no_std]
#![no_main]

use sluice_guest::evtchn::{self, DOMID_SELF, EvtchnStatus, status as state};
use sluice_guest::shared_info::SharedInfo;
use sluice_guest::{StartInfo, check, check_eq, println, sched, shared_info, time};

sluice_guest::entry!(main);

/// How long any one wait may take.
const WAIT_LIMIT_NS: u64 = 10_000_000_000;
/// The control domain's id.
const CONTROL: u16 = 0;
/// The two guests.
const PING: u16 = 1;
const PONG: u16 = 2;

fn deadline() -> u64 {
    time::now_ns().map_or(0, |now| now + WAIT_LIMIT_NS)
}

/// Waits until `port` is pending and clears it; false on timeout.
fn wait(shared: &SharedInfo, port: u32) -> bool {
    let limit = deadline();
    loop {
        if shared.is_pending(port) {
            shared.clear_pending(port);
            return true;
        }
        if time::now_ns().is_some_and(|now| now >= limit) {
            return false;
        }
        let _ = sched::poll(&[port], limit);
    }
}

/// Retries `attempt` (yielding) until it succeeds or the limit passes.
fn retry<T>(mut attempt: impl FnMut() -> Result<T, sluice_guest::Errno>) -> Option<T> {
    let limit = deadline();
    loop {
        if let Ok(value) = attempt() {
            return Some(value);
        }
        if time::now_ns().is_some_and(|now| now >= limit) {
            return None;
        }
        let _ = sched::yield_now();
    }
}

fn describe(status: &EvtchnStatus) -> &'static str {
    match status.status {
        evtchn::stat::CLOSED => "closed",
        evtchn::stat::UNBOUND => "unbound",
        evtchn::stat::INTERDOMAIN => "interdomain",
        evtchn::stat::PIRQ => "pirq",
        evtchn::stat::VIRQ => "virq",
        evtchn::stat::IPI => "ipi",
        _ => "unknown",
    }
}

fn main(start_info: &'static StartInfo) {
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return;
    };
    let static_port: u32 = start_info
        .arg_value("static")
        .and_then(|value| value.parse().ok())
        .unwrap_or(5);
    let rounds: u32 = start_info
        .arg_value("rounds")
        .and_then(|value| value.parse().ok())
        .unwrap_or(5);
    match start_info.arg_value("role") {
        Some("control") => control(shared, static_port, start_info.has_arg("interactive")),
        Some("ping") => ping(shared, static_port, rounds),
        Some("pong") => pong(shared, static_port, rounds),
        Some("keys") => keys(shared),
        other => {
            check!(false, "a known role=control|ping|pong (got {other:?})");
        }
    }
}

/// Prints the static channel as `domain` sees it and checks it.
fn show_static(domain: u16, port: u32, peer: u16) {
    let dom = if domain == CONTROL {
        DOMID_SELF
    } else {
        domain
    };
    let seen = state(dom, port);
    match &seen {
        Ok(status) => println!(
            "demo: static channel d{domain} port {port}: {} to d{} port {}",
            describe(status),
            status.remote_dom(),
            status.remote_port()
        ),
        Err(errno) => println!("demo: static channel d{domain} port {port}: status gave {errno:?}"),
    }
    check!(
        seen.as_ref()
            .is_ok_and(|status| status.status == evtchn::stat::INTERDOMAIN
                && status.remote_dom() == peer
                && status.remote_port() == port),
        "d{domain} port {port} is bound to d{peer} port {port} before d{domain} did anything"
    );
}

fn control(shared: &SharedInfo, static_port: u32, is_interactive: bool) {
    println!("demo: d0 is the control domain; d1 and d2 will report to it");
    let for_ping = evtchn::alloc_unbound(DOMID_SELF, PING);
    let for_pong = evtchn::alloc_unbound(DOMID_SELF, PONG);
    check_eq!(for_ping, Ok(1), "d0 offers port 1 to d1 (alloc_unbound)");
    check_eq!(for_pong, Ok(2), "d0 offers port 2 to d2 (alloc_unbound)");
    println!("demo: d0 offered port 1 to d1 and port 2 to d2");
    // The guests' static channel, through the control domain's privilege.
    for (domain, peer) in [(PING, PONG), (PONG, PING)] {
        let seen = state(domain, static_port);
        if let Ok(status) = &seen {
            println!(
                "demo: d0 looks at d{domain} port {static_port}: {} to d{} port {}",
                describe(status),
                status.remote_dom(),
                status.remote_port()
            );
        }
        check!(
            seen.is_ok_and(
                |status| status.status == evtchn::stat::INTERDOMAIN && status.remote_dom() == peer
            ),
            "d0 sees d{domain} port {static_port} interdomain to d{peer} (privileged status)"
        );
    }
    let mut reported = 0;
    for (port, guest) in [(1, PING), (2, PONG)] {
        let is_reported = wait(shared, port);
        if is_reported {
            reported += 1;
            println!("demo: d0 got d{guest}'s report on port {port}");
        }
        check!(is_reported, "d{guest} reports to d0 on port {port}");
    }
    println!(
        "demo: summary: d1 and d2 played their rounds over a dynamic channel (d1:1 <-> d2:1), \
         signalled the end over the static channel (d1:{static_port} <-> d2:{static_port}), \
         and {reported} of 2 reported to d0"
    );
    if is_interactive {
        interactive(shared);
    }
}

/// Stays up: every VIRQ_DEBUG (a debug key on the console) is printed.
fn interactive(shared: &SharedInfo) -> ! {
    let port = evtchn::bind_virq(evtchn::virq::DEBUG, 0);
    match port {
        Ok(port) => {
            println!(
                "demo: interactive: press h on the console for the debug keys (VIRQ_DEBUG is d0 port {port}); Ctrl-C ends QEMU"
            );
            let mut count = 0u32;
            loop {
                if shared.is_pending(port) {
                    shared.clear_pending(port);
                    count += 1;
                    println!("demo: d0 got VIRQ_DEBUG #{count}");
                }
                let _ = sched::poll(&[port], 0);
            }
        }
        Err(errno) => {
            println!("demo: interactive: bind_virq(VIRQ_DEBUG) gave {errno:?}; idling");
            loop {
                let _ = sched::poll(&[], 0);
            }
        }
    }
}

fn keys(shared: &SharedInfo) {
    let bound = evtchn::bind_virq(evtchn::virq::DEBUG, 0);
    check_eq!(bound, Ok(1), "bind_virq(VIRQ_DEBUG, vcpu 0) gives port 1");
    let Ok(port) = bound else { return };
    println!("demo: waiting for a debug key (VIRQ_DEBUG on port {port})");
    let is_raised = wait(shared, port);
    if is_raised {
        println!("demo: got VIRQ_DEBUG on port {port}");
        // The other keys typed with it raise it again (or find it still
        // pending): stay up until three arrived or 3 s passed, so that the
        // hypervisor handles every key before this domain ends the run.
        let mut count = 1;
        let limit = time::now_ns().map_or(0, |now| now + 3_000_000_000);
        while count < 3 && time::now_ns().is_some_and(|now| now < limit) {
            if shared.is_pending(port) {
                shared.clear_pending(port);
                count += 1;
            } else {
                let _ = sched::poll(&[port], limit);
            }
        }
        println!("demo: {count} VIRQ_DEBUG event(s) seen");
    }
    check!(is_raised, "a debug key raises VIRQ_DEBUG");
}

fn ping(shared: &SharedInfo, static_port: u32, rounds: u32) {
    println!("demo: d1 starts");
    show_static(PING, static_port, PONG);
    let offered = evtchn::alloc_unbound(DOMID_SELF, PONG);
    check_eq!(offered, Ok(1), "d1 offers port 1 to d2 (alloc_unbound)");
    let Ok(port) = offered else { return };
    println!("demo: d1 offered port {port} to d2 and waits for d2 to bind it");
    check!(wait(shared, port), "d2 says it is ready on d1 port {port}");
    let mut answered = 0;
    for round in 1..=rounds {
        let _ = evtchn::send(port);
        if !wait(shared, port) {
            break;
        }
        answered += 1;
        println!("demo: d1 ping {round} -> d2, pong {round} <- d2");
    }
    check_eq!(answered, rounds, "d2 answers every ping");
    println!("demo: d1 tells d2 over the static channel (port {static_port}) that it is done");
    check_eq!(
        evtchn::send(static_port),
        Ok(()),
        "d1 sends on static port {static_port}"
    );
    report(1);
    println!("demo: d1 done: {answered} of {rounds} rounds answered");
}

fn pong(shared: &SharedInfo, static_port: u32, rounds: u32) {
    println!("demo: d2 starts");
    // The static channel's bind left this end pending, as a guest's
    // bind_interdomain would; it carries no word yet.
    let was_pending = shared.is_pending(static_port);
    shared.clear_pending(static_port);
    println!("demo: d2 static port {static_port} pending from the boot-time bind: {was_pending}");
    show_static(PONG, static_port, PING);
    let bound = retry(|| evtchn::bind_interdomain(PING, 1));
    check_eq!(bound, Some(1), "d2 binds d1's port 1 as its port 1");
    let Some(port) = bound else { return };
    println!("demo: d2 bound d1 port 1 as its port {port}");
    // bind_interdomain left the new port pending; start clean, then say so.
    shared.clear_pending(port);
    let _ = evtchn::send(port);
    let mut answered = 0;
    for _ in 0..rounds {
        if !wait(shared, port) {
            break;
        }
        answered += 1;
        let _ = evtchn::send(port);
    }
    check_eq!(answered, rounds, "d2 gets every ping and answers it");
    let is_done = wait(shared, static_port);
    if is_done {
        println!("demo: d2 got d1's done over static port {static_port}");
    }
    check!(is_done, "d1's done arrives on static port {static_port}");
    report(2);
    println!("demo: d2 done: answered {answered} pings");
}

/// Binds the control domain's port offered to this guest and sends on it.
fn report(control_port: u32) {
    let bound = retry(|| evtchn::bind_interdomain(CONTROL, control_port));
    check!(
        bound.is_some(),
        "binds d0's port {control_port} to report in"
    );
    if let Some(port) = bound {
        check_eq!(
            evtchn::send(port),
            Ok(()),
            "reports to d0 over its port {port}"
        );
        println!("demo: reported to d0 (d0 port {control_port}, local port {port})");
    }
}
