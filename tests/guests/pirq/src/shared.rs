//! Two domains share GSI 8 (both bind with BIND_PIRQ__WILL_SHARE); one
//! never sends PHYSDEVOP_eoi. The hypervisor forces the EOI 1 ms after
//! each interrupt, so the other still receives its interrupts.
//!
//! - `share=silent` (the privileged domain): maps GSI 8 to pirq 8 for
//!   itself and for its partner (`partner=N`, as a toolstack would), binds
//!   it shared, and counts its own events without ever EOIing them until
//!   the partner says it is halfway over the static channel's port
//!   [`HALFWAY_PORT`] (`evtchn=0:5,N:5` on the hypervisor's command line).
//!   Then it powers off with its pirq port still bound: as on Xen, a
//!   shut-down domain keeps its ports (and its place on the line) until
//!   it is destroyed, so it owes the EOI of every later interrupt and only
//!   the forced EOI keeps the line going. With `end=crash` it crashes
//!   instead, and is destroyed at once: its port is closed, with an EOI
//!   owed only if the last interrupt came less than the forced EOI's 1 to
//!   2 ms before (the `pirq-eoi` self-test checks that case).
//! - `share=good` (the partner): binds pirq 8 shared once it is mapped,
//!   receives [`INTERRUPTS`] interrupts, each EOId by its handler, telling
//!   the silent domain when it is halfway. Then the pirq is still shared
//!   with the shut-down silent domain or, with `partner-end=crash`, no
//!   longer shared once the crashed one is destroyed.

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
const HALFWAY_PORT: Port = 5;
/// The partner's event count at which it tells the silent domain.
const HALFWAY: u32 = INTERRUPTS / 2;
/// Longest the silent domain waits for its partner, and the partner for
/// its mapping.
const PARTNER_TIMEOUT_NS: u64 = 60_000_000_000;

/// Set by the silent domain's handler for [`HALFWAY_PORT`].
static PARTNER_HALFWAY: AtomicBool = AtomicBool::new(false);

fn on_halfway(_port: u32) {
    PARTNER_HALFWAY.store(true, Ordering::SeqCst);
}

/// The privileged domain that never EOIs; crashes at the end if `crash`.
pub fn silent(partner: u16, crash: bool) {
    upcall::set_handler(HALFWAY_PORT, on_halfway);
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
    while !PARTNER_HALFWAY.load(Ordering::SeqCst) {
        let Some(now) = now_ns() else {
            break;
        };
        if now >= start + PARTNER_TIMEOUT_NS {
            break;
        }
        let _ = sched::poll(&[port, HALFWAY_PORT], now + 100_000_000);
    }
    let received = delivery::events();
    check!(
        PARTNER_HALFWAY.load(Ordering::SeqCst),
        "d{partner} says it received {HALFWAY} interrupts"
    );
    println!("# pirq shared: d0 received {received} interrupts and sent no PHYSDEVOP_eoi");
    check!(
        received >= 2,
        "d0, which never sends PHYSDEVOP_eoi, still receives interrupts ({received}; each EOI forced)"
    );
    // The port stays bound; whether an EOI is owed right now depends on
    // whether the last interrupt's EOI has been forced yet.
    if crash {
        println!("# pirq shared: d0 crashes on purpose with its pirq port bound");
        sluice_guest::tap::shutdown_failed();
    }
    println!("# pirq shared: d0 powers off with its pirq port bound");
}

/// The partner that EOIs each interrupt; `partner_crashes` says how the
/// silent domain ends.
pub fn good(partner_crashes: bool) {
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
            let _ = evtchn::send(HALFWAY_PORT);
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
    let mut halfway_sent = Err(Errno::EINVAL);
    for count in 1..=INTERRUPTS {
        if !wait_for_events(port, base + count, ARRIVAL_TIMEOUT_NS) {
            break;
        }
        received = count;
        if count == HALFWAY {
            halfway_sent = evtchn::send(HALFWAY_PORT);
        }
    }
    if received < HALFWAY {
        // Let the silent domain end, for a prompt verdict.
        let _ = evtchn::send(HALFWAY_PORT);
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
    check_eq!(
        halfway_sent,
        Ok(()),
        "d1 tells d0 when it has {HALFWAY} interrupts"
    );
    if partner_crashes {
        // The crashed d0 is destroyed: its port closed, its binder gone.
        let mut shared = true;
        while shared && now_ns().is_some_and(|now| now < start + PARTNER_TIMEOUT_NS) {
            shared = physdev::irq_status_query(RTC_PIRQ)
                .is_ok_and(|flags| flags & XENIRQSTAT_SHARED != 0);
            if shared {
                let _ = sched::yield_now();
            }
        }
        check!(
            !shared,
            "once the crashed d0 is destroyed the pirq is no longer shared"
        );
    } else {
        check!(
            physdev::irq_status_query(RTC_PIRQ).is_ok_and(|flags| flags & XENIRQSTAT_SHARED != 0),
            "the pirq is still shared with d0, shut down but not destroyed"
        );
    }
    check_eq!(
        evtchn::close(port),
        Ok(()),
        "close of the shared pirq port is rc 0"
    );
    upcall::clear_handler(port);
}
