//! `witness`: this (privileged) domain waits for another domain on its
//! pCPU to power off (VIRQ_DOM_EXC, sent once the other's last vcpu has
//! stopped), then says it waits for a debug key and waits for
//! VIRQ_DEBUG, so that a scenario's `r` key dumps the run queues after
//! the other domain's vcpus are dead: they must be out of the queues.
//!
//! VIRQ_DOM_EXC is dropped while nobody has it bound, so the other domain
//! must not stop before the witness binds it; on a loaded host the
//! witness's first time slice can end before it gets there. With
//! `release=P` the witness sends on its static port `P` once the VIRQ is
//! bound, and the other domain (this guest with `await=P`, [`await_release`])
//! powers off only after that event.

use sluice_guest::shared_info::{self, SharedInfo};
use sluice_guest::{StartInfo, check, evtchn, println, sched, time};

/// How long each wait may take.
const LIMIT_NS: u64 = 20_000_000_000;

/// Waits until `port` is pending (then clears it) or the limit passes.
fn wait(shared: &SharedInfo, port: u32) -> bool {
    let limit = time::now_ns().map_or(0, |now| now + LIMIT_NS);
    loop {
        if shared.is_pending(port) {
            shared.clear_pending(port);
            return true;
        }
        if time::now_ns().is_none_or(|now| now >= limit) {
            return false;
        }
        let _ = sched::poll(&[port], limit);
    }
}

/// The witness role.
pub fn witness(start_info: &StartInfo) {
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return;
    };
    let dom_exc = evtchn::bind_virq(evtchn::virq::DOM_EXC, 0);
    check!(
        dom_exc.is_ok(),
        "bind_virq(VIRQ_DOM_EXC) succeeds ({dom_exc:?})"
    );
    let Ok(dom_exc) = dom_exc else { return };
    if let Some(release) = start_info.arg_value("release") {
        let sent = release.parse().map(evtchn::send);
        check!(
            matches!(sent, Ok(Ok(()))),
            "the other domain is released on static port {release} ({sent:?})"
        );
    }
    check!(
        wait(shared, dom_exc),
        "VIRQ_DOM_EXC arrives: the other domain has stopped"
    );
    let debug = evtchn::bind_virq(evtchn::virq::DEBUG, 0);
    check!(debug.is_ok(), "bind_virq(VIRQ_DEBUG) succeeds ({debug:?})");
    let Ok(debug) = debug else { return };
    println!("witness: waiting for a debug key (VIRQ_DEBUG on port {debug})");
    check!(wait(shared, debug), "a debug key raises VIRQ_DEBUG");
}

/// The `await=P` role: waits for the witness's event on static port `P`
/// (sent once VIRQ_DOM_EXC is bound), so that this domain's power-off
/// comes after the witness can see it. `P` must be the channel's first
/// end, the one allocated for the witness (`evtchn=<this domain>:P,<the
/// witness>:Q`): the end bound to it starts pending, as after a
/// bind_interdomain, and would let this domain go at once.
pub fn await_release(port: &str) {
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return;
    };
    let Ok(port) = port.parse() else {
        check!(false, "await={port} names a port");
        return;
    };
    check!(
        wait(shared, port),
        "the witness's release arrives on static port {port}"
    );
}
