//! VIRQ and IPI bindings, the bind_vcpu matrix, and what survives a close
//! (spec §2.7, §2.8, §2.10, §2.1 "Freeing", §5; §10 traps 4, 7, 14).
//!
//! On entry ports 1..3 are unbound and 4 upward free; every function leaves
//! it that way.

use sluice_guest::errno::Errno;
use sluice_guest::evtchn::{self, DOMID_SELF, stat, virq};
use sluice_guest::{check, check_eq, tap};

use crate::{Ctx, FAR_PORT, NO_SUCH_VCPU};

/// (status, virq, vcpu) of a port.
fn virq_status(port: u32) -> Result<(u32, u32, u32), Errno> {
    evtchn::status(DOMID_SELF, port).map(|s| (s.status, s.virq(), s.vcpu))
}

/// Skips a test that needs vcpu 1.
fn skip_without_vcpu1(description: core::fmt::Arguments<'_>) {
    tap::skip(description, "the domain has no vcpu 1");
}

/// Per-vcpu and global VIRQs.
pub fn virq(ctx: &Ctx) {
    check_eq!(
        evtchn::bind_virq(virq::DEBUG, 0),
        Ok(4),
        "bind_virq(VIRQ_DEBUG, vcpu 0) gets the lowest free port (4)"
    );
    check_eq!(
        virq_status(4),
        Ok((stat::VIRQ, virq::DEBUG, 0)),
        "status of a VIRQ port: virq, VIRQ_DEBUG, vcpu 0"
    );
    check_eq!(
        evtchn::bind_virq(virq::DEBUG, 0),
        Err(Errno::EEXIST),
        "binding VIRQ_DEBUG twice on vcpu 0 fails -EEXIST"
    );
    check_eq!(
        evtchn::send(4),
        Err(Errno::EINVAL),
        "send on a VIRQ port fails -EINVAL"
    );
    check_eq!(
        evtchn::bind_vcpu(4, 0),
        Err(Errno::EINVAL),
        "bind_vcpu of a per-vcpu VIRQ fails -EINVAL"
    );
    check_eq!(
        evtchn::bind_virq(virq::DEBUG, NO_SUCH_VCPU),
        Err(Errno::ENOENT),
        "bind_virq of a per-vcpu VIRQ on a vcpu that does not exist fails -ENOENT"
    );
    if ctx.has_vcpu1 {
        check_eq!(
            evtchn::bind_virq(virq::DEBUG, 1),
            Ok(5),
            "a per-vcpu VIRQ binds once per vcpu: vcpu 1 gets port 5"
        );
        check_eq!(
            virq_status(5),
            Ok((stat::VIRQ, virq::DEBUG, 1)),
            "status of the vcpu 1 VIRQ port names vcpu 1"
        );
        check_eq!(
            evtchn::close(5),
            Ok(()),
            "close of the vcpu 1 VIRQ port is rc 0"
        );
    } else {
        skip_without_vcpu1(format_args!("a per-vcpu VIRQ binds once per vcpu"));
    }

    check_eq!(
        evtchn::bind_virq(virq::DOM_EXC, 1),
        Err(Errno::EINVAL),
        "bind_virq of a global VIRQ (VIRQ_DOM_EXC) on vcpu 1 fails -EINVAL"
    );
    check_eq!(
        evtchn::bind_virq(virq::DOM_EXC, 0),
        Ok(5),
        "bind_virq(VIRQ_DOM_EXC, vcpu 0) gets port 5"
    );
    check_eq!(
        virq_status(5),
        Ok((stat::VIRQ, virq::DOM_EXC, 0)),
        "status of the global VIRQ port: virq, VIRQ_DOM_EXC, vcpu 0"
    );
    check_eq!(
        evtchn::bind_virq(virq::DOM_EXC, 0),
        Err(Errno::EEXIST),
        "binding a global VIRQ twice fails -EEXIST"
    );
    check_eq!(
        evtchn::bind_vcpu(5, 0),
        Ok(()),
        "bind_vcpu of a global VIRQ port is rc 0"
    );
    if ctx.has_vcpu1 {
        check_eq!(
            evtchn::bind_vcpu(5, 1),
            Ok(()),
            "a global VIRQ port moves to vcpu 1 with bind_vcpu"
        );
        check_eq!(
            virq_status(5),
            Ok((stat::VIRQ, virq::DOM_EXC, 1)),
            "status of the moved global VIRQ port names vcpu 1"
        );
        check_eq!(
            evtchn::bind_virq(virq::DOM_EXC, 0),
            Err(Errno::EEXIST),
            "a moved global VIRQ is still bound (-EEXIST): its mapping stays in vcpu 0's table"
        );
    } else {
        skip_without_vcpu1(format_args!(
            "a global VIRQ port moves to vcpu 1 with bind_vcpu"
        ));
    }
    check_eq!(
        evtchn::close(5),
        Ok(()),
        "close of the global VIRQ port is rc 0"
    );
    check_eq!(
        evtchn::bind_virq(virq::DOM_EXC, 0),
        Ok(5),
        "a closed global VIRQ can be bound again"
    );
    check_eq!(
        evtchn::close(5),
        Ok(()),
        "close of the re-bound global VIRQ port is rc 0"
    );

    check_eq!(
        evtchn::bind_virq(virq::NR_VIRQS, 0),
        Err(Errno::EINVAL),
        "bind_virq(24) (past NR_VIRQS) fails -EINVAL"
    );
    check_eq!(
        evtchn::bind_virq(u32::MAX, 0),
        Err(Errno::EINVAL),
        "bind_virq(-1) fails -EINVAL"
    );
    check_eq!(
        evtchn::bind_virq(virq::NR_VIRQS, NO_SUCH_VCPU),
        Err(Errno::EINVAL),
        "a bad virq is reported (-EINVAL) before a bad vcpu"
    );

    check_eq!(
        evtchn::close(4),
        Ok(()),
        "close of the VIRQ_DEBUG port is rc 0"
    );
    check_eq!(
        evtchn::bind_virq(virq::DEBUG, 0),
        Ok(4),
        "a closed per-vcpu VIRQ can be bound again (port 4)"
    );
    check_eq!(
        evtchn::close(4),
        Ok(()),
        "close of the re-bound VIRQ_DEBUG port is rc 0"
    );
}

/// IPI ports.
pub fn ipi(ctx: &Ctx) {
    check_eq!(evtchn::bind_ipi(0), Ok(4), "bind_ipi(vcpu 0) gets port 4");
    check_eq!(
        evtchn::status(DOMID_SELF, 4).map(|s| (s.status, s.vcpu)),
        Ok((stat::IPI, 0)),
        "status of an IPI port: ipi, vcpu 0"
    );
    check_eq!(
        evtchn::bind_vcpu(4, 0),
        Err(Errno::EINVAL),
        "bind_vcpu of an IPI port fails -EINVAL"
    );
    check_eq!(
        evtchn::bind_ipi(NO_SUCH_VCPU),
        Err(Errno::ENOENT),
        "bind_ipi on a vcpu that does not exist fails -ENOENT"
    );
    ctx.clear_events();
    check_eq!(evtchn::send(4), Ok(()), "send on an IPI port is rc 0");
    check_eq!(
        ctx.signal(4),
        (true, true, true),
        "send on an IPI port sets that port pending toward its vcpu"
    );
    ctx.clear_events();

    if ctx.has_vcpu1 {
        check_eq!(evtchn::bind_ipi(1), Ok(5), "bind_ipi(vcpu 1) gets port 5");
        check_eq!(
            evtchn::send(5),
            Ok(()),
            "send on the vcpu 1 IPI port is rc 0"
        );
        let vcpu1 = ctx.shared.vcpu(1);
        check!(
            ctx.shared.is_pending(5)
                && vcpu1.is_some_and(|v| v.selector_has(5) && v.upcall_pending())
                && !ctx.shared.vcpu0().selector_has(5),
            "an IPI bound to vcpu 1 flags vcpu 1's selector and upcall_pending, not vcpu 0's"
        );
        check_eq!(
            evtchn::close(5),
            Ok(()),
            "close of the vcpu 1 IPI port is rc 0"
        );
        if let Some(vcpu1) = vcpu1 {
            vcpu1
                .evtchn_pending_sel
                .store(0, core::sync::atomic::Ordering::SeqCst);
            vcpu1
                .evtchn_upcall_pending
                .store(0, core::sync::atomic::Ordering::SeqCst);
        }
    } else {
        skip_without_vcpu1(format_args!("an IPI bound to vcpu 1 flags vcpu 1"));
    }
    check_eq!(evtchn::close(4), Ok(()), "close of an IPI port is rc 0");
    check_eq!(
        evtchn::status(DOMID_SELF, 4).map(|s| s.status),
        Ok(stat::CLOSED),
        "a closed IPI port reads closed"
    );
    ctx.clear_events();
}

/// PIRQ binding errors a domain without mapped PIRQs can see (spec §2.9):
/// a pirq beyond the domain's range, and one not mapped to a host IRQ.
pub fn pirq(_ctx: &Ctx) {
    check_eq!(
        evtchn::bind_pirq(1_000_000, 0),
        Err(Errno::EINVAL),
        "bind_pirq of a pirq beyond nr_pirqs fails -EINVAL"
    );
    check_eq!(
        evtchn::bind_pirq(100, 0),
        Err(Errno::EPERM),
        "bind_pirq of a pirq not mapped to a host IRQ fails -EPERM"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, 4).map(|s| s.status),
        Ok(stat::CLOSED),
        "the failed bind_pirq calls left no port behind"
    );
}

/// The bind_vcpu matrix beyond VIRQ and IPI ports.
pub fn bind_vcpu(ctx: &Ctx) {
    check_eq!(
        evtchn::bind_vcpu(FAR_PORT, NO_SUCH_VCPU),
        Err(Errno::ENOENT),
        "bind_vcpu checks the vcpu (-ENOENT) before the port"
    );
    check_eq!(
        evtchn::bind_vcpu(FAR_PORT, 0),
        Err(Errno::EINVAL),
        "bind_vcpu of a port beyond the table fails -EINVAL"
    );
    check_eq!(
        evtchn::bind_vcpu(1, 0),
        Ok(()),
        "bind_vcpu of an unbound port is rc 0"
    );
    check_eq!(
        evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF),
        Ok(4),
        "alloc_unbound for an interdomain pair gets port 4"
    );
    check_eq!(
        evtchn::bind_interdomain(DOMID_SELF, 4),
        Ok(5),
        "bind_interdomain for the pair gets port 5"
    );
    check_eq!(
        evtchn::bind_vcpu(5, 0),
        Ok(()),
        "bind_vcpu of an interdomain port is rc 0"
    );

    if ctx.has_vcpu1 {
        let vcpu1 = ctx.shared.vcpu(1);
        check_eq!(
            evtchn::bind_vcpu(5, 1),
            Ok(()),
            "bind_vcpu moves an interdomain port to vcpu 1"
        );
        check_eq!(
            evtchn::status(DOMID_SELF, 5).map(|s| s.vcpu),
            Ok(1),
            "status of the moved port names vcpu 1"
        );
        ctx.clear_events();
        check_eq!(
            evtchn::send(4),
            Ok(()),
            "send toward the moved port is rc 0"
        );
        check!(
            ctx.shared.is_pending(5)
                && vcpu1.is_some_and(|v| v.selector_has(5))
                && !ctx.shared.vcpu0().selector_has(5),
            "an event on the moved port flags vcpu 1's selector, not vcpu 0's"
        );
        // Unmask raises toward the notify vcpu (spec §3.3).
        ctx.shared.mask(5);
        ctx.clear_events();
        if let Some(vcpu1) = vcpu1 {
            vcpu1
                .evtchn_pending_sel
                .store(0, core::sync::atomic::Ordering::SeqCst);
            vcpu1
                .evtchn_upcall_pending
                .store(0, core::sync::atomic::Ordering::SeqCst);
        }
        check_eq!(
            evtchn::send(4),
            Ok(()),
            "send toward the masked, moved port is rc 0"
        );
        check_eq!(
            evtchn::unmask(5),
            Ok(()),
            "EVTCHNOP_unmask of the moved port is rc 0"
        );
        check!(
            vcpu1.is_some_and(|v| v.selector_has(5) && v.upcall_pending())
                && !ctx.shared.vcpu0().selector_has(5)
                && !ctx.shared.vcpu0().upcall_pending(),
            "EVTCHNOP_unmask raises the event toward the port's notify vcpu (vcpu 1), not the caller"
        );
        check_eq!(
            evtchn::bind_vcpu(5, 0),
            Ok(()),
            "moving the pending port back to vcpu 0 is rc 0"
        );
        check!(
            ctx.shared.is_pending(5) && !ctx.shared.vcpu0().selector_has(5),
            "bind_vcpu re-raises nothing: the pending port leaves vcpu 0's selector clear"
        );
        if let Some(vcpu1) = vcpu1 {
            vcpu1
                .evtchn_pending_sel
                .store(0, core::sync::atomic::Ordering::SeqCst);
            vcpu1
                .evtchn_upcall_pending
                .store(0, core::sync::atomic::Ordering::SeqCst);
        }
    } else {
        skip_without_vcpu1(format_args!(
            "bind_vcpu moves an interdomain port to vcpu 1"
        ));
    }
    check_eq!(evtchn::close(4), Ok(()), "close of port 4 is rc 0");
    check_eq!(evtchn::close(5), Ok(()), "close of port 5 is rc 0");
    ctx.clear_events();

    if ctx.has_vcpu1 {
        check_eq!(
            evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF),
            Ok(4),
            "alloc_unbound gets port 4"
        );
        check_eq!(
            evtchn::bind_vcpu(4, 1),
            Ok(()),
            "bind_vcpu of unbound port 4 to vcpu 1 is rc 0"
        );
        check_eq!(
            evtchn::bind_interdomain(DOMID_SELF, 4),
            Ok(5),
            "binding to port 4 gets port 5"
        );
        check_eq!(
            (
                evtchn::status(DOMID_SELF, 4).map(|s| s.vcpu),
                evtchn::status(DOMID_SELF, 5).map(|s| s.vcpu)
            ),
            (Ok(1), Ok(0)),
            "an unbound port keeps its notify vcpu after the peer binds; the new end notifies vcpu 0"
        );
        check_eq!(evtchn::close(5), Ok(()), "close of port 5 is rc 0");
        check_eq!(
            evtchn::close(4),
            Ok(()),
            "close of port 4 (notify vcpu 1) is rc 0"
        );
        check_eq!(
            evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF),
            Ok(4),
            "port 4 is allocated again"
        );
        check_eq!(
            evtchn::status(DOMID_SELF, 4).map(|s| s.vcpu),
            Ok(0),
            "a reused port notifies vcpu 0 again"
        );
        check_eq!(evtchn::close(4), Ok(()), "close of the reused port is rc 0");
    } else {
        skip_without_vcpu1(format_args!("a reused port notifies vcpu 0 again"));
    }
    ctx.clear_events();
}

/// The guest's mask bit belongs to the guest: close leaves it (spec §2.1).
pub fn mask_survives_close(ctx: &Ctx) {
    check_eq!(
        evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF),
        Ok(4),
        "alloc_unbound gets port 4"
    );
    ctx.shared.mask(4);
    check_eq!(evtchn::close(4), Ok(()), "close of masked port 4 is rc 0");
    check!(
        ctx.shared.is_masked(4),
        "close leaves the port's mask bit set"
    );
    check_eq!(
        evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF),
        Ok(4),
        "port 4 is allocated again"
    );
    check!(
        ctx.shared.is_masked(4),
        "the reused port inherits the old mask bit"
    );
    ctx.shared.clear_mask(4);
    check_eq!(evtchn::close(4), Ok(()), "close of the reused port is rc 0");
}
