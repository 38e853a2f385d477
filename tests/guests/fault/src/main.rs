//! `fault`: a guest that misbehaves on purpose. It binds a port (so that
//! its destruction has something to close), says what it is about to do,
//! then executes `ud2` with no trap table registered. Under Sluice the
//! exception must crash this domain only: its state is printed as `(dN)`
//! lines, its ports are closed, and the other domains run on. (On Xen the
//! same guest as dom0 takes the host down with it, so it has no oracle.)
//!
//! With `bad-callback` on its command line it misbehaves otherwise: it
//! registers a non-canonical event callback with `set_callbacks` (which
//! takes any address, as on Xen) and raises an event. The CPU cannot return
//! to such an address (`iretq` faults in ring 0 on real CPUs), so the
//! upcall must crash this domain only, with the address named.
//!
//! With `bad-iret=<case>` it returns through HYPERVISOR_iret to a frame
//! the CPU cannot return to (`iret`); that too must crash this domain
//! only.
//!
//! With `witness` it misbehaves in nothing: it is the privileged domain
//! that waits for another one to end, for the run-queue check of scenario
//! `sched-dead-dropped` (`witness`).
#![no_std]
#![no_main]

use sluice_guest::errno::Errno;
use sluice_guest::hypercall::{hypercall5, nr};
use sluice_guest::{StartInfo, check, evtchn, println, upcall};

mod iret;
mod witness;

sluice_guest::entry!(main);

/// The first address past the lower canonical half.
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;

fn main(start_info: &'static StartInfo) {
    if start_info.has_arg("witness") {
        witness::witness();
        return;
    }
    let port = evtchn::bind_ipi(0);
    check!(port.is_ok(), "bind_ipi(vcpu 0) succeeds ({port:?})");
    if let Some(case) = start_info.arg_value("bad-iret") {
        iret::bad_iret(case);
        return;
    }
    if start_info.has_arg("bad-callback") {
        bad_callback(port);
        return;
    }
    println!("# executing ud2 with no trap table: this domain must crash alone");
    // SAFETY: ud2 raises #UD; nothing here relies on what happens next
    // (the hypervisor crashes the domain and never returns to it).
    unsafe { core::arch::asm!("ud2") };
    check!(false, "the guest ran on after ud2");
}

/// Registers a non-canonical event callback and raises an upcall on `port`.
fn bad_callback(port: Result<evtchn::Port, Errno>) {
    // SAFETY: set_callbacks takes addresses only; it reads no guest memory.
    let rc = unsafe { hypercall5(nr::SET_CALLBACKS, NON_CANONICAL, NON_CANONICAL, 0, 0, 0) };
    check!(
        rc == 0,
        "set_callbacks with a non-canonical event callback is rc 0"
    );
    let sent = port.and_then(evtchn::send);
    check!(sent.is_ok(), "send on the IPI port (vcpu masked) is rc 0");
    println!("# unmasking: the upcall to {NON_CANONICAL:#x} must crash this domain alone");
    upcall::unmask_vcpu();
    check!(
        false,
        "the guest ran on after an upcall to a non-canonical callback"
    );
}
