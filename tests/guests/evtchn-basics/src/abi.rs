//! Commands outside the common path: unknown EVTCHNOPs, the FIFO ops on a
//! 2-level domain, and reset / reset_cont (spec §1.1, §2.12, §2.13).
//!
//! No call here may succeed in switching the domain to FIFO: every
//! init_control carries at least one argument the spec rejects.

use core::sync::atomic::Ordering;

use sluice_guest::errno::Errno;
use sluice_guest::evtchn::{
    self, DOMID_SELF, EvtchnBindIpi, EvtchnPort, EvtchnStatus, cmd, stat, virq,
};
use sluice_guest::hypercall::{hypercall2, nr};
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

/// EVTCHNOP `command` with `high` in bits 32–63 of the command register.
fn op_wide<T>(high: u32, command: u32, arg: &mut T) -> Result<i64, Errno> {
    let wide = u64::from(high) << 32 | u64::from(command);
    // SAFETY: as for `evtchn::op`: `arg` is a live, exclusive reference to
    // the op's repr(C) struct of integers, of exactly the op's size, and
    // any bytes the hypervisor writes there are valid values.
    Errno::result(unsafe { hypercall2(nr::EVENT_CHANNEL_OP, wide, (arg as *mut T) as u64) })
}

/// The command is an `int` (Xen 4.17: `do_event_channel_op(int cmd, ...)`):
/// bits 32–63 of the register are ignored, on the ops with a fast path in
/// Sluice (send, status, close) and on the others (bind_ipi); bit 31 set
/// makes it negative, an unknown command. On entry ports 1..3 are unbound
/// and 4 upward free, and vcpu 0's events are masked; on exit too.
pub fn command_is_an_int(ctx: &Ctx) {
    let mut bind = EvtchnBindIpi { vcpu: 0, port: 0 };
    check_eq!(
        op_wide(0xffff_ffff, cmd::BIND_IPI, &mut bind).map(|_| bind.port),
        Ok(4),
        "bind_ipi with bits 32-63 of cmd set is bind_ipi: port 4"
    );
    let mut query = EvtchnStatus {
        dom: DOMID_SELF,
        port: 4,
        ..EvtchnStatus::default()
    };
    check_eq!(
        op_wide(1, cmd::STATUS, &mut query).map(|_| (query.status, query.vcpu)),
        Ok((stat::IPI, 0)),
        "status with cmd 0x1_0000_0005 is status: port 4 is an IPI to vcpu 0"
    );
    ctx.clear_events();
    check_eq!(
        op_wide(1, cmd::SEND, &mut EvtchnPort { port: 4 }),
        Ok(0),
        "send with cmd 0x1_0000_0004 is send: rc 0"
    );
    check_eq!(
        ctx.signal(4),
        (true, true, true),
        "that send set port 4 pending toward vcpu 0"
    );
    ctx.clear_events();
    check_eq!(
        op_wide(1, 0x8000_0000 | cmd::SEND, &mut EvtchnPort { port: 4 }),
        Err(Errno::ENOSYS),
        "cmd 0x1_8000_0004 (a negative int) fails -ENOSYS"
    );
    check_eq!(
        ctx.signal(4),
        (false, false, false),
        "and sets nothing pending"
    );
    check_eq!(
        op_wide(0x8000_0000, cmd::CLOSE, &mut EvtchnPort { port: 4 }),
        Ok(0),
        "close with bit 63 of cmd set is close: rc 0"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, 4).map(|s| s.status),
        Ok(stat::CLOSED),
        "port 4 is closed again"
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
