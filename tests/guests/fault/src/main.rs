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
//! `sched-dead-dropped` (`witness`); with `release=P` it lets the other
//! domain, this guest with `await=P`, end (once it can see the end).
//!
//! With `bad-stack=<where>` it leaves an upcall pending and unmasked and
//! makes a hypercall with its stack pointer `unmapped` (a page nothing
//! maps), `readonly` (at the top of its bootstrap L4 table, which it may
//! only read) or in the `hypervisor`'s range: the bounce frame cannot be
//! written there, and the domain must crash (spec §7.4), the hypervisor
//! unharmed. With `bad-iret-frame` it calls HYPERVISOR_iret with its stack
//! pointer on an unmapped page: the frame cannot be read, and the domain
//! must crash (spec §7.5); with `bad-iret-cs`, on a frame whose cs has RPL
//! 3 (a return to guest user mode, which Sluice's domains cannot make):
//! the domain must crash too.
#![no_std]
#![no_main]

use core::sync::atomic::Ordering;

use sluice_guest::errno::Errno;
use sluice_guest::hypercall::{hypercall5, nr};
use sluice_guest::{StartInfo, check, evtchn, println, shared_info, upcall};

mod iret;
mod witness;

sluice_guest::entry!(main);

/// The first address past the lower canonical half.
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;
/// A guest address nothing maps (the guest lives at the top of the
/// address space).
const UNMAPPED: u64 = 0x0000_4000_0000_0000;
/// The start of the hypervisor's range (spec §7.4: a frame there crashes).
const HYPERVISOR_RANGE: u64 = 0xffff_8000_0000_0000;
/// A HYPERVISOR_iret frame `[rax, r11, rcx, flags, rip, cs, rflags, rsp,
/// ss]` back to guest user mode: cs = FLAT_RING3_CS64 with RPL 3.
static USER_MODE_IRET_FRAME: [u64; 9] = [0, 0, 0, 0, 0x1000, 0xe033, 0x202, 0x2000, 0xe02b];

fn main(start_info: &'static StartInfo) {
    if start_info.has_arg("witness") {
        witness::witness(start_info);
        return;
    }
    if let Some(port) = start_info.arg_value("await") {
        witness::await_release(port);
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
    if let Some(place) = start_info.arg_value("bad-stack") {
        let stack = match place {
            "unmapped" => UNMAPPED + 0x100,
            "readonly" => start_info.pt_base + 4096,
            "hypervisor" => HYPERVISOR_RANGE + 0x40,
            _ => {
                check!(false, "bad-stack={place} names a known place");
                return;
            }
        };
        bad_stack(port, stack);
        return;
    }
    if start_info.has_arg("bad-iret-cs") {
        println!("# HYPERVISOR_iret to cs=0xe033 (RPL 3): this domain must crash alone");
        let frame = &raw const USER_MODE_IRET_FRAME;
        // SAFETY: see `hypercall_on_stack`: the hypervisor never returns;
        // the frame is a static it only reads.
        unsafe { hypercall_on_stack(u64::from(nr::IRET), frame as u64) }
    }
    if start_info.has_arg("bad-iret-frame") {
        println!("# HYPERVISOR_iret with rsp={UNMAPPED:#x}: this domain must crash alone");
        // SAFETY: see `hypercall_on_stack`: the hypervisor never returns.
        unsafe { hypercall_on_stack(u64::from(nr::IRET), UNMAPPED) }
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

/// Leaves an upcall pending on `port` with the vcpu unmasked, then makes a
/// hypercall with `rsp` = `stack`: the bounce frame on its way back cannot
/// be written.
fn bad_stack(port: Result<evtchn::Port, Errno>, stack: u64) {
    register_callbacks();
    let sent = port.and_then(evtchn::send);
    check!(sent.is_ok(), "send on the IPI port (vcpu masked) is rc 0");
    let Some(info) = shared_info::vcpu_info(0) else {
        check!(false, "vcpu 0 has a vcpu_info");
        return;
    };
    check!(
        info.evtchn_upcall_pending.load(Ordering::SeqCst) != 0,
        "the send left an upcall pending"
    );
    println!("# a hypercall with rsp={stack:#x} and an upcall due: this domain must crash alone");
    // Unmasked without a hypercall: the upcall is due at the next one.
    info.evtchn_upcall_mask.store(0, Ordering::SeqCst);
    // SAFETY: see `hypercall_on_stack`: the hypervisor never returns.
    unsafe { hypercall_on_stack(u64::from(nr::XEN_VERSION), stack) }
}

/// Registers the runtime's event and failsafe callbacks (the upcall is due
/// to a good callback: only the stack is bad).
fn register_callbacks() {
    let registered = upcall::register_callbacks();
    check!(
        registered.is_ok(),
        "event and failsafe callbacks registered ({registered:?})"
    );
}

/// Hypercall `number` (its arguments 0) with `syscall` straight from here,
/// the stack pointer set to `stack` first.
///
/// # Safety
/// Never returns: the hypervisor is expected to crash the domain on the
/// way back. Should it return anyway, the guest runs on with `stack`, and
/// its next push faults (which crashes the domain with another message).
unsafe fn hypercall_on_stack(number: u64, stack: u64) -> ! {
    // SAFETY: the caller accepts that this never returns; the registers
    // written are inputs or dead from here on.
    unsafe {
        core::arch::asm!(
            "mov rsp, {stack}",
            "syscall",
            "ud2",
            stack = in(reg) stack,
            in("rax") number,
            in("rdi") 0u64,
            in("rsi") 0u64,
            options(noreturn),
        )
    }
}
