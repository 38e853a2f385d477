//! Two domains share GSI 8 (both bind with BIND_PIRQ__WILL_SHARE); one
//! never sends PHYSDEVOP_eoi. The hypervisor forces the EOI 1 ms after
//! each interrupt, so the other still receives its interrupts.
//!
//! - `share=silent` (the privileged domain): maps GSI 8 to pirq 8 for
//!   itself and for its partner (`partner=N`, as a toolstack would), binds
//!   it shared, and counts its own events without ever EOIing them until
//!   the partner says it is done over the static channel's port
//!   [`DONE_PORT`] (`evtchn=0:5,N:5` on the hypervisor's command line).
//! - `share=good` (the partner): binds pirq 8 shared once it is mapped,
//!   receives [`INTERRUPTS`] interrupts, each EOId by its handler, and
//!   tells the silent domain it is done.

use core::sync::atomic::{AtomicBool, Ordering};

use sluice_guest::evtchn::{self, DOMID_SELF, Port};
use sluice_guest::physdev::{self, XENIRQSTAT_NEEDS_EOI, XENIRQSTAT_SHARED};
use sluice_guest::time::now_ns;
use sluice_guest::{Errno, check, check_eq, println, sched, upcall};

use crate::delivery::{
    self, ARRIVAL_TIMEOUT_NS, INTERRUPTS, bind_with_handler_flags, eoi_in_handler, handler_eois,
    wait_for_events,
};
use crate::{RTC_GSI, RTC_PIRQ};

/// Xen's BIND_PIRQ__WILL_SHARE.
const WILL_SHARE: u32 = 1;
/// Both domains' end of the static channel.
const DONE_PORT: Port = 5;
/// Longest the silent domain waits for its partner, and the partner for
/// its mapping.
const PARTNER_TIMEOUT_NS: u64 = 60_000_000_000;

/// Set by the silent domain's handler for [`DONE_PORT`].
static PARTNER_DONE: AtomicBool = AtomicBool::new(false);

fn on_done(_port: u32) {
    PARTNER_DONE.store(true, Ordering::SeqCst);
}

/// The privileged domain that never EOIs.
pub fn silent(partner: u16) {
    upcall::set_handler(DONE_PORT, on_done);
    check_eq!(
        physdev::map_pirq_gsi(DOMID_SELF, RTC_GSI, RTC_PIRQ as i32),
        Ok(RTC_PIRQ),
        "map_pirq of GSI 8 to pirq 8 for itself succeeds"
    );
    let port = match bind_with_handler_flags(WILL_SHARE) {
        Ok(port) => port,
        Err(errno) => {
            check!(false, "bind_pirq of pirq 8, shared, succeeds ({errno:?})");
            return;
        }
    };
    check!(true, "bind_pirq of pirq 8, shared, succeeds (port {port})");
    check_eq!(
        physdev::map_pirq_gsi(partner, RTC_GSI, RTC_PIRQ as i32),
        Ok(RTC_PIRQ),
        "map_pirq of GSI 8 to pirq 8 for d{partner} succeeds"
    );
    let Some(start) = now_ns() else {
        check!(false, "the clock runs");
        return;
    };
    while !PARTNER_DONE.load(Ordering::SeqCst) {
        let Some(now) = now_ns() else {
            break;
        };
        if now >= start + PARTNER_TIMEOUT_NS {
            break;
        }
        let _ = sched::poll(&[port, DONE_PORT], now + 100_000_000);
    }
    let received = delivery::events();
    check!(
        PARTNER_DONE.load(Ordering::SeqCst),
        "d{partner} says it received its interrupts"
    );
    println!("# pirq shared: d0 received {received} interrupts and sent no PHYSDEVOP_eoi");
    check!(
        received >= 2,
        "d0, which never sends PHYSDEVOP_eoi, still receives interrupts ({received}; each EOI forced)"
    );
    check_eq!(
        evtchn::close(port),
        Ok(()),
        "close of the shared pirq port with an EOI owed is rc 0"
    );
    upcall::clear_handler(port);
    upcall::clear_handler(DONE_PORT);
}

/// The partner that EOIs each interrupt.
pub fn good() {
    let Some(start) = now_ns() else {
        check!(false, "the clock runs");
        return;
    };
    let base = eoi_in_handler(INTERRUPTS) - INTERRUPTS;
    // pirq 8 is not mapped for this domain until the privileged one maps
    // it (-EPERM until then).
    let bound = loop {
        match bind_with_handler_flags(WILL_SHARE) {
            Err(Errno::EPERM) if now_ns().is_some_and(|now| now < start + PARTNER_TIMEOUT_NS) => {
                let _ = sched::yield_now();
            }
            other => break other,
        }
    };
    let port = match bound {
        Ok(port) => port,
        Err(errno) => {
            check!(
                false,
                "bind_pirq of pirq 8 mapped by d0, shared, succeeds ({errno:?})"
            );
            let _ = evtchn::send(DONE_PORT);
            return;
        }
    };
    check!(
        true,
        "bind_pirq of pirq 8 mapped by d0, shared, succeeds (port {port})"
    );
    check_eq!(
        physdev::irq_status_query(RTC_PIRQ)
            .map(|flags| flags & (XENIRQSTAT_NEEDS_EOI | XENIRQSTAT_SHARED)),
        Ok(XENIRQSTAT_NEEDS_EOI | XENIRQSTAT_SHARED),
        "irq_status_query of the shared pirq: needs_eoi and shared"
    );
    let mut received = 0;
    for count in 1..=INTERRUPTS {
        if !wait_for_events(port, base + count, ARRIVAL_TIMEOUT_NS) {
            break;
        }
        received = count;
    }
    println!(
        "# pirq shared: d1 received {received} interrupts, {} EOId by its handler",
        handler_eois()
    );
    check_eq!(
        received,
        INTERRUPTS,
        "{INTERRUPTS} interrupts of the shared GSI 8 arrive although d0 never EOIs"
    );
    check_eq!(
        handler_eois(),
        INTERRUPTS - 1,
        "the handler EOId each but the last, every PHYSDEVOP_eoi rc 0"
    );
    check_eq!(evtchn::send(DONE_PORT), Ok(()), "d1 tells d0 it is done");
    check_eq!(
        evtchn::close(port),
        Ok(()),
        "close of the shared pirq port is rc 0"
    );
    upcall::clear_handler(port);
}
