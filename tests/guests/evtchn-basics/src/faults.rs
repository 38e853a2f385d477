//! Guest pointers the hypervisor must refuse, and a result it cannot copy
//! out (spec §1.1, DESIGN "Guest pointers are untrusted"; §10 trap 15).
//!
//! On entry ports 1..3 are unbound and 4 upward free; on exit too.

use sluice_guest::errno::Errno;
use sluice_guest::evtchn::{self, DOMID_SELF, cmd, stat};
use sluice_guest::{check_eq, println, tap};

use crate::Ctx;

/// An address no PV guest maps: the first page above 4 KiB is left out of
/// every initial mapping (Xen's and Sluice's images sit at the top).
const UNMAPPED: u64 = 0x1000;
/// The first byte of the hypervisor's reserved range.
const HYPERVISOR_RANGE: u64 = 0xffff_8000_0000_0000;
/// The first non-canonical address above the lower half.
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;

/// Raw op with an address the hypervisor must reject.
fn op_at(command: u32, address: u64) -> Result<i64, Errno> {
    // SAFETY: the callers pass only addresses the guest has not mapped, the
    // hypervisor's own range or a non-canonical address: nothing of the
    // guest's can be written there.
    Errno::result(unsafe { evtchn::op_raw(command, address) })
}

/// Bad argument pointers give -EFAULT before anything else; a failed
/// copy-out after a successful bind leaves the port allocated.
pub fn bad_pointers(ctx: &Ctx) {
    check_eq!(
        op_at(cmd::STATUS, UNMAPPED),
        Err(Errno::EFAULT),
        "status with an unmapped argument pointer fails -EFAULT"
    );
    check_eq!(
        op_at(cmd::CLOSE, UNMAPPED),
        Err(Errno::EFAULT),
        "close with an unmapped argument pointer fails -EFAULT"
    );
    check_eq!(
        op_at(cmd::ALLOC_UNBOUND, HYPERVISOR_RANGE),
        Err(Errno::EFAULT),
        "alloc_unbound with a pointer into the hypervisor's range fails -EFAULT"
    );
    check_eq!(
        op_at(cmd::SEND, NON_CANONICAL),
        Err(Errno::EFAULT),
        "send with a non-canonical argument pointer fails -EFAULT"
    );
    check_eq!(
        evtchn::status(DOMID_SELF, 4).map(|s| s.status),
        Ok(stat::CLOSED),
        "the faulting calls allocated nothing: port 4 is still free"
    );

    // The bootstrap L4 table is mapped read-only (spec §7.9). Its first
    // entry is empty for an image at the top of the address space, so as a
    // bind_ipi argument it reads vcpu 0: the bind succeeds and the port
    // cannot be copied out.
    let l4 = ctx.start_info.pt_base;
    // SAFETY: pt_base is the virtual address of the guest's top-level page
    // table, mapped readable for the guest's life; reading 4 bytes is fine.
    let first_entry = unsafe { core::ptr::read_volatile(l4 as *const u32) };
    if first_entry != 0 {
        tap::skip(
            format_args!("bind_ipi whose copy-out faults keeps its port"),
            "L4 entry 0 is in use",
        );
        return;
    }
    // SAFETY: the page is a page-table page the guest may only read; a
    // hypervisor that wrote the result there anyway would put a
    // not-present entry (port << 32) into slot 0, which maps nothing the
    // guest uses.
    let rc = Errno::result(unsafe { evtchn::op_raw(cmd::BIND_IPI, l4) });
    check_eq!(
        rc,
        Err(Errno::EFAULT),
        "bind_ipi whose result cannot be copied out fails -EFAULT"
    );
    let status = evtchn::status(DOMID_SELF, 4).map(|s| (s.status, s.vcpu));
    check_eq!(
        status,
        Ok((stat::IPI, 0)),
        "the failed copy-out does not undo the bind: port 4 is an IPI port"
    );
    if status.is_ok_and(|(state, _)| state != stat::CLOSED) {
        check_eq!(
            evtchn::close(4),
            Ok(()),
            "close of the orphaned IPI port is rc 0"
        );
    }
    println!("# read-only L4 at {l4:#x} used for the copy-out check");
}
