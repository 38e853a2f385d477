//! `pv-abi`: the x86_64 PV ABI that event delivery stands on, checked from
//! one domain (spec §6, §7): the hypercall page's bytes, xen_version,
//! console_io, callback_op, HYPERVISOR_iret, sched_op, vcpu_op, timers,
//! physdev_op, and the rflags a vcpu started by VCPUOP_initialise runs
//! with. Expected values come from the spec; where Xen 4.17 (the oracle)
//! disagrees, Xen wins and the check says so.
#![no_std]
#![no_main]

mod calls;
mod initial;
mod iret;
mod page;
mod timers;

use sluice_guest::{StartInfo, check, upcall, vcpu};

sluice_guest::entry!(main);

/// A vcpu id no domain has.
pub const NO_SUCH_VCPU: u32 = 1000;
/// A domid that exists nowhere.
pub const NO_SUCH_DOMAIN: u16 = 5000;
/// The first non-canonical address above the lower half.
pub const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;

fn main(start_info: &'static StartInfo) {
    if sluice_guest::shared_info::get().is_none() {
        check!(false, "shared_info is mapped");
        return;
    }
    let has_vcpu1 = vcpu::exists(1);
    page::hypercall_page();
    calls::xen_version(start_info);
    calls::console_io();
    calls::callback_op();
    upcall::unmask_vcpu();
    calls::sched_op();
    calls::vcpu_op(has_vcpu1);
    calls::physdev_op();
    calls::unknown_hypercalls();
    iret::hypervisor_iret();
    iret::hostile_frames();
    timers::set_timer_op();
    initial::initial_rflags(has_vcpu1);
    upcall::mask_vcpu();
    check!(upcall::failsafes() == 0, "no failsafe callback ran");
}
