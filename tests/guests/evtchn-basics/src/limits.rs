//! Hostile port numbers and a full port table (spec §1.4, §2.1, §7.10; §8:
//! XSA-221 "every op on every port returns a defined errno", XSA-496 "with
//! every port in use, bind_virq gives -ENOSPC and changes nothing else").
//!
//! Runs last but one: filling the table grows it to its limit for good.

use sluice_guest::errno::Errno;
use sluice_guest::evtchn::{self, DOMID_SELF, stat, virq};
use sluice_guest::{check, check_eq, println, sched};

use crate::Ctx;

/// Port numbers no operation may accept on a fresh-ish table.
const HOSTILE_PORTS: [u32; 5] = [4096, 0x7fff_ffff, 0x8000_0000, 0xffff_fffe, u32::MAX];

/// Every port-taking op on hostile port numbers fails -EINVAL.
pub fn hostile_ports(_ctx: &Ctx) {
    for port in HOSTILE_PORTS {
        let results = [
            evtchn::status(DOMID_SELF, port).map(|_| ()),
            evtchn::close(port),
            evtchn::send(port),
            evtchn::unmask(port),
            evtchn::bind_vcpu(port, 0),
            evtchn::bind_interdomain(DOMID_SELF, port).map(|_| ()),
            sched::poll(&[port], 1),
        ];
        check_eq!(
            results,
            [Err(Errno::EINVAL); 7],
            "status, close, send, unmask, bind_vcpu, bind_interdomain and poll of port {port:#x} fail -EINVAL"
        );
    }
}

/// Fills every port, checks the limit and that failing binds change nothing.
pub fn full_table(ctx: &Ctx) {
    check_eq!(
        evtchn::reset(DOMID_SELF),
        Ok(()),
        "reset(DOMID_SELF) before filling the table is rc 0"
    );
    ctx.clear_events();
    let mut last = 0;
    let mut stopped_by = Ok(0);
    for _ in 1..=4096 {
        match evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF) {
            Ok(port) if port == last + 1 => last = port,
            other => {
                stopped_by = other;
                break;
            }
        }
    }
    println!("# the port table filled up at port {last}");
    check_eq!(
        stopped_by,
        Err(Errno::ENOSPC),
        "allocation continues in order until it fails -ENOSPC"
    );
    if ctx.start_info.is_initial_domain() {
        check_eq!(
            last,
            4095,
            "an unlimited domain (Xen's dom0) gets every 2-level port up to 4095"
        );
    } else {
        check!(
            last == 1023 || last == 4095,
            "the table ends at a limit the spec names: 1023 (xl/dom0less default) or 4095 (got {last})"
        );
    }
    check_eq!(
        evtchn::bind_virq(virq::DEBUG, 0),
        Err(Errno::ENOSPC),
        "with every port in use bind_virq fails -ENOSPC"
    );
    check_eq!(
        evtchn::bind_ipi(0),
        Err(Errno::ENOSPC),
        "with every port in use bind_ipi fails -ENOSPC"
    );
    check_eq!(
        evtchn::bind_interdomain(DOMID_SELF, 1),
        Err(Errno::ENOSPC),
        "with every port in use bind_interdomain fails -ENOSPC"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, 1).map(|s| (s.status, s.remote_dom())),
        Ok((stat::UNBOUND, ctx.domid)),
        "the failed bind_interdomain left its remote port unbound"
    );
    check_eq!(
        evtchn::close(last),
        Ok(()),
        "closing the last port frees it"
    );
    check_eq!(
        evtchn::bind_virq(virq::DEBUG, 0),
        Ok(last),
        "the failed bind_virq left VIRQ_DEBUG unbound: it binds now"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, last + 1).map(|_| ()),
        Err(Errno::EINVAL),
        "the port after the last one stays invalid"
    );
    check_eq!(
        evtchn::reset(DOMID_SELF),
        Ok(()),
        "reset of the full table is rc 0"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, last).map(|s| s.status),
        Ok(stat::CLOSED),
        "after reset the last port is closed and still valid"
    );
    check_eq!(
        evtchn::alloc_unbound(DOMID_SELF, DOMID_SELF),
        Ok(1),
        "after reset allocation restarts at port 1"
    );
    check_eq!(evtchn::close(1), Ok(()), "close of port 1 is rc 0");
}
