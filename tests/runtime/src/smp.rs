//! Secondary vcpus: starting them with VCPUOP_initialise + VCPUOP_up (spec
//! §7.11) on stacks of their own, and telling vcpus apart.
//!
//! A vcpu is known by the stack it runs on: vcpu 0 uses the boot stack,
//! vcpu n its slot in [`SECONDARY_STACKS`]. Upcalls arrive on the
//! interrupted kernel stack (spec §7.4), so the demultiplexer finds the
//! vcpu from its own stack pointer without any per-CPU segment base.
//!
//! The new vcpu starts with the runtime's callbacks, the boot page tables
//! (CR3 = the frame of `start_info.pt_base`), Xen's flat selectors and
//! `evtchn_upcall_mask` still 1 from the domain builder. It calls the entry
//! given to [`start`] and, when that returns, parks in SCHEDOP_block,
//! serving upcalls.

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::errno::Errno;
use crate::hypercall::{hypercall3, nr};
use crate::notes::VIRT_BASE;
use crate::start_info;
use crate::upcall::{entry_address, sluice_event_callback, sluice_failsafe_callback};

/// vcpus the runtime can run (vcpu 0 plus three secondaries).
pub const MAX_VCPUS: usize = 4;
/// Stack size of each secondary vcpu.
pub const SECONDARY_STACK_SIZE: usize = 32 * 1024;

/// VCPUOP_initialise.
pub const VCPUOP_INITIALISE: u64 = 0;
/// vcpu_guest_context flag: `fpu_ctxt` holds the vcpu's x87/SSE state.
pub const VGCF_I387_VALID: u64 = 1 << 0;
/// vcpu_guest_context flag: the vcpu starts in guest kernel mode.
pub const VGCF_IN_KERNEL: u64 = 1 << 2;
/// vcpu_guest_context.flags: the vcpu is up once initialised
/// (`_VGCF_online`).
pub const VGCF_ONLINE: u64 = 1 << 5;
/// FLAT_KERNEL_CS (64-bit PV).
pub const FLAT_KERNEL_CS: u16 = 0xe033;
/// FLAT_KERNEL_SS (64-bit PV).
pub const FLAT_KERNEL_SS: u16 = 0xe02b;

/// struct cpu_user_regs (200 bytes; spec §7.11).
#[repr(C)]
pub struct CpuUserRegs {
    /// General-purpose registers r15 .. rdi, in the ABI's order.
    pub r15: u64,
    /// r14.
    pub r14: u64,
    /// r13.
    pub r13: u64,
    /// r12.
    pub r12: u64,
    /// rbp.
    pub rbp: u64,
    /// rbx.
    pub rbx: u64,
    /// r11.
    pub r11: u64,
    /// r10.
    pub r10: u64,
    /// r9.
    pub r9: u64,
    /// r8.
    pub r8: u64,
    /// rax.
    pub rax: u64,
    /// rcx.
    pub rcx: u64,
    /// rdx.
    pub rdx: u64,
    /// rsi.
    pub rsi: u64,
    /// rdi.
    pub rdi: u64,
    /// Hypervisor-private.
    pub error_code: u32,
    /// Hypervisor-private.
    pub entry_vector: u32,
    /// Instruction pointer.
    pub rip: u64,
    /// Code selector.
    pub cs: u16,
    /// Explicit padding.
    pub _pad0: u16,
    /// Hypervisor-private.
    pub saved_upcall_mask: u8,
    /// Explicit padding.
    pub _pad1: [u8; 3],
    /// Flags.
    pub rflags: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Stack selector (8-byte slot).
    pub ss: u64,
    /// es (8-byte slot).
    pub es: u64,
    /// ds (8-byte slot).
    pub ds: u64,
    /// fs (8-byte slot).
    pub fs: u64,
    /// gs (8-byte slot).
    pub gs: u64,
}
const _: () = assert!(size_of::<CpuUserRegs>() == 200);
const _: () = assert!(offset_of!(CpuUserRegs, rdi) == 112);
const _: () = assert!(offset_of!(CpuUserRegs, error_code) == 120);
const _: () = assert!(offset_of!(CpuUserRegs, entry_vector) == 124);
const _: () = assert!(offset_of!(CpuUserRegs, rip) == 128);
const _: () = assert!(offset_of!(CpuUserRegs, cs) == 136);
const _: () = assert!(offset_of!(CpuUserRegs, saved_upcall_mask) == 140);
const _: () = assert!(offset_of!(CpuUserRegs, rflags) == 144);
const _: () = assert!(offset_of!(CpuUserRegs, rsp) == 152);
const _: () = assert!(offset_of!(CpuUserRegs, ss) == 160);
const _: () = assert!(offset_of!(CpuUserRegs, es) == 168);
const _: () = assert!(offset_of!(CpuUserRegs, ds) == 176);
const _: () = assert!(offset_of!(CpuUserRegs, fs) == 184);
const _: () = assert!(offset_of!(CpuUserRegs, gs) == 192);

/// struct vcpu_guest_context for x86_64 (5168 bytes; spec §7.11).
#[repr(C)]
pub struct VcpuGuestContext {
    /// FXSAVE image, used only with VGCF_i387_valid.
    pub fpu_ctxt: [u8; 512],
    /// VGCF_* flags.
    pub flags: u64,
    /// Initial registers.
    pub user_regs: CpuUserRegs,
    /// Trap table (struct trap_info[256]); all zero = none.
    pub trap_ctxt: [u8; 4096],
    /// LDT base.
    pub ldt_base: u64,
    /// LDT entries.
    pub ldt_ents: u64,
    /// GDT frames.
    pub gdt_frames: [u64; 16],
    /// GDT entries; 0 = the hypervisor's flat selectors only.
    pub gdt_ents: u64,
    /// Kernel stack selector.
    pub kernel_ss: u64,
    /// Kernel stack pointer (used on entry from guest user mode).
    pub kernel_sp: u64,
    /// Control registers; [3] = top-level table frame << 12.
    pub ctrlreg: [u64; 8],
    /// Debug registers.
    pub debugreg: [u64; 8],
    /// Event callback address.
    pub event_callback_eip: u64,
    /// Failsafe callback address.
    pub failsafe_callback_eip: u64,
    /// Syscall callback address.
    pub syscall_callback_eip: u64,
    /// VMASST bits (vcpu 0 only).
    pub vm_assist: u64,
    /// fs base.
    pub fs_base: u64,
    /// Kernel gs base.
    pub gs_base_kernel: u64,
    /// User gs base.
    pub gs_base_user: u64,
}
const _: () = assert!(size_of::<VcpuGuestContext>() == 5168);
const _: () = assert!(offset_of!(VcpuGuestContext, flags) == 512);
const _: () = assert!(offset_of!(VcpuGuestContext, user_regs) == 520);
const _: () = assert!(offset_of!(VcpuGuestContext, trap_ctxt) == 720);
const _: () = assert!(offset_of!(VcpuGuestContext, ldt_base) == 4816);
const _: () = assert!(offset_of!(VcpuGuestContext, ldt_ents) == 4824);
const _: () = assert!(offset_of!(VcpuGuestContext, gdt_frames) == 4832);
const _: () = assert!(offset_of!(VcpuGuestContext, gdt_ents) == 4960);
const _: () = assert!(offset_of!(VcpuGuestContext, kernel_ss) == 4968);
const _: () = assert!(offset_of!(VcpuGuestContext, kernel_sp) == 4976);
const _: () = assert!(offset_of!(VcpuGuestContext, ctrlreg) == 4984);
const _: () = assert!(offset_of!(VcpuGuestContext, debugreg) == 5048);
const _: () = assert!(offset_of!(VcpuGuestContext, event_callback_eip) == 5112);
const _: () = assert!(offset_of!(VcpuGuestContext, failsafe_callback_eip) == 5120);
const _: () = assert!(offset_of!(VcpuGuestContext, syscall_callback_eip) == 5128);
const _: () = assert!(offset_of!(VcpuGuestContext, vm_assist) == 5136);
const _: () = assert!(offset_of!(VcpuGuestContext, fs_base) == 5144);
const _: () = assert!(offset_of!(VcpuGuestContext, gs_base_kernel) == 5152);
const _: () = assert!(offset_of!(VcpuGuestContext, gs_base_user) == 5160);

/// One secondary vcpu's stack.
#[repr(C, align(4096))]
pub struct Stack(UnsafeCell<[u8; SECONDARY_STACK_SIZE]>);

// SAFETY: each stack is used by exactly one vcpu (the one `start` gave it
// to); the runtime itself only compares addresses against it.
unsafe impl Sync for Stack {}

/// Stacks of vcpus 1..MAX_VCPUS.
pub static SECONDARY_STACKS: [Stack; MAX_VCPUS - 1] =
    [const { Stack(UnsafeCell::new([0; SECONDARY_STACK_SIZE])) }; MAX_VCPUS - 1];

/// Entry functions by vcpu, as `fn` addresses; 0 = none.
static ENTRIES: [AtomicUsize; MAX_VCPUS] = [const { AtomicUsize::new(0) }; MAX_VCPUS];

/// The vcpu executing this code, found from the stack pointer.
pub fn current_vcpu() -> u32 {
    let marker = 0u8;
    let here = (&raw const marker) as usize;
    for (index, stack) in SECONDARY_STACKS.iter().enumerate() {
        let bottom = stack.0.get() as usize;
        if (bottom..bottom + SECONDARY_STACK_SIZE).contains(&here) {
            return index as u32 + 1;
        }
    }
    0
}

/// `vcpu`'s entry in a per-vcpu array (`None` past its end).
pub fn slot<T>(array: &[T], vcpu: u32) -> Option<&T> {
    array.get(vcpu as usize)
}

/// Adds one to `vcpu`'s counter in a per-vcpu array of counters (nothing
/// past its end).
pub fn note(counters: &[AtomicU32], vcpu: u32) {
    if let Some(counter) = slot(counters, vcpu) {
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

/// `vcpu`'s counter in a per-vcpu array of counters (0 past its end).
pub fn noted(counters: &[AtomicU32], vcpu: u32) -> u32 {
    slot(counters, vcpu).map_or(0, |counter| counter.load(Ordering::SeqCst))
}

/// The machine frame behind a virtual address of the initial mapping:
/// `mfn_list[(va - VIRT_BASE) / 4096]` (spec §7.9: the initial region is
/// pseudo-physically contiguous from VIRT_BASE, and `mfn_list` is its p2m).
pub fn machine_frame(va: u64) -> Option<u64> {
    let start_info = start_info::get()?;
    let pfn = va.checked_sub(VIRT_BASE)? / 4096;
    if pfn >= start_info.nr_pages {
        return None;
    }
    let entry = start_info.mfn_list.checked_add(pfn * 8)?;
    // SAFETY: mfn_list is the p2m array of nr_pages u64 entries the domain
    // builder mapped for the guest's life; `pfn < nr_pages` keeps the read
    // inside it.
    Some(unsafe { core::ptr::read_volatile(entry as *const u64) })
}

global_asm!(
    r#"
    .pushsection .text.sluice_secondary, "ax"
    .globl sluice_secondary_entry
sluice_secondary_entry:
    cld
    xor ebp, ebp
    call {secondary_start}
2:  ud2
    jmp 2b
    .popsection
    "#,
    secondary_start = sym secondary_start,
);

unsafe extern "C" {
    /// The first instruction of a secondary vcpu (assembly above).
    fn sluice_secondary_entry();
}

/// Rust start of a secondary vcpu: run its entry, then park.
extern "C" fn secondary_start(vcpu: u64) -> ! {
    let raw = ENTRIES
        .get(vcpu as usize)
        .map_or(0, |slot| slot.load(Ordering::SeqCst));
    if raw != 0 {
        // SAFETY: ENTRIES only holds 0 or an `fn(u32)` stored by `start`.
        let entry = unsafe { core::mem::transmute::<usize, fn(u32)>(raw) };
        entry(vcpu as u32);
    }
    loop {
        let _ = crate::sched::block();
    }
}

/// Starts vcpu `vcpu` (1..MAX_VCPUS) at `entry(vcpu)` on its own stack.
///
/// Fails with the hypervisor's errno, or EINVAL for a vcpu the runtime has
/// no stack for or when the page-table frame cannot be found.
pub fn start(vcpu: u32, entry: fn(u32)) -> Result<(), Errno> {
    start_with(vcpu, entry, |_| {})
}

/// As [`start`], with `edit` applied to the context first (e.g. to give
/// the vcpu an x87/SSE image with VGCF_i387_valid).
pub fn start_with(
    vcpu: u32,
    entry: fn(u32),
    edit: impl FnOnce(&mut VcpuGuestContext),
) -> Result<(), Errno> {
    initialise_for(vcpu, entry, edit)?;
    crate::vcpu::up(vcpu)
}

/// As [`start_with`], without the VCPUOP_up: the vcpu is initialised to
/// start at `entry(vcpu)` (e.g. with VGCF_online in the context's flags).
pub fn initialise_for(
    vcpu: u32,
    entry: fn(u32),
    edit: impl FnOnce(&mut VcpuGuestContext),
) -> Result<(), Errno> {
    let slot = ENTRIES.get(vcpu as usize).ok_or(Errno::EINVAL)?;
    let mut context = context_for(vcpu).ok_or(Errno::EINVAL)?;
    edit(&mut context);
    slot.store(entry as usize, Ordering::SeqCst);
    initialise(vcpu, &context)
}

/// The context a secondary vcpu starts from.
fn initial_context(vcpu: u32, stack_top: u64, l4_frame: u64) -> VcpuGuestContext {
    let mut ctrlreg = [0; 8];
    ctrlreg[3] = l4_frame << 12;
    VcpuGuestContext {
        fpu_ctxt: [0; 512],
        flags: VGCF_IN_KERNEL,
        user_regs: CpuUserRegs {
            r15: 0,
            r14: 0,
            r13: 0,
            r12: 0,
            rbp: 0,
            rbx: 0,
            r11: 0,
            r10: 0,
            r9: 0,
            r8: 0,
            rax: 0,
            rcx: 0,
            rdx: 0,
            rsi: 0,
            rdi: u64::from(vcpu),
            error_code: 0,
            entry_vector: 0,
            rip: entry_address(sluice_secondary_entry),
            cs: FLAT_KERNEL_CS,
            _pad0: 0,
            saved_upcall_mask: 0,
            _pad1: [0; 3],
            rflags: 0x202,
            rsp: stack_top,
            ss: u64::from(FLAT_KERNEL_SS),
            es: 0,
            ds: 0,
            fs: 0,
            gs: 0,
        },
        trap_ctxt: [0; 4096],
        ldt_base: 0,
        ldt_ents: 0,
        gdt_frames: [0; 16],
        gdt_ents: 0,
        kernel_ss: u64::from(FLAT_KERNEL_SS),
        kernel_sp: stack_top,
        ctrlreg,
        debugreg: [0; 8],
        event_callback_eip: entry_address(sluice_event_callback),
        failsafe_callback_eip: entry_address(sluice_failsafe_callback),
        syscall_callback_eip: 0,
        vm_assist: 0,
        fs_base: 0,
        gs_base_kernel: 0,
        gs_base_user: 0,
    }
}

/// VCPUOP_initialise of `vcpu` with `context`.
pub fn initialise(vcpu: u32, context: &VcpuGuestContext) -> Result<(), Errno> {
    // SAFETY: the hypervisor reads the 5168-byte context from a live
    // reference and writes nothing back.
    Errno::unit(unsafe {
        hypercall3(
            nr::VCPU_OP,
            VCPUOP_INITIALISE,
            u64::from(vcpu),
            (context as *const VcpuGuestContext) as u64,
        )
    })
}

/// A fresh context for `vcpu` as [`start`] would build it, for tests that
/// call [`initialise`] themselves (e.g. twice).
pub fn context_for(vcpu: u32) -> Option<VcpuGuestContext> {
    let stack = SECONDARY_STACKS.get((vcpu as usize).wrapping_sub(1))?;
    let l4_frame = machine_frame(start_info::get()?.pt_base)?;
    Some(initial_context(
        vcpu,
        stack.0.get() as u64 + SECONDARY_STACK_SIZE as u64,
        l4_frame,
    ))
}
