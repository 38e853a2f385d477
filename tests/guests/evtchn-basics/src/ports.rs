//! The port table on its own: port 0, valid vs allocated, lowest-free
//! allocation, and a loopback interdomain pair (spec §1.3, §2.1–§2.6,
//! §3.3; §10 traps 1, 2, 3, 5, 6, 8).

use sluice_guest::errno::Errno;
use sluice_guest::evtchn::{self, DOMID_SELF, DomId, stat};
use sluice_guest::shared_info::SharedInfo;
use sluice_guest::{check, check_eq, println};

use crate::{Ctx, FAR_PORT};

/// A domid that exists nowhere (real ids are < 0x7ff0; no test boots 5000).
pub const NO_SUCH_DOMAIN: DomId = 5000;
/// DOMID_XEN: reserved, so event-channel ops cannot name it (spec §0).
pub const DOMID_XEN: DomId = 0x7ff2;

/// `(status, vcpu)` of a port, or the errno.
pub fn status_vcpu(port: u32) -> Result<(u32, u32), Errno> {
    evtchn::status(DOMID_SELF, port).map(|s| (s.status, s.vcpu))
}

/// Before anything is allocated: port 0 is reserved, ports 1..63 exist as
/// free storage, port 64 does not exist yet.
pub fn fresh_table(shared: &SharedInfo) {
    check_eq!(
        status_vcpu(0),
        Ok((stat::CLOSED, 0)),
        "status of port 0 (reserved) is rc 0, closed, vcpu 0"
    );
    check_eq!(
        evtchn::close(0),
        Err(Errno::EINVAL),
        "close of port 0 fails -EINVAL"
    );
    check_eq!(
        evtchn::send(0),
        Err(Errno::EINVAL),
        "send on port 0 fails -EINVAL"
    );
    check_eq!(
        evtchn::bind_vcpu(0, 0),
        Err(Errno::EINVAL),
        "bind_vcpu of port 0 fails -EINVAL"
    );
    check_eq!(
        status_vcpu(63),
        Ok((stat::CLOSED, 0)),
        "status of free port 63 on a fresh domain is rc 0, closed"
    );
    check_eq!(
        status_vcpu(64).map(|_| ()),
        Err(Errno::EINVAL),
        "status of port 64 on a fresh domain fails -EINVAL"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, u32::MAX).map(|_| ()),
        Err(Errno::EINVAL),
        "status of port 0xffffffff fails -EINVAL"
    );
    check_eq!(
        evtchn::unmask(63),
        Ok(()),
        "unmask of free valid port 63 is rc 0"
    );
    check_eq!(
        evtchn::unmask(64),
        Err(Errno::EINVAL),
        "unmask of port 64 on a fresh domain fails -EINVAL"
    );
    check_eq!(
        evtchn::unmask(4096),
        Err(Errno::EINVAL),
        "unmask of port 4096 (past the 2-level limit) fails -EINVAL"
    );

    shared.mask(63);
    let rc = evtchn::unmask(63);
    check!(
        rc == Ok(()) && shared.is_masked(63),
        "unmask of a free port is a no-op: rc 0 and its mask bit stays set (rc {rc:?})"
    );
    shared.clear_mask(63);

    check_eq!(
        evtchn::close(63),
        Err(Errno::EINVAL),
        "close of free valid port 63 fails -EINVAL"
    );
    check_eq!(
        evtchn::send(63),
        Err(Errno::EINVAL),
        "send on free valid port 63 fails -EINVAL"
    );
    check_eq!(
        evtchn::bind_vcpu(63, 0),
        Err(Errno::EINVAL),
        "bind_vcpu of free valid port 63 fails -EINVAL"
    );
    check_eq!(
        evtchn::close(FAR_PORT),
        Err(Errno::EINVAL),
        "close of port {FAR_PORT} (no storage) fails -EINVAL"
    );
    check_eq!(
        evtchn::send(FAR_PORT),
        Err(Errno::EINVAL),
        "send on port {FAR_PORT} (no storage) fails -EINVAL"
    );
    let bound = (1..64)
        .filter(|&p| status_vcpu(p).is_ok_and(|(s, _)| s != stat::CLOSED))
        .count();
    check_eq!(bound, 0, "a fresh domain has no port bound in 1..63");
}

/// The first allocation gets port 1 and records the caller's real domid
/// for DOMID_SELF; returns that domid for the later sections.
pub fn first_allocation(expected_domid: Option<DomId>) -> DomId {
    check_eq!(
        evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF),
        Ok(1),
        "first alloc_unbound returns port 1"
    );
    let status = evtchn::status(DOMID_SELF, 1);
    let domid = status.map_or(DOMID_SELF, |s| s.remote_dom());
    check_eq!(
        status.map(|s| (s.status, s.vcpu)),
        Ok((stat::UNBOUND, 0)),
        "status of a fresh unbound port: unbound, vcpu 0"
    );
    match expected_domid {
        Some(expected) => {
            check_eq!(
                domid,
                expected,
                "alloc_unbound stores the caller's domid for remote_dom = DOMID_SELF"
            );
        }
        None => {
            check!(
                domid < DOMID_SELF,
                "alloc_unbound stores a real domid for remote_dom = DOMID_SELF (got {domid:#x})"
            );
        }
    }
    println!("# this domain is domid {domid}");
    domid
}

/// Lowest-free allocation and reuse; unvalidated remote_dom; send on unbound.
pub fn allocation(ctx: &Ctx) {
    check_eq!(
        evtchn::alloc_unbound(DOMID_SELF, 0x1234),
        Ok(2),
        "second alloc_unbound returns port 2"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, 2).map(|s| (s.status, s.remote_dom())),
        Ok((stat::UNBOUND, 0x1234)),
        "alloc_unbound stores a remote_dom that names no domain, unvalidated"
    );
    check_eq!(evtchn::close(1), Ok(()), "close of unbound port 1 is rc 0");
    check_eq!(
        status_vcpu(1),
        Ok((stat::CLOSED, 0)),
        "closed port 1 reads closed"
    );
    check_eq!(
        evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF),
        Ok(1),
        "alloc_unbound reuses the lowest free port (1)"
    );
    check_eq!(
        evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF),
        Ok(3),
        "then continues at the next free port (3)"
    );

    ctx.clear_events();
    check_eq!(evtchn::send(1), Ok(()), "send on an unbound port is rc 0");
    check_eq!(
        ctx.signal(1),
        (false, false, false),
        "send on an unbound port is dropped: nothing pending"
    );

    check_eq!(
        evtchn::alloc_unbound(NO_SUCH_DOMAIN, DOMID_SELF),
        Err(Errno::ESRCH),
        "alloc_unbound in a domain that does not exist fails -ESRCH"
    );
    check_eq!(
        evtchn::alloc_unbound(DOMID_XEN, DOMID_SELF),
        Err(Errno::ESRCH),
        "alloc_unbound in DOMID_XEN fails -ESRCH"
    );
    check_eq!(
        evtchn::status(NO_SUCH_DOMAIN, 1).map(|_| ()),
        Err(Errno::ESRCH),
        "status in a domain that does not exist fails -ESRCH"
    );
}

/// A loopback interdomain pair: pending on bind, send to the peer, edge
/// triggering, masking, close making the peer unbound, re-binding.
pub fn loopback(ctx: &Ctx) {
    let shared = ctx.shared;
    // Ports 1..3 are unbound (1 and 3 for this domain, 2 for 0x1234).
    ctx.clear_events();
    let remote = evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF);
    check_eq!(
        remote,
        Ok(4),
        "loopback: alloc_unbound(remote = DOMID_SELF) gives port 4"
    );
    let local = evtchn::bind_interdomain(DOMID_SELF, 4);
    check_eq!(
        local,
        Ok(5),
        "loopback: bind_interdomain(DOMID_SELF, 4) gives port 5"
    );
    check_eq!(
        ctx.signal(5),
        (true, true, true),
        "bind_interdomain sets the new local port pending: pending bit, selector, upcall_pending"
    );
    check!(
        !shared.is_pending(4),
        "bind_interdomain leaves the remote end's pending bit alone"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, 4).map(|s| (s.status, s.remote_dom(), s.remote_port())),
        Ok((stat::INTERDOMAIN, ctx.domid, 5)),
        "status of the remote end: interdomain, this domain, port 5"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, 5).map(|s| (s.status, s.remote_dom(), s.remote_port(), s.vcpu)),
        Ok((stat::INTERDOMAIN, ctx.domid, 4, 0)),
        "status of the local end: interdomain, this domain, port 4, vcpu 0"
    );

    ctx.clear_events();
    check_eq!(
        evtchn::send(5),
        Ok(()),
        "send on an interdomain port is rc 0"
    );
    check_eq!(
        ctx.signal(4),
        (true, true, true),
        "send sets the peer's pending bit, selector and upcall_pending"
    );
    check!(
        !shared.is_pending(5),
        "send does not set the sender's own pending bit"
    );

    // Edge triggering (spec §3.3 step 1): the pending bit is still set, so a
    // second send must not touch the selector or upcall_pending.
    let vcpu = shared.vcpu0();
    vcpu.evtchn_pending_sel
        .store(0, core::sync::atomic::Ordering::SeqCst);
    vcpu.evtchn_upcall_pending
        .store(0, core::sync::atomic::Ordering::SeqCst);
    check_eq!(
        evtchn::send(5),
        Ok(()),
        "second send while the peer is still pending is rc 0"
    );
    check_eq!(
        ctx.signal(4),
        (true, false, false),
        "second send to an already pending port changes neither selector nor upcall_pending"
    );

    ctx.clear_events();
    shared.mask(4);
    check_eq!(evtchn::send(5), Ok(()), "send to a masked peer is rc 0");
    check_eq!(
        ctx.signal(4),
        (true, false, false),
        "send to a masked port sets only its pending bit"
    );
    check_eq!(
        evtchn::unmask(4),
        Ok(()),
        "EVTCHNOP_unmask of the masked pending port is rc 0"
    );
    check!(!shared.is_masked(4), "EVTCHNOP_unmask clears the mask bit");
    check_eq!(
        ctx.signal(4),
        (true, true, true),
        "EVTCHNOP_unmask of a pending port raises selector and upcall_pending"
    );
    let vcpu = shared.vcpu0();
    vcpu.evtchn_pending_sel
        .store(0, core::sync::atomic::Ordering::SeqCst);
    vcpu.evtchn_upcall_pending
        .store(0, core::sync::atomic::Ordering::SeqCst);
    check_eq!(
        evtchn::unmask(4),
        Ok(()),
        "EVTCHNOP_unmask of an unmasked pending port is rc 0"
    );
    check_eq!(
        ctx.signal(4),
        (true, false, false),
        "unmask of an already unmasked pending port raises nothing"
    );
    ctx.clear_events();

    check_eq!(
        evtchn::bind_interdomain(DOMID_SELF, 5),
        Err(Errno::EINVAL),
        "bind_interdomain to a port that is not unbound fails -EINVAL"
    );
    check_eq!(
        evtchn::bind_interdomain(DOMID_SELF, 2),
        Err(Errno::EINVAL),
        "bind_interdomain to an unbound port reserved for another domid fails -EINVAL"
    );
    check_eq!(
        evtchn::bind_interdomain(DOMID_SELF, FAR_PORT),
        Err(Errno::EINVAL),
        "bind_interdomain to a port beyond the table fails -EINVAL"
    );
    check_eq!(
        evtchn::bind_interdomain(NO_SUCH_DOMAIN, 1),
        Err(Errno::ESRCH),
        "bind_interdomain to a domain that does not exist fails -ESRCH"
    );
    check_eq!(
        evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF),
        Ok(6),
        "failed binds leave no port behind: the next allocation is port 6"
    );
    check_eq!(evtchn::close(6), Ok(()), "close of unbound port 6 is rc 0");

    check_eq!(
        evtchn::close(5),
        Ok(()),
        "close of one end of an interdomain pair is rc 0"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, 4).map(|s| (s.status, s.remote_dom())),
        Ok((stat::UNBOUND, ctx.domid)),
        "closing one end leaves the peer unbound, awaiting the closer's domid"
    );
    check_eq!(
        evtchn::bind_interdomain(DOMID_SELF, 4),
        Ok(5),
        "the closer can bind to the now unbound peer again (gets port 5 back)"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, 4).map(|s| (s.status, s.remote_port())),
        Ok((stat::INTERDOMAIN, 5)),
        "after re-binding the peer is interdomain with port 5 again"
    );
    check_eq!(evtchn::close(4), Ok(()), "close of the other end is rc 0");
    check_eq!(
        evtchn::status(DOMID_SELF, 5).map(|s| s.status),
        Ok(stat::UNBOUND),
        "closing the other end leaves port 5 unbound"
    );
    check_eq!(
        evtchn::close(5),
        Ok(()),
        "close of the remaining unbound end is rc 0"
    );
    ctx.clear_events();
}

/// What close does to pending bits, naming the domain by its id, and
/// unmasking a port that is not pending (spec §2.1 "Freeing", §2.4, §3.3).
pub fn closing(ctx: &Ctx) {
    let shared = ctx.shared;
    ctx.clear_events();
    check_eq!(evtchn::bind_ipi(0), Ok(4), "bind_ipi gets port 4");
    check_eq!(evtchn::send(4), Ok(()), "send on IPI port 4 is rc 0");
    check_eq!(
        evtchn::close(4),
        Ok(()),
        "close of the pending IPI port is rc 0"
    );
    check!(
        !shared.is_pending(4),
        "close clears the closed port's pending bit"
    );

    ctx.clear_events();
    check_eq!(
        evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF),
        Ok(4),
        "alloc_unbound gets port 4"
    );
    check_eq!(
        evtchn::bind_interdomain(DOMID_SELF, 4),
        Ok(5),
        "bind_interdomain gets port 5"
    );
    ctx.clear_events();
    check_eq!(evtchn::send(5), Ok(()), "send on port 5 is rc 0");
    check_eq!(
        evtchn::close(5),
        Ok(()),
        "close of port 5 while its peer is pending is rc 0"
    );
    check_eq!(
        (
            shared.is_pending(4),
            evtchn::status(DOMID_SELF, 4).map(|s| s.status)
        ),
        (true, Ok(stat::UNBOUND)),
        "closing one end leaves the peer's pending bit set (the peer is now unbound)"
    );
    check_eq!(evtchn::close(4), Ok(()), "close of port 4 is rc 0");
    check!(
        !shared.is_pending(4),
        "closing port 4 itself clears its pending bit"
    );

    let me = ctx.domid;
    check_eq!(
        evtchn::alloc_unbound(me, me),
        Ok(4),
        "alloc_unbound naming this domain by id gets port 4"
    );
    check_eq!(
        evtchn::bind_interdomain(me, 4),
        Ok(5),
        "bind_interdomain naming this domain by id gets port 5"
    );
    check_eq!(
        evtchn::status(me, 5).map(|s| (s.status, s.vcpu, s.u)),
        evtchn::status(DOMID_SELF, 5).map(|s| (s.status, s.vcpu, s.u)),
        "status naming this domain by id equals status with DOMID_SELF"
    );
    check_eq!(evtchn::close(5), Ok(()), "close of port 5 is rc 0");
    check_eq!(evtchn::close(4), Ok(()), "close of port 4 is rc 0");

    ctx.clear_events();
    check_eq!(
        evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF),
        Ok(4),
        "alloc_unbound gets port 4 again"
    );
    shared.mask(4);
    check_eq!(
        evtchn::unmask(4),
        Ok(()),
        "EVTCHNOP_unmask of a masked port that is not pending is rc 0"
    );
    check_eq!(
        (shared.is_masked(4), ctx.signal(4)),
        (false, (false, false, false)),
        "unmask of a port that is not pending clears the mask and raises nothing"
    );
    check_eq!(evtchn::close(4), Ok(()), "close of port 4 is rc 0");
    ctx.clear_events();
}

/// What EVTCHNOP_status copies back (spec §1.1, §1.2, §2.6): only on
/// success, and only `status`, `vcpu` and the union member of the state;
/// the rest of the union comes back as the guest passed it in.
pub fn status_copy_back(ctx: &Ctx) {
    const SENTINEL: [u32; 2] = [0xaaaa_aaaa, 0xbbbb_bbbb];
    let query = |port: u32, status: u32| {
        let mut arg = evtchn::EvtchnStatus {
            dom: DOMID_SELF,
            port,
            status,
            vcpu: 0x5555,
            u: SENTINEL,
            ..Default::default()
        };
        let rc = Errno::result(evtchn::op(evtchn::cmd::STATUS, &mut arg));
        (rc, arg)
    };
    let (rc, arg) = query(FAR_PORT, 0x7777);
    check_eq!(
        (rc, arg.status, arg.vcpu, arg.u),
        (Err(Errno::EINVAL), 0x7777, 0x5555, SENTINEL),
        "a failing status copies nothing back"
    );
    let (rc, arg) = query(1, 0);
    check_eq!(
        (rc, arg.status, arg.u),
        (
            Ok(0),
            stat::UNBOUND,
            [0xaaaa_0000 | u32::from(ctx.domid), SENTINEL[1]]
        ),
        "status of an unbound port writes only u.unbound.dom (2 bytes); the rest of the union comes back as passed"
    );
    check_eq!(evtchn::bind_ipi(0), Ok(4), "bind_ipi gets port 4");
    let (rc, arg) = query(4, 0);
    check_eq!(
        (rc, arg.status, arg.vcpu, arg.u),
        (Ok(0), stat::IPI, 0, SENTINEL),
        "status of an IPI port leaves the whole union as passed"
    );
    check_eq!(evtchn::close(4), Ok(()), "close of IPI port 4 is rc 0");
}
