//! The bench guest's own event callbacks, for the rows that time the upcall
//! itself (`send-upcall-entry`, `send-upcall-iret`, `ipi-self` and their
//! FIFO twins); the `*-handler` rows keep the runtime's callback
//! ([`sluice_guest::upcall`]), and so does every other guest.
//!
//! The runtime's callback is a test instrument: before its demultiplexer
//! reaches a handler it counts upcalls per vcpu, finds the current vcpu by
//! comparing its stack pointer with every secondary stack, stores the
//! bounce frame's slots for the frame tests, counts every event and checks
//! which vcpu a port belongs to (146 instructions from its first
//! instruction to a 2-level handler's, 207 up to the HYPERVISOR_iret
//! `syscall`; 185 and 253 on FIFO; counted with the TSC under `-icount`).
//! A kernel's callback does none of that, so timing the upcall through it
//! says more about the instrument than about the hypervisor.
//!
//! [`bench_event_callback`] is what a kernel's callback does, and nothing
//! else. Its entry and exit are the runtime's (pop rcx and r11, save every
//! general-purpose register, call the Rust half on a 16-byte aligned stack,
//! restore, HYPERVISOR_iret with `flags` 0); its Rust half, [`consume`],
//! is a complete consumer for a single-vcpu domain:
//!
//! * 2-level (spec §3.7): clear `evtchn_upcall_pending`, take
//!   `evtchn_pending_sel` with an exchange, and for each selected word
//!   handle every bit of `pending & !mask`, clearing the pending bit before
//!   calling the port's handler; repeat while `evtchn_upcall_pending` was
//!   set again meanwhile;
//! * FIFO: clear `evtchn_upcall_pending` and walk the ready queues with the
//!   runtime's queue consumer ([`sluice_guest::fifo::consume`], spec §4.5),
//!   which has no test counters; repeat likewise.
//!
//! Counted the same way: 75 instructions from its first instruction to a
//! 2-level handler's, 132 up to the HYPERVISOR_iret `syscall`; 160 and 228
//! on FIFO, where the runtime's queue consumer does most of the work.
//!
//! Ports without a handler are consumed and dropped, as a kernel drops an
//! event nobody bound. There is one vcpu, so every port in the bitmap is
//! this vcpu's: a domain with several vcpus would also leave the ports of
//! other vcpus alone, as the runtime's demultiplexer does.
//!
//! [`bench_stamped_callback`] reads the TSC into [`ENTRY_TSC`] at the
//! callback's entry, before anything else runs: its first two instructions
//! save rax (the interrupted hypercall's result) and rdx, the third is
//! `rdtsc`. It then restores both and continues in
//! [`bench_event_callback`], so events are consumed and handlers run as
//! with the plain one.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use sluice_guest::errno::Errno;
use sluice_guest::fifo;
use sluice_guest::hypercall::{STUB_SIZE, nr};
use sluice_guest::shared_info;
use sluice_guest::upcall::{self, CALLBACKTYPE_EVENT, Handler, MAX_PORTS};

/// The TSC read by [`bench_stamped_callback`]'s third instruction.
pub static ENTRY_TSC: AtomicU64 = AtomicU64::new(0);

/// Handlers by port, as `fn` addresses; 0 = none.
static HANDLERS: [AtomicUsize; MAX_PORTS] = [const { AtomicUsize::new(0) }; MAX_PORTS];

// The entry points. The plain one is the runtime's entry and exit around a
// different Rust half; `push 0` is HYPERVISOR_iret's `flags` word (no
// VGCF_in_syscall: rcx and r11 come back from the frame).
global_asm!(
    r#"
    .pushsection .text.bench_callback, "ax"

    .balign 16
    .globl bench_stamped_callback
bench_stamped_callback:
    push rax
    push rdx
    rdtsc
    shl rdx, 32
    or rax, rdx
    mov [rip + {entry_tsc}], rax
    pop rdx
    pop rax
    jmp bench_event_callback

    .balign 16
    .globl bench_event_callback
bench_event_callback:
    pop rcx
    pop r11
    "#,
    sluice_guest::save_gprs_asm!(),
    r#"
    cld
    mov rbx, rsp
    and rsp, -16
    call {consume}
    mov rsp, rbx
    "#,
    sluice_guest::restore_gprs_asm!(),
    r#"
    push 0
    jmp sluice_hypercall_page + {iret_offset}

    .popsection
    "#,
    entry_tsc = sym ENTRY_TSC,
    consume = sym consume,
    iret_offset = const nr::IRET as u64 * STUB_SIZE,
);

unsafe extern "C" {
    /// The lean event callback (assembly above).
    pub fn bench_event_callback();
    /// The lean event callback behind a TSC read (assembly above).
    pub fn bench_stamped_callback();
}

/// Which event callback the hypervisor enters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callback {
    /// The runtime's instrumented one ([`sluice_guest::upcall`]).
    Runtime,
    /// [`bench_event_callback`].
    Lean,
    /// [`bench_stamped_callback`].
    Stamped,
}

/// Registers `callback` as the event callback (`callback_op`); the
/// failsafe callback stays the runtime's.
pub fn register(callback: Callback) -> Result<(), Errno> {
    let entry: unsafe extern "C" fn() = match callback {
        Callback::Runtime => upcall::sluice_event_callback,
        Callback::Lean => bench_event_callback,
        Callback::Stamped => bench_stamped_callback,
    };
    upcall::callback_register(CALLBACKTYPE_EVENT, 0, entry as usize as u64)
}

/// Installs `handler` for `port` in the lean callback's table.
pub fn set_handler(port: u32, handler: Handler) {
    if let Some(slot) = HANDLERS.get(port as usize) {
        slot.store(handler as usize, Ordering::SeqCst);
    }
}

/// Removes `port`'s handler from the lean callback's table: its events are
/// consumed and dropped.
pub fn clear_handler(port: u32) {
    if let Some(slot) = HANDLERS.get(port as usize) {
        slot.store(0, Ordering::SeqCst);
    }
}

/// Runs `port`'s handler, if it has one.
fn dispatch(port: u32) {
    let raw = HANDLERS
        .get(port as usize)
        .map_or(0, |slot| slot.load(Ordering::SeqCst));
    if raw != 0 {
        // SAFETY: HANDLERS only ever holds 0 or a `Handler` stored by
        // `set_handler`, and fn pointers and usize have the same size.
        let handler = unsafe { core::mem::transmute::<usize, Handler>(raw) };
        handler(port);
    }
}

/// The lean callback's Rust half, called by the entry code with events
/// masked (the hypervisor set `evtchn_upcall_mask`; HYPERVISOR_iret
/// restores it from the frame).
extern "C" fn consume() {
    let Some(shared) = shared_info::get() else {
        return;
    };
    let vcpu = shared.vcpu0();
    loop {
        vcpu.evtchn_upcall_pending.store(0, Ordering::SeqCst);
        if fifo::active() {
            fifo::consume(0, dispatch);
        } else {
            let mut selector = vcpu.evtchn_pending_sel.swap(0, Ordering::SeqCst);
            while selector != 0 {
                let word = selector.trailing_zeros() as usize;
                selector &= selector - 1;
                let (Some(pending), Some(mask)) = (
                    shared.evtchn_pending.get(word),
                    shared.evtchn_mask.get(word),
                ) else {
                    continue;
                };
                let mut ready = pending.load(Ordering::SeqCst) & !mask.load(Ordering::SeqCst);
                while ready != 0 {
                    let bit = ready.trailing_zeros();
                    ready &= ready - 1;
                    pending.fetch_and(!(1u64 << bit), Ordering::SeqCst);
                    dispatch(word as u32 * 64 + bit);
                }
            }
        }
        if vcpu.evtchn_upcall_pending.load(Ordering::SeqCst) == 0 {
            break;
        }
    }
}
