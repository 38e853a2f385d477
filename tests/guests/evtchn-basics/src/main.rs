//! `evtchn-basics`: single-domain event-channel conformance for the 2-level
//! ABI. Every numbered TAP line is a behaviour from the spec
//! (`/work/shared/spec/xen-evtchn-abi.md` §1–§3, §5, §7.10, the "plus from
//! this page" list of §9.4 and the traps of §10) that one domain can observe
//! on its own; expected values come from the spec. Where Xen 4.17 (the
//! oracle, booting this guest as dom0) disagrees with the spec, Xen wins and
//! the test says so where it is written.
//!
//! The sections run in order and each leaves the port table in a state the
//! next one names; none depends on timing except that a periodic timer must
//! tick within a generous deadline.
#![no_std]
#![no_main]

mod abi;
mod binds;
mod faults;
mod limits;
mod ports;
mod upcalls;

use core::sync::atomic::Ordering;

use sluice_guest::evtchn::{self, DOMID_SELF, DomId, stat};
use sluice_guest::shared_info::{self, SharedInfo};
use sluice_guest::{StartInfo, check, println, vcpu};

sluice_guest::entry!(main);

/// A vcpu id no domain has (Xen and Sluice cap vcpus far below it).
pub const NO_SUCH_VCPU: u32 = 1000;
/// A port beyond the first 64-port bucket and below the 2-level limit:
/// invalid until the table grows that far.
pub const FAR_PORT: u32 = 3000;

/// What every section needs.
pub struct Ctx {
    /// The start_info page.
    pub start_info: &'static StartInfo,
    /// The mapped shared_info page.
    pub shared: &'static SharedInfo,
    /// This domain's id, as the hypervisor reports it.
    pub domid: DomId,
    /// Whether the domain has a vcpu 1 (up or down).
    pub has_vcpu1: bool,
}

impl Ctx {
    /// Clears every pending bit, vcpu 0's selector and `upcall_pending`, so
    /// that the next check sees only what the next operation did.
    pub fn clear_events(&self) {
        for word in &self.shared.evtchn_pending {
            word.store(0, Ordering::SeqCst);
        }
        let vcpu = self.shared.vcpu0();
        vcpu.evtchn_pending_sel.store(0, Ordering::SeqCst);
        vcpu.evtchn_upcall_pending.store(0, Ordering::SeqCst);
    }

    /// (pending bit, selector bit, upcall_pending) for `port` on vcpu 0.
    pub fn signal(&self, port: u32) -> (bool, bool, bool) {
        let vcpu = self.shared.vcpu0();
        (
            self.shared.is_pending(port),
            vcpu.selector_has(port),
            vcpu.upcall_pending(),
        )
    }
}

/// The domid this guest expects to have: `dom=N` from the command line (how
/// Sluice scenarios name domains), else 0 for Xen's initial domain.
fn expected_domid(start_info: &StartInfo) -> Option<DomId> {
    match start_info.arg_value("dom") {
        Some(text) => text.parse().ok(),
        None if start_info.is_initial_domain() => Some(0),
        None => None,
    }
}

fn main(start_info: &'static StartInfo) {
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return;
    };
    let has_vcpu1 = vcpu::exists(1);
    println!(
        "# evtchn-basics: vcpu 1 {}",
        if has_vcpu1 { "exists" } else { "absent" }
    );

    // What the domain has bound before the guest did anything (spec §7.7: a
    // domU's toolstack takes ports 1 and 2; Xen's dom0 should have none).
    let mut bound_at_start = 0;
    for port in 1..64 {
        if let Ok(status) = evtchn::status(DOMID_SELF, port)
            && status.status != stat::CLOSED
        {
            bound_at_start += 1;
            println!(
                "# port {port} bound at start: status {} vcpu {}",
                status.status, status.vcpu
            );
        }
    }
    println!("# ports bound at start: {bound_at_start}");

    ports::fresh_table(shared);
    let domid = ports::first_allocation(expected_domid(start_info));
    let ctx = Ctx {
        start_info,
        shared,
        domid,
        has_vcpu1,
    };
    ports::allocation(&ctx);
    ports::status_copy_back(&ctx);
    ports::loopback(&ctx);
    ports::closing(&ctx);
    binds::virq(&ctx);
    binds::ipi(&ctx);
    binds::pirq(&ctx);
    binds::bind_vcpu(&ctx);
    binds::mask_survives_close(&ctx);
    faults::bad_pointers(&ctx);
    abi::unknown_and_fifo_ops(&ctx);
    abi::command_is_an_int(&ctx);
    abi::reset(&ctx);
    upcalls::delivery(&ctx);
    upcalls::timers(&ctx);
    limits::hostile_ports(&ctx);
    limits::full_table(&ctx);
    upcalls::cleanup(&ctx);
}
