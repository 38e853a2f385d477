//! Event delivery: the upcall and failsafe entry points (assembly), the
//! 2-level demultiplexer (or the FIFO consumer of [`crate::fifo`] once the
//! domain switched), per-port handlers, callback registration and the
//! vcpu's upcall mask.
//!
//! The hypervisor enters [`sluice_event_callback`] through a bounce frame on
//! the guest stack (spec §7.4): `[rcx, r11, rip, cs, rflags, rsp, ss]`, with
//! the interrupted `evtchn_upcall_mask` in bits 32..40 of the cs slot and
//! `upcall_mask` now 1. The entry pops rcx and r11, saves every
//! general-purpose register (a hypercall continuation may have been
//! interrupted: spec §7.2), calls [`event_demux`] on a 16-byte aligned stack,
//! restores everything and returns through HYPERVISOR_iret (spec §7.5) with
//! `flags` 0, so rcx and r11 come back too and the mask becomes !IF of the
//! frame, i.e. its value before the event.
//!
//! The guest is built for `x86_64-unknown-none` (soft float, no red zone), so
//! there is no vector state to save and a frame pushed below a leaf
//! function's stack pointer clobbers nothing.

use core::arch::global_asm;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::errno::Errno;
use crate::hypercall::{hypercall2, hypercall5, nr};
use crate::shared_info::{self, BITMAP_WORDS, NR_2L_PORTS};
use crate::smp::{MAX_VCPUS, current_vcpu};
use crate::version;

/// The registers the entry code saved, then the iret part of the bounce
/// frame, as the demultiplexer sees them.
#[repr(C)]
pub struct UpcallFrame {
    /// General-purpose registers, in push order reversed.
    pub r15: u64,
    /// Saved r14.
    pub r14: u64,
    /// Saved r13.
    pub r13: u64,
    /// Saved r12.
    pub r12: u64,
    /// Saved r11 (from the bounce frame).
    pub r11: u64,
    /// Saved r10.
    pub r10: u64,
    /// Saved r9.
    pub r9: u64,
    /// Saved r8.
    pub r8: u64,
    /// Saved rbp.
    pub rbp: u64,
    /// Saved rdi.
    pub rdi: u64,
    /// Saved rsi.
    pub rsi: u64,
    /// Saved rdx.
    pub rdx: u64,
    /// Saved rcx (from the bounce frame).
    pub rcx: u64,
    /// Saved rbx.
    pub rbx: u64,
    /// Saved rax.
    pub rax: u64,
    /// Interrupted rip.
    pub rip: u64,
    /// Interrupted cs; bits 32..40 hold the saved upcall mask.
    pub cs: u64,
    /// Interrupted rflags; IF = !saved mask.
    pub rflags: u64,
    /// Interrupted rsp.
    pub rsp: u64,
    /// Interrupted ss.
    pub ss: u64,
}
const _: () = assert!(size_of::<UpcallFrame>() == 20 * 8);
const _: () = assert!(offset_of!(UpcallFrame, rax) == 14 * 8);
const _: () = assert!(offset_of!(UpcallFrame, rip) == 15 * 8);

/// The failsafe frame after the entry code's saves (spec §7.4 failsafe
/// table: rcx, r11, ds, es, fs, gs, then the iret part).
#[repr(C)]
pub struct FailsafeFrame {
    /// The 15 saved general-purpose registers, as in [`UpcallFrame`].
    pub regs: [u64; 15],
    /// The data segment selector the hypervisor could not load.
    pub ds: u64,
    /// Likewise es.
    pub es: u64,
    /// Likewise fs.
    pub fs: u64,
    /// Likewise gs.
    pub gs: u64,
    /// Interrupted rip.
    pub rip: u64,
    /// Interrupted cs (saved mask in bits 32..40).
    pub cs: u64,
    /// Interrupted rflags.
    pub rflags: u64,
    /// Interrupted rsp.
    pub rsp: u64,
    /// Interrupted ss.
    pub ss: u64,
}
const _: () = assert!(offset_of!(FailsafeFrame, ds) == 15 * 8);
const _: () = assert!(offset_of!(FailsafeFrame, rip) == 19 * 8);

/// The assembler text that saves the 15 general-purpose registers in
/// [`UpcallFrame`]'s order (rax pushed first, r15 last), for an event
/// callback's entry after it popped the bounce frame's rcx and r11: the
/// runtime's callbacks and a guest's own (the bench guest's lean one) use
/// the same text, so the frame layout has one definition.
#[macro_export]
macro_rules! save_gprs_asm {
    () => {
        "push rax\npush rbx\npush rcx\npush rdx\npush rsi\npush rdi\npush rbp\npush r8\npush r9\npush r10\npush r11\npush r12\npush r13\npush r14\npush r15\n"
    };
}

/// The assembler text that restores what [`save_gprs_asm!`] saved.
#[macro_export]
macro_rules! restore_gprs_asm {
    () => {
        "pop r15\npop r14\npop r13\npop r12\npop r11\npop r10\npop r9\npop r8\npop rbp\npop rdi\npop rsi\npop rdx\npop rcx\npop rbx\npop rax\n"
    };
}

// Both entry points. `push 0` is HYPERVISOR_iret's `flags` word (no
// VGCF_in_syscall); stub 23 pushes rcx, r11 and rax itself.
global_asm!(
    concat!(
        ".pushsection .text.sluice_upcall, \"ax\"\n",
        ".macro SLUICE_SAVE_GPRS\n",
        crate::save_gprs_asm!(),
        ".endm\n",
        ".macro SLUICE_RESTORE_GPRS\n",
        crate::restore_gprs_asm!(),
        ".endm\n",
    ),
    r#"

    .balign 16
    .globl sluice_event_callback
sluice_event_callback:
    pop rcx
    pop r11
    SLUICE_SAVE_GPRS
    cld
    mov rdi, rsp
    mov rbx, rsp
    and rsp, -16
    call {demux}
    mov rsp, rbx
    SLUICE_RESTORE_GPRS
    push 0
    jmp sluice_hypercall_page + {iret_offset}

    .balign 16
    .globl sluice_failsafe_callback
sluice_failsafe_callback:
    pop rcx
    pop r11
    SLUICE_SAVE_GPRS
    cld
    mov rdi, rsp
    mov rbx, rsp
    and rsp, -16
    call {failsafe}
    mov rsp, rbx
    SLUICE_RESTORE_GPRS
    add rsp, 32
    push 0
    jmp sluice_hypercall_page + {iret_offset}

    .popsection
    "#,
    demux = sym event_demux,
    failsafe = sym failsafe,
    iret_offset = const nr::IRET as u64 * crate::hypercall::STUB_SIZE,
);

unsafe extern "C" {
    /// The event callback entry point (assembly above).
    pub fn sluice_event_callback();
    /// The failsafe callback entry point (assembly above).
    pub fn sluice_failsafe_callback();
}

/// A per-port event handler, called with the port whose pending bit the
/// demultiplexer just cleared, with events masked.
pub type Handler = fn(port: u32);

/// Ports with handlers and counters: every 2-level port, and as many FIFO
/// ports as [`crate::fifo`] tracks event-array pages for.
pub const MAX_PORTS: usize = crate::fifo::MAX_ARRAY_PAGES * crate::fifo::WORDS_PER_PAGE;
const _: () = assert!(MAX_PORTS >= NR_2L_PORTS as usize);

/// Handlers by port, as `fn` addresses; 0 = none (count only).
static HANDLERS: [AtomicUsize; MAX_PORTS] = [const { AtomicUsize::new(0) }; MAX_PORTS];
/// The vcpu each port notifies, as far as the runtime's bind wrappers know
/// (0 for ports never bound through them, as for every fresh port).
static PORT_OWNER: [AtomicU8; NR_2L_PORTS as usize] =
    [const { AtomicU8::new(0) }; NR_2L_PORTS as usize];
/// Events dispatched per port.
static PORT_EVENTS: [AtomicU32; MAX_PORTS] = [const { AtomicU32::new(0) }; MAX_PORTS];
/// Times the event callback was entered.
static UPCALLS: AtomicU64 = AtomicU64::new(0);
/// Times the event callback was entered, by vcpu.
static UPCALLS_BY_VCPU: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// vcpu that dispatched the last event + 1 (0 = none yet).
static LAST_VCPU: AtomicU32 = AtomicU32::new(0);
/// Events dispatched in total.
static EVENTS: AtomicU64 = AtomicU64::new(0);
/// Last dispatched port + 1 (0 = none yet).
static LAST_PORT: AtomicU32 = AtomicU32::new(0);
/// cs and rflags slots of the last bounce frame, and the upcall mask seen
/// inside the callback.
static LAST_CS: AtomicU64 = AtomicU64::new(0);
static LAST_RFLAGS: AtomicU64 = AtomicU64::new(0);
static LAST_SS: AtomicU64 = AtomicU64::new(0);
static LAST_RIP: AtomicU64 = AtomicU64::new(0);
static LAST_ENTRY_RSP: AtomicU64 = AtomicU64::new(0);
static LAST_MASK_INSIDE: AtomicU32 = AtomicU32::new(0);
/// The selector the last upcall took with its first exchange.
static LAST_SELECTOR: AtomicU64 = AtomicU64::new(0);
/// Times the failsafe callback was entered.
static FAILSAFES: AtomicU64 = AtomicU64::new(0);

/// What the last upcall looked like, for tests of the bounce frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LastUpcall {
    /// cs slot of the bounce frame (saved mask in bits 32..40).
    pub cs: u64,
    /// rflags slot of the bounce frame.
    pub rflags: u64,
    /// ss slot of the bounce frame.
    pub ss: u64,
    /// rip slot of the bounce frame.
    pub rip: u64,
    /// The stack pointer the callback was entered with (the frame's start).
    pub entry_rsp: u64,
    /// `evtchn_upcall_mask` as read inside the callback.
    pub mask_inside: u8,
    /// `evtchn_pending_sel` as taken by the callback's first exchange.
    pub selector: u64,
}

impl LastUpcall {
    /// The interrupted context's `evtchn_upcall_mask` (cs bits 32..40).
    pub fn saved_mask(&self) -> u8 {
        ((self.cs >> 32) & 0xff) as u8
    }
    /// The interrupted context's IF (rflags bit 9).
    pub fn interrupts_enabled(&self) -> bool {
        self.rflags & (1 << 9) != 0
    }
}

/// Installs `handler` for `port` (replacing any other).
pub fn set_handler(port: u32, handler: Handler) {
    if let Some(slot) = HANDLERS.get(port as usize) {
        slot.store(handler as usize, Ordering::SeqCst);
    }
}

/// Records that `port` now notifies `vcpu` (called by the evtchn wrappers
/// after a successful bind, bind_vcpu or close), so that a vcpu's upcall
/// leaves other vcpus' ports in a shared bitmap word alone.
pub fn set_port_owner(port: u32, vcpu: u32) {
    if let Some(owner) = PORT_OWNER.get(port as usize) {
        owner.store(u8::try_from(vcpu).unwrap_or(u8::MAX), Ordering::SeqCst);
    }
}

/// Forgets every port's owner (after EVTCHNOP_reset).
pub fn clear_port_owners() {
    for owner in &PORT_OWNER {
        owner.store(0, Ordering::SeqCst);
    }
}

/// Whether `port` notifies `vcpu`, as far as the runtime knows.
fn owned_by(port: u32, vcpu: u32) -> bool {
    PORT_OWNER
        .get(port as usize)
        .is_some_and(|owner| u32::from(owner.load(Ordering::SeqCst)) == vcpu)
}

/// Removes `port`'s handler: its events are only counted.
pub fn clear_handler(port: u32) {
    if let Some(slot) = HANDLERS.get(port as usize) {
        slot.store(0, Ordering::SeqCst);
    }
}

/// Times the event callback ran.
pub fn upcalls() -> u64 {
    UPCALLS.load(Ordering::SeqCst)
}

/// Events dispatched in total.
pub fn events() -> u64 {
    EVENTS.load(Ordering::SeqCst)
}

/// Times the event callback ran on `vcpu`.
pub fn upcalls_on(vcpu: u32) -> u64 {
    UPCALLS_BY_VCPU
        .get(vcpu as usize)
        .map_or(0, |c| c.load(Ordering::SeqCst))
}

/// The vcpu that dispatched the last event, if any.
pub fn last_vcpu() -> Option<u32> {
    LAST_VCPU.load(Ordering::SeqCst).checked_sub(1)
}

/// Events dispatched for `port`.
pub fn port_events(port: u32) -> u32 {
    PORT_EVENTS
        .get(port as usize)
        .map_or(0, |c| c.load(Ordering::SeqCst))
}

/// The last port dispatched, if any.
pub fn last_port() -> Option<u32> {
    LAST_PORT.load(Ordering::SeqCst).checked_sub(1)
}

/// Snapshot of the last upcall's frame.
pub fn last_upcall() -> LastUpcall {
    LastUpcall {
        cs: LAST_CS.load(Ordering::SeqCst),
        rflags: LAST_RFLAGS.load(Ordering::SeqCst),
        ss: LAST_SS.load(Ordering::SeqCst),
        rip: LAST_RIP.load(Ordering::SeqCst),
        entry_rsp: LAST_ENTRY_RSP.load(Ordering::SeqCst),
        mask_inside: LAST_MASK_INSIDE.load(Ordering::SeqCst) as u8,
        selector: LAST_SELECTOR.load(Ordering::SeqCst),
    }
}

/// Times the failsafe callback ran.
pub fn failsafes() -> u64 {
    FAILSAFES.load(Ordering::SeqCst)
}

/// Zeroes every counter (handlers stay).
pub fn reset_counters() {
    for counter in &PORT_EVENTS {
        counter.store(0, Ordering::SeqCst);
    }
    UPCALLS.store(0, Ordering::SeqCst);
    for counter in &UPCALLS_BY_VCPU {
        counter.store(0, Ordering::SeqCst);
    }
    LAST_VCPU.store(0, Ordering::SeqCst);
    EVENTS.store(0, Ordering::SeqCst);
    LAST_PORT.store(0, Ordering::SeqCst);
}

/// Runs `port`'s handler, or only counts the event.
fn dispatch(port: u32, vcpu: u32) {
    EVENTS.fetch_add(1, Ordering::SeqCst);
    LAST_VCPU.store(vcpu + 1, Ordering::SeqCst);
    LAST_PORT.store(port + 1, Ordering::SeqCst);
    if let Some(counter) = PORT_EVENTS.get(port as usize) {
        counter.fetch_add(1, Ordering::SeqCst);
    }
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

/// The demultiplexer, called by the entry code with events masked. On FIFO
/// it clears `upcall_pending` and runs [`crate::fifo::consume`] until
/// `upcall_pending` stays clear; on 2-level (spec §3.7) it does: clear `upcall_pending`, take the selector with an exchange,
/// then for each selected word handle `pending & !mask & owned by this
/// vcpu`, clearing each pending bit before running its handler; repeat
/// while `upcall_pending` was set again. Ports of other vcpus that share a
/// word stay pending for their own vcpu, whose selector the hypervisor
/// flagged too.
extern "C" fn event_demux(frame: *const UpcallFrame) {
    UPCALLS.fetch_add(1, Ordering::SeqCst);
    let vcpu_id = current_vcpu();
    if let Some(counter) = UPCALLS_BY_VCPU.get(vcpu_id as usize) {
        counter.fetch_add(1, Ordering::SeqCst);
    }
    // SAFETY: the entry code passes the address of the frame it just built
    // on the current stack; it stays live until this function returns.
    let frame = unsafe { &*frame };
    LAST_CS.store(frame.cs, Ordering::SeqCst);
    LAST_RFLAGS.store(frame.rflags, Ordering::SeqCst);
    LAST_SS.store(frame.ss, Ordering::SeqCst);
    LAST_RIP.store(frame.rip, Ordering::SeqCst);
    // The entry code popped rcx and r11 (2 slots) and pushed 15 registers.
    let entry_rsp = (frame as *const UpcallFrame as u64) + 15 * 8 - 2 * 8;
    LAST_ENTRY_RSP.store(entry_rsp, Ordering::SeqCst);
    let Some(shared) = shared_info::get() else {
        return;
    };
    let Some(vcpu) = shared_info::vcpu_info(vcpu_id) else {
        return;
    };
    LAST_MASK_INSIDE.store(
        u32::from(vcpu.evtchn_upcall_mask.load(Ordering::SeqCst)),
        Ordering::SeqCst,
    );
    let mut first_round = true;
    loop {
        vcpu.evtchn_upcall_pending.store(0, Ordering::SeqCst);
        if crate::fifo::active() {
            crate::fifo::consume(vcpu_id, |port| dispatch(port, vcpu_id));
            if vcpu.evtchn_upcall_pending.load(Ordering::SeqCst) == 0 {
                break;
            }
            continue;
        }
        let mut selector = vcpu.evtchn_pending_sel.swap(0, Ordering::SeqCst);
        if first_round {
            LAST_SELECTOR.store(selector, Ordering::SeqCst);
            first_round = false;
        }
        while selector != 0 {
            let word = selector.trailing_zeros() as usize;
            selector &= selector - 1;
            if word >= BITMAP_WORDS {
                continue;
            }
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
                let port = word as u32 * 64 + bit;
                if !owned_by(port, vcpu_id) {
                    continue;
                }
                pending.fetch_and(!(1u64 << bit), Ordering::SeqCst);
                dispatch(port, vcpu_id);
            }
        }
        if vcpu.evtchn_upcall_pending.load(Ordering::SeqCst) == 0 {
            break;
        }
    }
}

/// The failsafe callback's Rust half: counts and reports, then the entry
/// code resumes the interrupted context with null data selectors. A guest
/// that keeps failing is crashed after a few rounds.
extern "C" fn failsafe(frame: *const FailsafeFrame) {
    let count = FAILSAFES.fetch_add(1, Ordering::SeqCst) + 1;
    // SAFETY: as for `event_demux`: a live frame on the current stack.
    let frame = unsafe { &*frame };
    crate::println!(
        "# failsafe callback #{count}: rip={:#x} ds={:#x} es={:#x} fs={:#x} gs={:#x}",
        frame.rip,
        frame.ds,
        frame.es,
        frame.fs,
        frame.gs
    );
    if count > 4 {
        crate::println!("Bail out! repeated failsafe callbacks");
        crate::tap::shutdown_failed();
    }
}

/// callback_op command: register a callback.
pub const CALLBACKOP_REGISTER: u64 = 0;
/// callback_op command: unregister a callback.
pub const CALLBACKOP_UNREGISTER: u64 = 1;
/// Callback type: event upcall.
pub const CALLBACKTYPE_EVENT: u16 = 0;
/// Callback type: failsafe.
pub const CALLBACKTYPE_FAILSAFE: u16 = 1;

/// struct callback_register (16 bytes; spec §7.6).
#[repr(C)]
pub struct CallbackRegister {
    /// CALLBACKTYPE_*.
    pub kind: u16,
    /// Bit 0 CALLBACKF_mask_events.
    pub flags: u16,
    /// Explicit padding.
    pub _pad: [u8; 4],
    /// Entry address (canonical).
    pub address: u64,
}
const _: () = assert!(size_of::<CallbackRegister>() == 16);
const _: () = assert!(offset_of!(CallbackRegister, flags) == 2);
const _: () = assert!(offset_of!(CallbackRegister, address) == 8);

/// `callback_op(CALLBACKOP_register, {kind, flags, address})`.
pub fn callback_register(kind: u16, flags: u16, address: u64) -> Result<(), Errno> {
    let mut arg = CallbackRegister {
        kind,
        flags,
        _pad: [0; 4],
        address,
    };
    // SAFETY: the hypervisor reads 16 bytes from a live local.
    Errno::unit(unsafe { hypercall2(nr::CALLBACK_OP, CALLBACKOP_REGISTER, (&raw mut arg) as u64) })
}

/// The address of an assembly entry point.
pub(crate) fn entry_address(entry: unsafe extern "C" fn()) -> u64 {
    entry as usize as u64
}

/// struct callback_unregister (4 bytes; spec §7.6).
#[repr(C)]
pub struct CallbackUnregister {
    /// CALLBACKTYPE_*.
    pub kind: u16,
    /// Unused.
    pub _unused: u16,
}
const _: () = assert!(size_of::<CallbackUnregister>() == 4);

/// `callback_op(CALLBACKOP_unregister, {kind})`.
pub fn callback_unregister(kind: u16) -> Result<(), Errno> {
    let mut arg = CallbackUnregister { kind, _unused: 0 };
    // SAFETY: the hypervisor reads 4 bytes from a live local.
    Errno::unit(unsafe {
        hypercall2(
            nr::CALLBACK_OP,
            CALLBACKOP_UNREGISTER,
            (&raw mut arg) as u64,
        )
    })
}

/// `callback_op(command, arg)` with a 16-byte argument, for unknown commands.
pub fn callback_op_raw(command: u64, arg: &mut [u64; 2]) -> i64 {
    // SAFETY: the hypervisor reads (and for no command writes) at most 16
    // bytes from a live local array.
    unsafe { hypercall2(nr::CALLBACK_OP, command, arg.as_mut_ptr() as u64) }
}

/// Registers the runtime's event and failsafe callbacks with `callback_op`.
pub fn register_callbacks() -> Result<(), Errno> {
    callback_register(CALLBACKTYPE_EVENT, 0, entry_address(sluice_event_callback))?;
    callback_register(
        CALLBACKTYPE_FAILSAFE,
        0,
        entry_address(sluice_failsafe_callback),
    )
}

/// Registers the runtime's callbacks with the older `set_callbacks`
/// hypercall (no syscall callback).
pub fn set_callbacks() -> Result<(), Errno> {
    // SAFETY: addresses only; nothing is read from guest memory.
    Errno::unit(unsafe {
        hypercall5(
            nr::SET_CALLBACKS,
            entry_address(sluice_event_callback),
            entry_address(sluice_failsafe_callback),
            0,
            0,
            0,
        )
    })
}

/// Sets the current vcpu's `evtchn_upcall_mask`: no upcalls until
/// [`unmask_vcpu`].
pub fn mask_vcpu() {
    if let Some(vcpu) = shared_info::vcpu_info(current_vcpu()) {
        vcpu.evtchn_upcall_mask.store(1, Ordering::SeqCst);
    }
}

/// Clears the current vcpu's `evtchn_upcall_mask` and, if an upcall is
/// already pending, makes a cheap hypercall so the hypervisor delivers it on
/// the way back (spec §3.4, §10 trap 9).
pub fn unmask_vcpu() {
    if let Some(vcpu) = shared_info::vcpu_info(current_vcpu()) {
        vcpu.evtchn_upcall_mask.store(0, Ordering::SeqCst);
        if vcpu.evtchn_upcall_pending.load(Ordering::SeqCst) != 0 {
            version::touch();
        }
    }
}
