//! VIRQ_DOM_EXC reaches the privileged domain, and only it, when another
//! domain shuts down (spec §5, §7.10; Xen: `__domain_finalise_shutdown()`
//! sends it to the global VIRQ's handler, the hardware domain).
//!
//! The control domain (d0, `priv`) connects to the victim (d1) and to a
//! bystander (d2), then binds VIRQ_DOM_EXC and checks it is quiet while
//! every domain runs. It tells the victim to go; the victim powers off;
//! the control domain polls its VIRQ_DOM_EXC port until the VIRQ arrives.
//! It then tells the bystander, which bound VIRQ_DOM_EXC too (Xen 4.17
//! lets any domain bind a global VIRQ), to look at its own port: it must
//! not be pending, since only the handler domain receives a global VIRQ
//! (and the control domain saw the VIRQ before it sent the message). When
//! the bystander powers off in turn, the control domain hears of it too.
//!
//! With `end=crash` (on the control domain's and the victim's lines) the
//! victim crashes instead: the control domain still hears of it, and its
//! end of the channel then reads unbound, naming the destroyed victim.

use sluice_guest::evtchn::{self, DOMID_SELF, DomId, Port, virq};
use sluice_guest::{StartInfo, check, check_eq, println, shared_info, tap};

use crate::common::{self, STEP_LIMIT_NS};
use crate::pingpong::{self, Role};

/// The three parts.
const CONTROL: DomId = 0;
const VICTIM: DomId = 1;
const BYSTANDER: DomId = 2;

pub fn main(start_info: &'static StartInfo) {
    let is_crash = start_info.arg_value("end") == Some("crash");
    match start_info.arg_value("role") {
        Some("control") => control(is_crash),
        Some("victim") => victim(is_crash),
        Some("bystander") => bystander(),
        _ => {
            check!(
                false,
                "the command line says role=control, victim or bystander"
            );
        }
    }
}

fn control(is_crash: bool) {
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return;
    };
    println!("# domexc: control d{CONTROL}, victim d{VICTIM}, bystander d{BYSTANDER}");
    let Some(victim_port) = pingpong::connect(Role::A, VICTIM) else {
        return;
    };
    shared.mask(victim_port);
    let bystander_port = evtchn::alloc_unbound(DOMID_SELF, BYSTANDER);
    check_eq!(
        bystander_port,
        Ok(2),
        "control: alloc_unbound for the bystander gets port 2"
    );
    let Ok(bystander_port) = bystander_port else {
        return;
    };
    shared.mask(bystander_port);
    check_eq!(
        common::wait_bound(bystander_port).map(|s| (s.0, s.1)),
        Ok((evtchn::stat::INTERDOMAIN, BYSTANDER)),
        "control: the bystander binds to port 2"
    );
    let exc_port = evtchn::bind_virq(virq::DOM_EXC, 0);
    check_eq!(
        exc_port,
        Ok(3),
        "control: bind_virq(VIRQ_DOM_EXC) on vcpu 0 gets port 3"
    );
    let Ok(exc_port) = exc_port else {
        return;
    };
    shared.mask(exc_port);
    // The bystander and the victim are both waiting for us: nobody has
    // shut down yet.
    common::pause(50_000_000);
    check!(
        !shared.is_pending(exc_port),
        "control: VIRQ_DOM_EXC is quiet while every domain runs"
    );
    check_eq!(
        evtchn::send(victim_port),
        Ok(()),
        "control: tells the victim to shut down"
    );
    if is_crash {
        check!(
            common::poll_receive(exc_port, common::after(STEP_LIMIT_NS)),
            "control: VIRQ_DOM_EXC arrives after d{VICTIM} crashed"
        );
        // A crashed domain is destroyed: its end of our channel closes.
        let limit = common::after(STEP_LIMIT_NS);
        let mut status = common::peer_of(victim_port);
        while status.map(|s| s.0) == Ok(evtchn::stat::INTERDOMAIN) && common::now() < limit {
            let _ = sluice_guest::sched::yield_now();
            status = common::peer_of(victim_port);
        }
        check_eq!(
            status.map(|s| (s.0, s.1)),
            Ok((evtchn::stat::UNBOUND, VICTIM)),
            "control: once d{VICTIM} is destroyed, its channel reads unbound naming it"
        );
    } else {
        check!(
            common::poll_receive(exc_port, common::after(STEP_LIMIT_NS)),
            "control: VIRQ_DOM_EXC arrives after d{VICTIM} powered off"
        );
    }
    check_eq!(
        evtchn::send(bystander_port),
        Ok(()),
        "control: tells the bystander to look at its VIRQ_DOM_EXC port"
    );
    check!(
        common::poll_receive(bystander_port, common::after(STEP_LIMIT_NS)),
        "control: the bystander answers"
    );
    check!(
        common::poll_receive(exc_port, common::after(STEP_LIMIT_NS)),
        "control: VIRQ_DOM_EXC arrives again after d{BYSTANDER} powered off"
    );
    for port in [exc_port, bystander_port, victim_port] {
        check_eq!(evtchn::close(port), Ok(()), "control: closes port {port}");
    }
    common::check_all_closed("control");
}

fn victim(is_crash: bool) {
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return;
    };
    let Some(port) = pingpong::connect(Role::B, CONTROL) else {
        return;
    };
    shared.mask(port);
    check!(
        common::poll_receive(port, common::after(STEP_LIMIT_NS)),
        "victim: the control domain says go"
    );
    if is_crash {
        println!("# victim: crashing on purpose now");
        tap::shutdown_failed()
    }
    check_eq!(evtchn::close(port), Ok(()), "victim: closes its port");
    println!("# victim: powering off now");
}

fn bystander() {
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return;
    };
    let exc_port = evtchn::bind_virq(virq::DOM_EXC, 0);
    check_eq!(
        exc_port,
        Ok(1),
        "bystander: an unprivileged domain may bind VIRQ_DOM_EXC (Xen 4.17) and gets port 1"
    );
    let Ok(exc_port) = exc_port else {
        return;
    };
    shared.mask(exc_port);
    let port: Result<Port, _> = common::bind_when_offered(CONTROL, 2);
    check_eq!(
        port,
        Ok(2),
        "bystander: binds to the control domain's port 2"
    );
    let Ok(port) = port else {
        return;
    };
    shared.mask(port);
    // bind_interdomain raised the new port (spec §2.3 step 8).
    shared.clear_pending(port);
    check!(
        common::poll_receive(port, common::after(STEP_LIMIT_NS)),
        "bystander: the control domain says the victim is gone"
    );
    check!(
        !shared.is_pending(exc_port),
        "bystander: its VIRQ_DOM_EXC port stayed quiet: a global VIRQ goes only to its handler"
    );
    check_eq!(evtchn::send(port), Ok(()), "bystander: answers");
    for port in [exc_port, port] {
        check_eq!(evtchn::close(port), Ok(()), "bystander: closes port {port}");
    }
    common::check_all_closed("bystander");
}
