//! The IDT, the 256 interrupt entry stubs and the dispatcher.
//!
//! Every vector has a 16-byte stub that pushes a zero error code (when the
//! CPU pushes none) and the vector number, then jumps to one common entry
//! that saves all general registers into an [`InterruptFrame`] and calls
//! `sluice_interrupt_dispatch`. Exceptions are fatal (dump, stop every
//! CPU, exit); other vectors go to handlers registered with
//! [`set_handler`], then get their LAPIC EOI.
//!
//! All entries are ring-0 interrupt gates on Sluice's per-CPU stack, except
//! #DF, NMI and #MC, which get their own IST stacks so that they work even
//! when the stack itself is broken (e.g. an overflow into its guard page).
//!
//! An entry from ring 3 (a PV guest) does `swapgs` on the way in and out;
//! exceptions raised by guest code go to the hypervisor's guest hook rather
//! than the fatal path, and every return to ring 3 passes the hook that
//! injects upcalls (`guest_entry`). A page fault in ring 0 at one of the
//! guest-copy instructions resumes at its fix-up (`guest_copy`). A fault
//! of the `iretq` of an exit to ring 3 (this file's or the `syscall`
//! exit's) is the guest's: the entry restores the hypervisor's GS and the
//! fault goes to the guest hook as an exception at the frame's rip
//! (`reflect_exit_fault`).

use core::sync::atomic::{AtomicUsize, Ordering};

use crate::gdt::{HYPERVISOR_CS, IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI};
use crate::{fatal, lapic, percpu, vectors};

/// Registers saved on interrupt entry, in stack order (lowest address
/// first), followed by what the stub and the CPU pushed.
#[repr(C)]
#[derive(Clone, Debug, Default)]
#[expect(missing_docs, reason = "field names are the register names")]
pub struct InterruptFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Vector number (pushed by the stub).
    pub vector: u64,
    /// Error code (pushed by the CPU, or 0 by the stub).
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<InterruptFrame>() == 22 * 8);

core::arch::global_asm!(
    r#"
    .section .text.sluice_interrupts, "ax"
    .code64
    .balign 16
    .global sluice_interrupt_stubs
sluice_interrupt_stubs:
    .set sluice_vector, 0
    .rept 256
    .balign 16
    .if (sluice_vector == 8) || (sluice_vector == 10) || (sluice_vector == 11) || (sluice_vector == 12) || (sluice_vector == 13) || (sluice_vector == 14) || (sluice_vector == 17) || (sluice_vector == 21) || (sluice_vector == 29) || (sluice_vector == 30)
    pushq $sluice_vector
    .else
    pushq $0
    pushq $sluice_vector
    .endif
    jmp sluice_interrupt_common
    .set sluice_vector, sluice_vector + 1
    .endr

    .balign 16
sluice_interrupt_common:
    testb $3, 24(%rsp)
    jz 3f
    swapgs
    jmp 1f
    // The exit backstop: a #NP, #SS or #GP from ring 0 at the `iretq` of
    // an exit to ring 3 (the guest entry's, or this file's below) was
    // raised by the frame it returns to, after the exit's `swapgs`: the
    // GS base is the guest's. Swap it back; the dispatcher hands the
    // fault to the guest (`reflect_exit_fault`).
6:
    push %rax
    lea sluice_guest_exit_iretq(%rip), %rax
    cmp %rax, 24(%rsp)
    je 7f
    lea sluice_interrupt_exit_iretq(%rip), %rax
    cmp %rax, 24(%rsp)
    jne 8f
7:
    mov 48(%rsp), %rax
    testb $3, 8(%rax)
    jz 8f
    swapgs
8:
    pop %rax
    jmp 1f
    // From ring 0 the GS base is normally the hypervisor's. NMI, #DF and
    // #MC can also arrive in the few instructions of a guest entry or exit
    // where the guest's is loaded (after `syscall`, before `sysretq` or
    // `iretq`); `percpu::current` would then read the guest's memory at its
    // GS base. Those three never return here (the dispatcher halts or ends
    // the run), so a `swapgs` when the base is not a hypervisor address
    // (upper half; a guest's is a descriptor's, below 4 GiB) needs no undo.
3:
    cmpq $11, (%rsp)
    je 6b
    cmpq $12, (%rsp)
    je 6b
    cmpq $13, (%rsp)
    je 6b
    cmpq $2, (%rsp)
    je 4f
    cmpq $8, (%rsp)
    je 4f
    cmpq $18, (%rsp)
    jne 1f
4:
    push %rax
    push %rcx
    push %rdx
    mov $0xc0000101, %ecx
    rdmsr
    test %edx, %edx
    js 5f
    swapgs
5:
    pop %rdx
    pop %rcx
    pop %rax
1:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    cld
    // Handlers never run with SMAP opened by the code they interrupted
    // (the CPU does not clear RFLAGS.AC on delivery; iretq restores it).
    testb $1, SLUICE_SMAP_ENABLED(%rip)
    jz 1f
    clac
1:
    mov %rsp, %rdi
    call sluice_interrupt_dispatch
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    testb $3, 8(%rsp)
    jz 2f
    swapgs
2:
    .global sluice_interrupt_exit_iretq
sluice_interrupt_exit_iretq:
    iretq
    .text
"#,
    options(att_syntax)
);

unsafe extern "C" {
    static sluice_interrupt_stubs: u8;
    static sluice_interrupt_exit_iretq: u8;
    static sluice_guest_exit_iretq: u8;
}

/// Whether `frame` is a fault of an exit's `iretq` back to ring 3 (the
/// exit backstop; the common entry restored the hypervisor's GS base): a
/// #NP, #SS or #GP raised in ring 0 at one of the two exit `iretq`s while
/// the frame it was returning to names ring 3.
fn is_exit_fault(frame: &InterruptFrame) -> bool {
    let exits = [
        (&raw const sluice_guest_exit_iretq) as u64,
        (&raw const sluice_interrupt_exit_iretq) as u64,
    ];
    // #NP (11), #SS (12), #GP: what `iretq` raises for a frame it refuses.
    let is_segment_fault = frame.vector == 11
        || frame.vector == 12
        || frame.vector == u64::from(vectors::GENERAL_PROTECTION);
    if !is_segment_fault || frame.cs & 3 != 0 || !exits.contains(&frame.rip) {
        return false;
    }
    // SAFETY: `rsp` is where the faulting `iretq` read its frame: the top
    // of the running vcpu's hypervisor stack, mapped (the CPU had just
    // read it), and the fault's own push went below it.
    let returning_cs = unsafe { core::ptr::read((frame.rsp + 8) as *const u64) };
    returning_cs & 3 == 3
}

/// Hands an exit fault ([`is_exit_fault`]) to the guest, as Xen's
/// exception table does for its exit's `iretq` (x86_64/entry.S): the
/// fault becomes the guest's own, with its vector and error code, at the
/// frame it was to return to (the registers are the guest's already:
/// the exit popped them). The guest hooks then take it as any exception
/// raised by guest code; Sluice has no trap table, so the domain crashes,
/// as Xen's bounce to a guest with no handler for it (there is no
/// failsafe_callback path either).
fn reflect_exit_fault(frame: &mut InterruptFrame) {
    // SAFETY: as in `is_exit_fault`: the five words the `iretq` was
    // popping (rip, cs, rflags, rsp, ss) on the vcpu's mapped stack.
    let words = unsafe { core::ptr::read(frame.rsp as *const [u64; 5]) };
    let [rip, cs, rflags, rsp, ss] = words;
    frame.rip = rip;
    frame.cs = cs;
    frame.rflags = rflags;
    frame.rsp = rsp;
    frame.ss = ss;
}

/// Size of one entry stub.
const STUB_SIZE: u64 = 16;

/// One 16-byte IDT gate.
#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attributes: u8,
    offset_middle: u16,
    offset_high: u32,
    reserved: u32,
}

#[repr(C, align(4096))]
struct Idt([Gate; 256]);

static IDT: spin::Once<Idt> = spin::Once::new();

fn build() -> Idt {
    let stubs = (&raw const sluice_interrupt_stubs) as u64;
    let mut gates = [Gate {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attributes: 0,
        offset_middle: 0,
        offset_high: 0,
        reserved: 0,
    }; 256];
    for (vector, gate) in gates.iter_mut().enumerate() {
        let handler = stubs + vector as u64 * STUB_SIZE;
        let ist = match vector as u8 {
            vectors::DOUBLE_FAULT => IST_DOUBLE_FAULT,
            vectors::NMI => IST_NMI,
            vectors::MACHINE_CHECK => IST_MACHINE_CHECK,
            _ => 0,
        };
        *gate = Gate {
            offset_low: handler as u16,
            selector: HYPERVISOR_CS,
            ist,
            // Present, DPL 0, 64-bit interrupt gate (interrupts off on entry).
            type_attributes: 0x8e,
            offset_middle: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        };
    }
    Idt(gates)
}

/// Loads the (shared, immutable) IDT on this CPU.
pub fn load() {
    let idt = IDT.call_once(build);
    let pointer = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::new(core::ptr::from_ref(idt) as u64),
    };
    // SAFETY: the IDT is 'static and every gate points at a stub in the
    // image with Sluice's code selector (loaded in this CPU's GDT before).
    unsafe { x86_64::instructions::tables::lidt(&pointer) };
}

/// A handler for a non-exception vector; runs with interrupts off on the
/// interrupted CPU; EOI is sent after it returns.
pub type Handler = fn(&mut InterruptFrame);

static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];

/// Installs `handler` for `vector` (32..=254), replacing any other.
pub fn set_handler(vector: u8, handler: Handler) {
    if vector >= 32
        && let Some(slot) = HANDLERS.get(usize::from(vector))
    {
        // Release: pairs with the Acquire in `handler_for`.
        slot.store(handler as usize, Ordering::Release);
    }
}

fn handler_for(vector: u64) -> Option<Handler> {
    let raw = HANDLERS.get(vector as usize)?.load(Ordering::Acquire);
    if raw == 0 {
        return None;
    }
    // SAFETY: non-zero slots were stored from a `Handler` fn pointer in
    // `set_handler`; fn pointers and usize have the same size.
    Some(unsafe { core::mem::transmute::<usize, Handler>(raw) })
}

/// Called by the common entry stub with the saved frame.
#[unsafe(no_mangle)]
extern "C" fn sluice_interrupt_dispatch(frame: &mut InterruptFrame) {
    if is_exit_fault(frame) {
        reflect_exit_fault(frame);
    }
    let is_from_guest = frame.cs & 3 == 3;
    let hooks = crate::guest_entry::hooks();
    match frame.vector {
        vector if vector == u64::from(vectors::NMI) => fatal::nmi(frame),
        // A fault inside a guest copy resumes at its fixup.
        vector
            if (vector == u64::from(vectors::PAGE_FAULT)
                || vector == u64::from(vectors::GENERAL_PROTECTION))
                && frame.cs & 3 == 0
                && let Some(fixup) = crate::guest_copy::fixup_for(frame.rip) =>
        {
            frame.rip = fixup;
        }
        0..=31 if is_from_guest && hooks.is_some() => {
            if let Some(hooks) = hooks {
                (hooks.exception)(frame);
            }
        }
        0..=31 => fatal::exception(frame),
        // The masked 8259s can still raise their spurious IRQ 7/15.
        0x20..=0x2f => {}
        vector if vector == u64::from(vectors::SPURIOUS) => {}
        vector => {
            if vector == u64::from(vectors::TIMER) {
                percpu::current()
                    .timer_ticks
                    .fetch_add(1, Ordering::Relaxed);
            } else if vector == u64::from(vectors::KICK) {
                percpu::current()
                    .kicks_received
                    .fetch_add(1, Ordering::Relaxed);
            }
            match handler_for(vector) {
                Some(handler) => handler(frame),
                None if vector == u64::from(vectors::TIMER)
                    || vector == u64::from(vectors::KICK) => {}
                None => log::warn!("unexpected interrupt vector {vector:#x}"),
            }
            lapic::eoi();
        }
    }
    if is_from_guest && let Some(hooks) = hooks {
        (hooks.before_return)(frame);
    }
}

/// Exception mnemonics and names by vector.
pub fn exception_name(vector: u64) -> &'static str {
    match vector {
        0 => "#DE divide error",
        1 => "#DB debug",
        2 => "NMI",
        3 => "#BP breakpoint",
        4 => "#OF overflow",
        5 => "#BR bound range",
        6 => "#UD invalid opcode",
        7 => "#NM device not available",
        8 => "#DF double fault",
        9 => "coprocessor segment overrun",
        10 => "#TS invalid TSS",
        11 => "#NP segment not present",
        12 => "#SS stack fault",
        13 => "#GP general protection",
        14 => "#PF page fault",
        16 => "#MF x87 floating point",
        17 => "#AC alignment check",
        18 => "#MC machine check",
        19 => "#XM SIMD floating point",
        20 => "#VE virtualization",
        21 => "#CP control protection",
        28 => "#HV hypervisor injection",
        29 => "#VC VMM communication",
        30 => "#SX security",
        _ => "reserved",
    }
}
