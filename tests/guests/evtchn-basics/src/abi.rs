//! Commands outside the common path: unknown EVTCHNOPs, the FIFO ops on a
//! 2-level domain, and reset / reset_cont (spec §1.1, §2.12, §2.13).
//!
//! No call here may succeed in switching the domain to FIFO: every
//! init_control carries at least one argument the spec rejects.

use core::sync::atomic::Ordering;

use sluice_guest::errno::Errno;
use sluice_guest::evtchn::{self, DOMID_SELF, stat, virq};
use sluice_guest::{check, check_eq};

use crate::ports::NO_SUCH_DOMAIN;
use crate::{Ctx, FAR_PORT, NO_SUCH_VCPU};

/// Unknown commands and the FIFO-only commands while 2-level is active.
pub fn unknown_and_fifo_ops(_ctx: &Ctx) {
    let mut scratch = [0u64; 4];
    check_eq!(
        Errno::result(evtchn::op(15, &mut scratch)),
        Err(Errno::ENOSYS),
        "EVTCHNOP 15 (unknown) fails -ENOSYS"
    );
    check_eq!(
        Errno::result(evtchn::op(0x7fff_ffff, &mut scratch)),
        Err(Errno::ENOSYS),
        "EVTCHNOP 0x7fffffff (unknown) fails -ENOSYS"
    );

    check_eq!(
        evtchn::set_priority(1, 7),
        Err(Errno::ENOSYS),
        "set_priority on a 2-level domain fails -ENOSYS"
    );
    check_eq!(
        evtchn::set_priority(FAR_PORT, 7),
        Err(Errno::EINVAL),
        "set_priority of a port beyond the table fails -EINVAL (checked before the ABI)"
    );
    check_eq!(
        evtchn::expand_array(0),
        Err(Errno::EOPNOTSUPP),
        "expand_array on a 2-level domain fails -EOPNOTSUPP"
    );
    check_eq!(
        evtchn::init_control(0, 0, NO_SUCH_VCPU),
        Err(Errno::ENOENT),
        "init_control for a vcpu that does not exist fails -ENOENT"
    );
    check_eq!(
        evtchn::init_control(0, 4032, 0),
        Err(Errno::EINVAL),
        "init_control with offset 4032 (> 4096 - 72) fails -EINVAL"
    );
    check_eq!(
        evtchn::init_control(0, 4, 0),
        Err(Errno::EINVAL),
        "init_control with an offset not 8-aligned fails -EINVAL"
    );
    check_eq!(
        evtchn::init_control(0, 4032, NO_SUCH_VCPU),
        Err(Errno::ENOENT),
        "init_control checks the vcpu (-ENOENT) before the offset"
    );
    check_eq!(
        evtchn::set_priority(1, 7),
        Err(Errno::ENOSYS),
        "after the failed init_controls the domain is still 2-level (set_priority -ENOSYS)"
    );
}

/// EVTCHNOP_reset of the caller: everything closes, allocation restarts at 1.
pub fn reset(ctx: &Ctx) {
    check_eq!(
        evtchn::reset_cont(DOMID_SELF),
        Err(Errno::EBUSY),
        "reset_cont without a reset in progress fails -EBUSY"
    );
    check_eq!(
        evtchn::reset(NO_SUCH_DOMAIN),
        Err(Errno::ESRCH),
        "reset of a domain that does not exist fails -ESRCH"
    );

    // Ports 1..3 are unbound; add one of every other kind.
    let opened = [
        evtchn::bind_virq(virq::DEBUG, 0),
        evtchn::bind_ipi(0),
        evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF),
        evtchn::bind_interdomain(DOMID_SELF, 6),
    ];
    check_eq!(
        opened,
        [Ok(4), Ok(5), Ok(6), Ok(7)],
        "before reset: VIRQ 4, IPI 5, interdomain pair 6-7"
    );
    check!(
        ctx.shared.is_pending(7),
        "before reset: the new interdomain port 7 is pending"
    );

    check_eq!(
        evtchn::reset(DOMID_SELF),
        Ok(()),
        "reset(DOMID_SELF) is rc 0"
    );
    let still_open = (1..64)
        .filter(|&port| evtchn::status(DOMID_SELF, port).is_ok_and(|s| s.status != stat::CLOSED))
        .count();
    check_eq!(still_open, 0, "reset closes every port");
    let pending_words = ctx
        .shared
        .evtchn_pending
        .iter()
        .filter(|w| w.load(Ordering::SeqCst) != 0)
        .count();
    check_eq!(
        pending_words,
        0,
        "reset clears the pending bits of the ports it closes"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, 63).map(|s| s.status),
        Ok(stat::CLOSED),
        "after reset port 63 is still valid (storage never shrinks)"
    );
    check_eq!(
        evtchn::bind_virq(virq::DEBUG, 0),
        Ok(1),
        "after reset the VIRQ binding is gone and allocation restarts at port 1"
    );
    check_eq!(
        evtchn::close(1),
        Ok(()),
        "close of the new VIRQ port is rc 0"
    );
    ctx.clear_events();
}
