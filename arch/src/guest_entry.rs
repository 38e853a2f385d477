//! Ring-3 PV guests: the `syscall` hypercall entry, the way back into the
//! guest (`sysretq`, or `iretq` where `sysretq` is unsafe), the first entry
//! of a vcpu, and the hooks through which the hypervisor serves them.
//!
//! Every way into the hypervisor from a guest leaves the same
//! [`InterruptFrame`] at the top of the running vcpu's hypervisor stack: the
//! `syscall` entry builds it by hand (vector [`SYSCALL_VECTOR`], rip from
//! `rcx`, rflags from `r11`, Xen's flat ring-3 selectors), interrupts and
//! exceptions from ring 3 get it from the CPU (TSS.RSP0 points at the same
//! stack top) and the common interrupt entry. The hypervisor therefore edits
//! one structure to change what the guest resumes with (a hypercall's
//! result in `rax`, a bounce frame's callback in `rip`/`rsp`).
//!
//! GS: while a guest runs, `IA32_GS_BASE` holds the guest's value and
//! `IA32_KERNEL_GS_BASE` the per-CPU block; every entry from ring 3 does
//! `swapgs` first and every exit does it last.

use core::mem::offset_of;
use core::sync::atomic::{AtomicPtr, Ordering};

use crate::cpu;
use crate::gdt::{FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_DS, HYPERVISOR_CS};
use crate::idt::InterruptFrame;
use crate::percpu::{self, GUEST_RSP_SCRATCH_OFFSET, GUEST_STACK_TOP_OFFSET};

/// `InterruptFrame::vector` of a frame built by the `syscall` entry.
pub const SYSCALL_VECTOR: u64 = 0x100;

/// IA32_EFER.
const MSR_EFER: u32 = 0xc000_0080;
/// IA32_STAR: `syscall`/`sysret` selector bases.
const MSR_STAR: u32 = 0xc000_0081;
/// IA32_LSTAR: the 64-bit `syscall` entry point.
const MSR_LSTAR: u32 = 0xc000_0082;
/// IA32_FMASK: rflags bits `syscall` clears.
const MSR_FMASK: u32 = 0xc000_0084;
/// IA32_KERNEL_GS_BASE: the value `swapgs` exchanges GS base with.
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
/// EFER.SCE: `syscall`/`sysret` enabled.
const EFER_SCE: u64 = 1 << 0;
/// rflags cleared on `syscall`: TF, IF, DF, NT, RF, AC (interrupts stay off
/// in the hypervisor until it decides otherwise).
const SYSCALL_RFLAGS_MASK: u64 =
    (1 << 8) | (1 << 9) | (1 << 10) | (1 << 14) | (1 << 16) | (1 << 18);
/// rflags.DF: the `syscall` entry relies on FMASK clearing it (no `cld`).
const RFLAGS_DF: u64 = 1 << 10;
const _: () = assert!(SYSCALL_RFLAGS_MASK & RFLAGS_DF != 0);

/// What the hypervisor does for guests; `arch` calls these with interrupts
/// off, on the running vcpu's hypervisor stack, with the guest's frame.
#[derive(Clone, Copy, Debug)]
pub struct GuestHooks {
    /// A `syscall` from ring 3 (a hypercall): serve it, edit the frame,
    /// and then do what `before_return` does (on this path, the hottest,
    /// `arch` calls only this hook, so that the hypervisor finds the
    /// calling vcpu once). The `syscall` entry calls it directly from its
    /// assembly, hence the C ABI; it must leave rbx, rbp and r12-r15 as
    /// the guest had them (the C ABI's callee-saved registers: the
    /// `sysretq` exit does not reload them from the frame) and must not
    /// change those six fields of the frame.
    pub hypercall: extern "C" fn(&mut InterruptFrame),
    /// An exception (vector 0..31) raised by guest code in ring 3, or
    /// the #GP of a `syscall` whose return rip is not canonical (the
    /// `syscall` entry raises it for the guest, then calls
    /// `before_return`).
    pub exception: fn(&mut InterruptFrame),
    /// Called last before a return to ring 3 from an interrupt or an
    /// exception (a hypercall's hook does the same work itself): the
    /// place to inject an upcall. May not return if the vcpu is to stop
    /// running.
    pub before_return: fn(&mut InterruptFrame),
}

static HOOKS: spin::Once<GuestHooks> = spin::Once::new();

/// The hypercall hook as the `syscall` entry calls it (`call [rip + ..]`):
/// [`no_hypercall_hook`] until [`set_hooks`] stores the hypervisor's.
/// Written once, before any guest runs.
static SLUICE_HYPERCALL_HOOK: AtomicPtr<()> = AtomicPtr::new(no_hypercall_hook as *mut ());

/// The hypercall hook before [`set_hooks`]: the call fails with -ENOSYS
/// (no guest can run then; this only keeps the pointer valid).
extern "C" fn no_hypercall_hook(frame: &mut InterruptFrame) {
    const ENOSYS: u64 = 38;
    frame.rax = ENOSYS.wrapping_neg();
}

/// Installs the hypervisor's guest hooks (once; later calls are ignored).
pub fn set_hooks(hooks: GuestHooks) {
    HOOKS.call_once(|| {
        // Relaxed: written before the hypervisor builds any domain, so
        // before any CPU can enter a guest: a CPU learns of a vcpu to run
        // only through the hypervisor's locks and Acquire loads published
        // after this store, which order it before that CPU's first entry.
        SLUICE_HYPERCALL_HOOK.store(hooks.hypercall as *mut (), Ordering::Relaxed);
        hooks
    });
}

pub(crate) fn hooks() -> Option<&'static GuestHooks> {
    HOOKS.get()
}

/// Enables `syscall` on this CPU: EFER.SCE, STAR (ring 0 0xe008/0xe010,
/// `sysret` to 0xe033/0xe02b), LSTAR, FMASK, and a zero guest GS base.
pub fn init_cpu() {
    let star = (u64::from(FLAT_RING3_CS32 & !3) << 48) | (u64::from(HYPERVISOR_CS) << 32);
    let entry = sluice_syscall_entry as *const () as u64;
    // SAFETY: EFER exists on every x86_64 CPU; reading it has no effect.
    let efer = unsafe { cpu::read_msr(MSR_EFER) };
    // SAFETY: setting SCE only enables the `syscall` instruction, whose
    // entry is set up right below before any guest runs.
    unsafe { cpu::write_msr(MSR_EFER, efer | EFER_SCE) };
    // SAFETY: STAR's selectors name the GDT entries `gdt` installs on every
    // CPU, in the order `sysret` needs (FLAT_RING3_CS32, +8 data, +16 code).
    unsafe { cpu::write_msr(MSR_STAR, star) };
    // SAFETY: LSTAR points at the entry below, which is mapped in every
    // address space (hypervisor slots are shared with guests).
    unsafe { cpu::write_msr(MSR_LSTAR, entry) };
    // SAFETY: FMASK only chooses which rflags bits `syscall` clears.
    unsafe { cpu::write_msr(MSR_FMASK, SYSCALL_RFLAGS_MASK) };
    // SAFETY: KERNEL_GS_BASE is what `swapgs` installs as the guest's GS
    // base; the per-CPU block stays in GS_BASE while the hypervisor runs.
    unsafe { cpu::write_msr(MSR_KERNEL_GS_BASE, 0) };
}

// The syscall entry and the two exits. Register order matches the common
// interrupt entry in `idt`, so both build an `InterruptFrame`.
//
// The entry saves every register (the frame is the vcpu's whole state: a
// vcpu that goes down keeps it, `VCPUOP_up` resumes from it), calls the
// hypercall hook directly (no `cld`: `syscall` already cleared DF, as the
// C ABI wants it, through FMASK), then decides in place whether `sysretq` can
// return exactly to the frame: rcx = rip and r11 = rflags (`sysretq` takes
// them from there) and IF set (the guest must stay interruptible). A frame
// whose rip is no longer the rcx `syscall` saved was edited by the
// hypervisor (a bounce, HYPERVISOR_iret, a continuation): it leaves
// through `iretq` at once, after one compare. Its rip came from a writer
// that checked it canonical (or, for a continuation, is the address of
// the `syscall` the guest just ran, 2 bytes back, which the CPU fetched),
// and `iretq` to one that is not would fault in ring 0 at the
// exit's `iretq` only, which the exit backstop hands to the guest as its
// #GP (`idt`). A rip equal to rcx is still the guest's own, and is checked
// canonical before `sysretq`: `sysretq` to a non-canonical rcx faults in
// ring 0 on Intel CPUs with the guest's rsp and GS loaded, which no
// backstop can recover. The guest makes one simply by running
// `syscall` as the last two bytes below 0x0000_8000_0000_0000 (the
// SYSRET problem of Xen's XSA-7); it gets the #GP its next instruction
// fetch would raise instead (`sluice_syscall_bad_rip`). The selectors
// are not compared: `sysretq` loads Xen's flat ones from STAR, and no
// hypervisor path puts others in a guest's frame (HYPERVISOR_iret
// refuses them, the bounce and `enter_guest` write or
// check the flat ones). A hypercall that left the frame as `syscall` made
// it passes; one that edited it (HYPERVISOR_iret, an upcall's bounce, a
// continuation) may leave through `iretq`. On the `sysretq` exit rbx and
// r12-r15 still hold the guest's values: the hook is a C-ABI function,
// which preserves them, and the hypervisor never edits those fields of a
// hypercall's frame (`GuestHooks::hypercall`). rbp is reloaded (the entry
// zeroes it to end backtraces).
core::arch::global_asm!(
    r#"
    .section .text.sluice_guest_entry, "ax"
    .balign 16
    .global sluice_syscall_entry
sluice_syscall_entry:
    swapgs
    mov gs:[{scratch}], rsp
    mov rsp, gs:[{stack_top}]
    push {ss}
    push qword ptr gs:[{scratch}]
    push r11
    push {cs}
    push rcx
    push 0
    push {vector}
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    xor ebp, ebp
    mov rdi, rsp
    call qword ptr [rip + {hook}]
    mov rcx, [rsp + {rip}]
    cmp rcx, [rsp + {rcx}]
    jne .Lsluice_syscall_exit_iret
    mov rax, rcx
    sar rax, 47
    inc rax
    cmp rax, 1
    ja .Lsluice_syscall_bad_rip
    mov r11, [rsp + {rflags}]
    cmp r11, [rsp + {r11}]
    jne .Lsluice_syscall_exit_iret
    test r11d, {rflags_if}
    jz .Lsluice_syscall_exit_iret
    mov rax, [rsp + {rax}]
    mov rdx, [rsp + {rdx}]
    mov rsi, [rsp + {rsi}]
    mov rdi, [rsp + {rdi}]
    mov rbp, [rsp + {rbp}]
    mov r8, [rsp + {r8}]
    mov r9, [rsp + {r9}]
    mov r10, [rsp + {r10}]
    mov rsp, [rsp + {rsp}]
    swapgs
    sysretq

.Lsluice_syscall_bad_rip:
    mov rdi, rsp
    call {bad_rip}
    jmp sluice_guest_exit_iret

    .balign 16
    .global sluice_guest_exit_iret
sluice_guest_exit_iret:
    pop r15
    pop r14
    pop r13
    pop r12
    jmp 2f
    // The `syscall` entry's `iretq` exit: r12-r15 still hold the guest's
    // values, as on its `sysretq` exit (the hook preserves them and no
    // hypervisor path edits them in a hypercall's frame), so they are
    // skipped rather than popped.
.Lsluice_syscall_exit_iret:
    add rsp, 32
2:
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
    swapgs
    // A fault of this iretq is the guest's (`idt`: the exit backstop).
    .global sluice_guest_exit_iretq
sluice_guest_exit_iretq:
    iretq
    .text
"#,
    scratch = const GUEST_RSP_SCRATCH_OFFSET,
    stack_top = const GUEST_STACK_TOP_OFFSET,
    ss = const FLAT_RING3_DS as u64,
    cs = const FLAT_RING3_CS64 as u64,
    vector = const SYSCALL_VECTOR,
    hook = sym SLUICE_HYPERCALL_HOOK,
    bad_rip = sym sluice_syscall_bad_rip,
    rflags_if = const 1u32 << 9,
    rip = const offset_of!(InterruptFrame, rip),
    rcx = const offset_of!(InterruptFrame, rcx),
    rflags = const offset_of!(InterruptFrame, rflags),
    r11 = const offset_of!(InterruptFrame, r11),
    rax = const offset_of!(InterruptFrame, rax),
    rdx = const offset_of!(InterruptFrame, rdx),
    rsi = const offset_of!(InterruptFrame, rsi),
    rdi = const offset_of!(InterruptFrame, rdi),
    rbp = const offset_of!(InterruptFrame, rbp),
    r8 = const offset_of!(InterruptFrame, r8),
    r9 = const offset_of!(InterruptFrame, r9),
    r10 = const offset_of!(InterruptFrame, r10),
    rsp = const offset_of!(InterruptFrame, rsp),
);

unsafe extern "C" {
    fn sluice_syscall_entry();
    fn sluice_guest_exit_iret();
}

/// Called by the `syscall` entry when the hypercall hook left the rip
/// `syscall` saved (still equal to the frame's rcx) and it is not
/// canonical, which neither exit can return to without faulting in ring
/// 0. The guest gets what the CPU gives it after such a return on a CPU
/// whose return does not fault: a #GP (error code 0) at that rip,
/// through the exception hook and then the return hook, as an exception
/// from ring 3 would. If the hooks still leave a rip that is not canonical,
/// the hypervisor cannot return at all: that is fatal.
extern "C" fn sluice_syscall_bad_rip(frame: &mut InterruptFrame) {
    frame.vector = u64::from(crate::vectors::GENERAL_PROTECTION);
    frame.error_code = 0;
    if let Some(hooks) = hooks() {
        (hooks.exception)(frame);
        (hooks.before_return)(frame);
    }
    if !is_canonical(frame.rip) {
        crate::fatal::exception(frame);
    }
}

/// Whether `address` is canonical (bits 63..47 all equal).
pub const fn is_canonical(address: u64) -> bool {
    let top = (address as i64) >> 47;
    top == 0 || top == -1
}

/// Makes `stack_top` the hypervisor stack of the vcpu this CPU runs from
/// now on: the `syscall` entry and interrupts from ring 3 land there.
pub fn set_vcpu_stack(stack_top: u64) {
    let cpu = percpu::current();
    cpu.guest_stack_top.store(stack_top, Ordering::Relaxed);
    if let Some(tables) = cpu.tables() {
        let _ = tables.set_rsp0(stack_top);
    }
}

/// A vcpu's hypervisor stack: where `syscall` and interrupts from the
/// guest land while the vcpu runs.
#[derive(Debug)]
pub struct VcpuStack {
    stack: crate::stack::Stack,
}

impl VcpuStack {
    /// Dedicates `stack` to one vcpu.
    pub fn new(stack: crate::stack::Stack) -> Self {
        Self { stack }
    }

    /// One past its highest address.
    pub fn top(&self) -> u64 {
        self.stack.top()
    }

    /// Gives the stack back (to be released when no CPU can be on it).
    pub fn into_stack(self) -> crate::stack::Stack {
        self.stack
    }

    fn contains(&self, address: u64) -> bool {
        let range = self.stack.range();
        (range.bottom..range.top).contains(&address)
    }
}

/// Why [`enter_guest`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnterError {
    /// The caller runs on the vcpu's own stack.
    OnVcpuStack,
    /// The frame does not name Xen's flat ring-3 selectors.
    NotRingThree,
    /// The frame's rip is not canonical.
    NotCanonical,
    /// The page tables do not share the hypervisor's slots with the live ones.
    ForeignTables,
}

/// Enters a guest vcpu afresh: copies `frame` to the top of the vcpu's
/// stack, switches to the vcpu's page tables `root` and returns to ring 3
/// with `iretq`. Returns only if refused. Must not run on the vcpu's stack
/// (anything on it is overwritten).
pub fn enter_guest(frame: &InterruptFrame, stack: &VcpuStack, root: u64) -> EnterError {
    match prepare_entry(frame, stack, root) {
        Ok(entry) => entry.enter(),
        Err(error) => error,
    }
}

/// A vcpu entry made ready by [`prepare_entry`]: the frame is on the vcpu's
/// stack, which this CPU now uses for interrupts from ring 3. The stack
/// and the tables need no further borrow, so whatever owns them may be
/// dropped before [`GuestEntry::enter`] (the abandoned caller's frames
/// could never drop it).
#[derive(Debug)]
pub struct GuestEntry {
    root: u64,
    target: u64,
    /// Entered on the CPU that prepared it.
    _not_send: core::marker::PhantomData<*const ()>,
}

/// The checks and the stack set-up of [`enter_guest`], with interrupts
/// left off; nothing is entered yet.
pub fn prepare_entry(
    frame: &InterruptFrame,
    stack: &VcpuStack,
    root: u64,
) -> Result<GuestEntry, EnterError> {
    if stack.contains(cpu::stack_pointer()) {
        return Err(EnterError::OnVcpuStack);
    }
    if frame.cs != u64::from(FLAT_RING3_CS64) || frame.ss != u64::from(FLAT_RING3_DS) {
        return Err(EnterError::NotRingThree);
    }
    // iretq to a non-canonical rip faults in ring 0.
    if !is_canonical(frame.rip) {
        return Err(EnterError::NotCanonical);
    }
    if !crate::paging::shares_hypervisor_slots(root) {
        return Err(EnterError::ForeignTables);
    }
    cpu::disable_interrupts();
    set_vcpu_stack(stack.top());
    let size = core::mem::size_of::<InterruptFrame>() as u64;
    let target = stack.top() - size;
    // SAFETY: the vcpu's stack is mapped, writable and exclusive to it
    // (`Stack`), nothing on it is live (we do not run on it: checked
    // above), and the frame fits below its top.
    unsafe { core::ptr::write(target as *mut InterruptFrame, frame.clone()) };
    Ok(GuestEntry {
        root,
        target,
        _not_send: core::marker::PhantomData,
    })
}

impl GuestEntry {
    /// Loads the tables and returns to ring 3 through the frame.
    pub fn enter(self) -> ! {
        let exit = sluice_guest_exit_iret as *const () as u64;
        // SAFETY: `root` maps the hypervisor's slots exactly as the live
        // tables (checked by `prepare_entry`), so this code, the stack and
        // the per-CPU block stay mapped across the CR3 load (which drops
        // another domain's global entries: `switch_root`).
        unsafe { crate::paging::switch_root(self.root) };
        // SAFETY: the vcpu stack stays mapped until every CPU has passed a
        // point where it cannot be on it (`Stack::release`), which this CPU
        // has not; the exit path pops exactly the one InterruptFrame
        // written at `target` and `iretq`s to ring 3 (selectors checked).
        unsafe {
            core::arch::asm!(
                "mov rsp, {target}",
                "jmp {exit}",
                target = in(reg) self.target,
                exit = in(reg) exit,
                options(noreturn)
            );
        }
    }
}

/// Switches this CPU to the page tables at `root` (a guest's), after
/// checking that they map the hypervisor's slots as the live ones do.
pub fn switch_page_tables(root: u64) -> Result<(), EnterError> {
    if !crate::paging::shares_hypervisor_slots(root) {
        return Err(EnterError::ForeignTables);
    }
    // SAFETY: the hypervisor's slots are identical (checked above), so
    // everything the hypervisor uses stays mapped across the switch.
    unsafe { load_page_tables(root) };
    Ok(())
}

/// Loads `root` into CR3 (a guest's page tables, which share the
/// hypervisor's slots).
///
/// # Safety
/// `root` must map the hypervisor's slots exactly as the live tables do.
pub unsafe fn load_page_tables(root: u64) {
    // SAFETY: (caller) everything the hypervisor uses stays mapped; a
    // switch to another domain's tables drops its global entries.
    unsafe { crate::paging::switch_root(root) };
}
