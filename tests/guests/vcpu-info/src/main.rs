//! `vcpu-info`: moving a vcpu's vcpu_info out of shared_info with
//! VCPUOP_register_vcpu_info (spec §3.6; §9.4 "spurious upcall after
//! register_vcpu_info").
//!
//! Checked (4.17 rules): offsets past 4096 - 64 or not 8-aligned fail
//! -ENXIO; the current contents are copied to the new place, the selector
//! becomes all ones and `upcall_pending` is set, so one spurious upcall
//! always follows; a second registration fails -EINVAL; events and time
//! then use the new place only; another vcpu can be registered only while
//! it is down, and its spurious upcall arrives when it comes back up.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering};

use sluice_guest::errno::Errno;
use sluice_guest::evtchn;
use sluice_guest::shared_info::{self, SharedInfo, VcpuInfo};
use sluice_guest::{StartInfo, check, check_eq, sched, smp, tap, time, upcall, vcpu};

sluice_guest::entry!(main);

/// Set by vcpu 1 once it runs.
static VCPU1_READY: AtomicBool = AtomicBool::new(false);

fn vcpu1_entry(_vcpu: u32) {
    upcall::unmask_vcpu();
    VCPU1_READY.store(true, Ordering::SeqCst);
}

/// Spins up to 2 s (events enabled) until `done` holds.
fn wait_for(done: impl Fn() -> bool) -> bool {
    let Some(start) = time::now_ns() else {
        return done();
    };
    while !done() {
        if time::now_ns().is_none_or(|now| now > start + 2_000_000_000) {
            return done();
        }
        core::hint::spin_loop();
    }
    true
}

fn main(_start_info: &'static StartInfo) {
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return;
    };
    check_eq!(
        upcall::register_callbacks(),
        Ok(()),
        "callback_op registers the event and failsafe callbacks"
    );
    let ipi = evtchn::bind_ipi(0);
    check_eq!(ipi, Ok(1), "bind_ipi(vcpu 0) gets port 1");
    let Ok(ipi) = ipi else {
        return;
    };

    check_eq!(
        shared_info::register_vcpu_info(0, 4096 - 64 + 8),
        Err(Errno::ENXIO),
        "register_vcpu_info with the area crossing the page end fails -ENXIO"
    );
    check_eq!(
        shared_info::register_vcpu_info(0, 4),
        Err(Errno::ENXIO),
        "register_vcpu_info at an offset not 8-aligned fails -ENXIO"
    );
    vcpu0_moves(shared, ipi);
    other_vcpu(shared);
    upcall::mask_vcpu();
    check_eq!(upcall::failsafes(), 0, "no failsafe callback ran");
}

/// vcpu 0's own registration.
fn vcpu0_moves(shared: &SharedInfo, ipi: u32) {
    let old = shared.vcpu0();
    check!(
        old.upcall_masked(),
        "before registration vcpu 0 is masked (in its shared_info slot)"
    );
    check_eq!(
        shared_info::register_vcpu_info(0, 64),
        Ok(()),
        "register_vcpu_info(vcpu 0, offset 64) is rc 0"
    );
    let Some(new) = shared_info::vcpu_info(0) else {
        return;
    };
    check!(
        !core::ptr::eq(new, old),
        "the runtime now uses the registered area"
    );
    check!(
        new.upcall_masked(),
        "the current vcpu_info was copied: the new area is masked too"
    );
    check_eq!(
        new.evtchn_pending_sel.load(Ordering::SeqCst),
        u64::MAX,
        "registration sets the new area's evtchn_pending_sel to all ones"
    );
    check!(
        new.upcall_pending(),
        "registration sets the new area's evtchn_upcall_pending"
    );
    let version = new.time.version.load(Ordering::SeqCst);
    check!(
        version != 0 && version.is_multiple_of(2) && time::now_ns().is_some(),
        "the new area carries a published time record (version {version})"
    );
    check_eq!(
        shared_info::register_vcpu_info(0, 128),
        Err(Errno::EINVAL),
        "a second register_vcpu_info for vcpu 0 fails -EINVAL"
    );

    upcall::reset_counters();
    upcall::unmask_vcpu();
    let spurious = upcall::last_upcall();
    check_eq!(
        (upcall::upcalls(), upcall::events(), spurious.selector),
        (1, 0, u64::MAX),
        "unmasking delivers one spurious upcall: selector all ones, no port pending"
    );

    old.evtchn_pending_sel.store(0, Ordering::SeqCst);
    old.evtchn_upcall_pending.store(0, Ordering::SeqCst);
    check_eq!(
        evtchn::send(ipi),
        Ok(()),
        "send on the IPI after the move is rc 0"
    );
    check_eq!(
        upcall::port_events(ipi),
        1,
        "the event is delivered through the registered area"
    );
    check!(
        !old.upcall_pending() && old.evtchn_pending_sel.load(Ordering::SeqCst) == 0,
        "the old shared_info slot is no longer written"
    );
    check_eq!(
        sched::yield_now(),
        Ok(()),
        "SCHEDOP_yield after the move is rc 0"
    );
    check!(
        time::now_ns().is_some(),
        "system time still reads from the registered area"
    );
}

/// Registering another vcpu: refused while it is up, accepted while down.
fn other_vcpu(shared: &SharedInfo) {
    if !vcpu::exists(1) {
        tap::skip(
            format_args!("register_vcpu_info of another vcpu"),
            "the domain has no vcpu 1",
        );
        return;
    }
    check_eq!(smp::start(1, vcpu1_entry), Ok(()), "vcpu 1 starts");
    check!(
        wait_for(|| VCPU1_READY.load(Ordering::SeqCst)),
        "vcpu 1 runs"
    );
    check_eq!(
        shared_info::register_vcpu_info(1, 0),
        Err(Errno::EINVAL),
        "register_vcpu_info of another vcpu that is up fails -EINVAL"
    );
    check_eq!(vcpu::down(1), Ok(()), "VCPUOP_down(1) is rc 0");
    let old: Option<&VcpuInfo> = shared.vcpu(1);
    check_eq!(
        shared_info::register_vcpu_info(1, 0),
        Ok(()),
        "register_vcpu_info of vcpu 1 while it is down is rc 0"
    );
    check!(
        shared_info::vcpu_info(1)
            .is_some_and(|v| old.is_none_or(|o| !core::ptr::eq(v, o)) && v.upcall_pending()),
        "vcpu 1's new area has upcall_pending set"
    );
    let before = upcall::upcalls_on(1);
    check_eq!(vcpu::up(1), Ok(()), "VCPUOP_up(1) is rc 0");
    check!(
        wait_for(|| upcall::upcalls_on(1) > before),
        "vcpu 1's spurious upcall arrives when it is up again"
    );
    let ipi1 = evtchn::bind_ipi(1);
    check!(ipi1.is_ok(), "bind_ipi(vcpu 1) succeeds ({ipi1:?})");
    if let Ok(ipi1) = ipi1 {
        let before = upcall::port_events(ipi1);
        check_eq!(evtchn::send(ipi1), Ok(()), "send on vcpu 1's IPI is rc 0");
        check!(
            wait_for(|| upcall::port_events(ipi1) > before) && upcall::last_vcpu() == Some(1),
            "vcpu 1 handles its IPI through its registered area"
        );
    }
}
