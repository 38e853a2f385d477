//! `fault`: a guest that misbehaves on purpose. It binds a port (so that
//! its destruction has something to close), says what it is about to do,
//! then executes `ud2` with no trap table registered. Under Sluice the
//! exception must crash this domain only: its state is printed as `(dN)`
//! lines, its ports are closed, and the other domains run on. (On Xen the
//! same guest as dom0 takes the host down with it, so it has no oracle.)
#![no_std]
#![no_main]

use sluice_guest::{StartInfo, check, evtchn, println};

sluice_guest::entry!(main);

fn main(_start_info: &'static StartInfo) {
    let port = evtchn::bind_ipi(0);
    check!(port.is_ok(), "bind_ipi(vcpu 0) succeeds ({port:?})");
    println!("# executing ud2 with no trap table: this domain must crash alone");
    // SAFETY: ud2 raises #UD; nothing here relies on what happens next
    // (the hypervisor crashes the domain and never returns to it).
    unsafe { core::arch::asm!("ud2") };
    check!(false, "the guest ran on after ud2");
}
