//! Starting application processors: the real-mode trampoline and
//! INIT-SIPI-SIPI.
//!
//! A start-up IPI makes a CPU run in real mode at `page * 4096`, so the
//! trampoline is copied to `TRAMPOLINE_PHYS` below 1 MiB. It loads its own
//! small GDT, enters protected mode, enables PAE, loads the CR3 it was given
//! (tables that identity-map the trampoline page and share the hypervisor's
//! upper half), enables long mode and NX, and jumps to `ap_entry` on the
//! stack it was given. `ap_entry` switches to the hypervisor's tables and
//! sets the CPU up like the bootstrap processor.

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::cpu::{self, Features};
use crate::gdt::CpuTables;
use crate::layout::phys_to_virt;
use crate::paging::{FrameSource, MapError, PageTableFlags, PageTables};
use crate::percpu::{self, PerCpu};
use crate::stack::Stack;
use crate::{idt, lapic, tsc};

/// Physical address the trampoline runs at (start-up vector 0x08).
pub const TRAMPOLINE_PHYS: u64 = 0x8000;

core::arch::global_asm!(
    r#"
    .section .rodata.sluice_ap_trampoline, "a"
    .balign 16
    .global sluice_ap_trampoline_start
sluice_ap_trampoline_start:
    .code16
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    lgdtl (sluice_ap_gdt_ptr - sluice_ap_trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $0x08, $({base} + sluice_ap_32 - sluice_ap_trampoline_start)
    .code32
sluice_ap_32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov ({base} + sluice_ap_cr3 - sluice_ap_trampoline_start), %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $0x900, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80010000, %eax
    mov %eax, %cr0
    ljmp $0x18, $({base} + sluice_ap_64 - sluice_ap_trampoline_start)
    .code64
sluice_ap_64:
    xor %eax, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov sluice_ap_stack(%rip), %rsp
    mov sluice_ap_argument(%rip), %rdi
    mov sluice_ap_entry(%rip), %rax
    xor %ebp, %ebp
    pushq $0
    jmp *%rax
    .balign 8
sluice_ap_gdt:
    .quad 0
    .quad 0x00cf9a000000ffff
    .quad 0x00cf92000000ffff
    .quad 0x00af9a000000ffff
sluice_ap_gdt_ptr:
    .word 31
    .long {base} + sluice_ap_gdt - sluice_ap_trampoline_start
    .balign 8
    .global sluice_ap_cr3
sluice_ap_cr3:
    .quad 0
    .global sluice_ap_stack
sluice_ap_stack:
    .quad 0
    .global sluice_ap_entry
sluice_ap_entry:
    .quad 0
    .global sluice_ap_argument
sluice_ap_argument:
    .quad 0
    .global sluice_ap_trampoline_end
sluice_ap_trampoline_end:
    .text
"#,
    base = const TRAMPOLINE_PHYS,
    options(att_syntax)
);

unsafe extern "C" {
    static sluice_ap_trampoline_start: u8;
    static sluice_ap_trampoline_end: u8;
    static sluice_ap_cr3: u8;
    static sluice_ap_stack: u8;
    static sluice_ap_entry: u8;
    static sluice_ap_argument: u8;
}

/// Kicks `cpu`: sends it the `KICK` IPI, which wakes it from `hlt` and
/// runs the kick handler there.
pub fn kick(cpu: &PerCpu) {
    lapic::send_ipi(cpu.apic_id(), crate::vectors::KICK);
}

/// Proof that the trampoline page (`TRAMPOLINE_PHYS`, 4 KiB) is RAM that
/// nothing else uses.
#[derive(Debug)]
pub struct TrampolinePage {
    _private: (),
}

static TRAMPOLINE_CLAIMED: AtomicBool = AtomicBool::new(false);

impl TrampolinePage {
    /// Claims the trampoline page; `None` if it was claimed before.
    ///
    /// # Safety
    /// The page at `TRAMPOLINE_PHYS` must be usable RAM, mapped in the
    /// direct map, that no allocator hands out and nothing else writes.
    pub unsafe fn claim() -> Option<Self> {
        let was_claimed = TRAMPOLINE_CLAIMED.swap(true, Ordering::AcqRel);
        (!was_claimed).then_some(Self { _private: () })
    }
}

/// Page tables for the trampoline: the trampoline page identity-mapped
/// plus the hypervisor's slots, shared with the tables this CPU runs on.
#[derive(Debug)]
pub struct TrampolineTables {
    trampoline_root: u64,
    hypervisor_root: u64,
}

/// Builds the trampoline's tables from the live ones (which the APs will
/// switch to as soon as they reach the hypervisor's address range).
pub fn build_trampoline_tables(
    frames: &mut impl FrameSource,
) -> Result<TrampolineTables, StartError> {
    let hypervisor = PageTables::from_root(cpu::cr3());
    let mut tables = PageTables::new(frames).ok_or(StartError::Memory(MapError::OutOfFrames))?;
    tables
        .map_4k(
            TRAMPOLINE_PHYS,
            TRAMPOLINE_PHYS,
            PageTableFlags::WRITABLE,
            frames,
        )
        .map_err(StartError::Memory)?;
    tables.share_hypervisor_slots(&hypervisor);
    // The trampoline loads CR3 in 32-bit mode.
    if tables.root_phys() >= 1 << 32 {
        return Err(StartError::TrampolineTablesTooHigh);
    }
    Ok(TrampolineTables {
        trampoline_root: tables.root_phys(),
        hypervisor_root: hypervisor.root_phys(),
    })
}

/// What an application processor needs to set itself up.
#[derive(Debug)]
pub struct ApStart {
    /// Its per-CPU block.
    pub cpu: &'static PerCpu,
    /// Its GDT/TSS (not yet loaded anywhere).
    pub tables: &'static CpuTables,
    /// Its kernel stack.
    pub kernel_stack: Stack,
    /// Its #DF, NMI and #MC stacks.
    pub ist: [Stack; 3],
    /// The features to enable (same on every CPU).
    pub features: Features,
    /// Where the CPU goes once set up (never returns).
    pub next: fn(&'static PerCpu) -> !,
}

/// What the AP finds through the trampoline's argument.
struct Handoff {
    start: ApStart,
    hypervisor_root: u64,
    apic_id: u32,
}

/// Why an AP did not come up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartError {
    /// No memory for the trampoline tables.
    Memory(MapError),
    /// The trampoline tables are above 4 GiB.
    TrampolineTablesTooHigh,
    /// The CPU did not report in within the timeout.
    Timeout,
}

/// APIC id + 1 of the last AP that took its hand-off (0: none yet).
static STARTED: AtomicU32 = AtomicU32::new(0);

fn symbol_offset(symbol: *const u8) -> u64 {
    symbol as u64 - (&raw const sluice_ap_trampoline_start) as u64
}

/// Puts the CPUs with `apic_ids` into wait-for-SIPI with an INIT IPI each
/// and waits the 10 ms the MP specification asks for before the start-up
/// IPIs; `start_ap` then starts them one at a time. (One wait for all
/// instead of one per CPU saves 10 ms per AP.)
pub fn init_all(apic_ids: impl Iterator<Item = u32>) {
    for apic_id in apic_ids {
        lapic::send_init(apic_id);
    }
    tsc::delay_micros(10_000);
}

/// Starts the CPU with APIC id `apic_id`, which `init_all` put into
/// wait-for-SIPI, with `start`, and waits (up to `timeout_micros`) until it
/// has taken it over. One AP at a time: they share the trampoline.
///
/// On a timeout the hand-off is leaked rather than freed: the CPU may still
/// wake up later and read it.
pub fn start_ap(
    page: &mut TrampolinePage,
    tables: &TrampolineTables,
    apic_id: u32,
    start: ApStart,
    timeout_micros: u64,
) -> Result<(), StartError> {
    let _ = page;
    let kernel_stack_top = start.kernel_stack.top();
    let handoff = Box::into_raw(Box::new(Handoff {
        start,
        hypervisor_root: tables.hypervisor_root,
        apic_id,
    }));
    let source = (&raw const sluice_ap_trampoline_start) as u64;
    let length = (&raw const sluice_ap_trampoline_end) as u64 - source;
    let target = phys_to_virt(TRAMPOLINE_PHYS);
    // SAFETY: `TrampolinePage` proves the target page is reserved RAM in
    // the direct map, written by nothing else; the trampoline is a few
    // hundred bytes (< 4 KiB) of the image's read-only data; the regions do
    // not overlap.
    unsafe {
        core::ptr::copy_nonoverlapping(source as *const u8, target as *mut u8, length as usize);
    }
    let fields = [
        (
            symbol_offset(&raw const sluice_ap_cr3),
            tables.trampoline_root,
        ),
        (symbol_offset(&raw const sluice_ap_stack), kernel_stack_top),
        (
            symbol_offset(&raw const sluice_ap_entry),
            ap_entry as *const () as u64,
        ),
        (symbol_offset(&raw const sluice_ap_argument), handoff as u64),
    ];
    for (offset, value) in fields {
        // SAFETY: each offset is an 8-aligned `.quad` inside the copy just
        // written to the reserved trampoline page.
        unsafe { core::ptr::write_volatile((target + offset) as *mut u64, value) };
    }
    // SeqCst fence: the trampoline and hand-off writes must be visible
    // before the IPI (an APIC write is no Rust ordering point).
    core::sync::atomic::fence(Ordering::SeqCst);

    let wanted = apic_id + 1;
    lapic::send_startup(apic_id, (TRAMPOLINE_PHYS >> 12) as u8);
    tsc::delay_micros(200);
    // Acquire: pairs with the Release in `ap_entry`.
    if STARTED.load(Ordering::Acquire) != wanted {
        lapic::send_startup(apic_id, (TRAMPOLINE_PHYS >> 12) as u8);
    }
    let deadline = cpu::rdtsc().saturating_add(tsc::micros_to_ticks(timeout_micros));
    while STARTED.load(Ordering::Acquire) != wanted {
        if cpu::rdtsc() > deadline {
            return Err(StartError::Timeout);
        }
        core::hint::spin_loop();
    }
    Ok(())
}

/// First Rust code of an application processor (from the trampoline).
extern "C" fn ap_entry(argument: u64) -> ! {
    // SAFETY: `argument` is the `Box<Handoff>` that `start_ap` leaked for
    // this CPU alone (one AP per trampoline run); taking it back here is
    // its only other use.
    let handoff = unsafe { Box::from_raw(argument as *mut Handoff) };
    let Handoff {
        start,
        hypervisor_root,
        apic_id,
    } = *handoff;
    let hypervisor_tables = PageTables::from_root(hypervisor_root);
    // SAFETY: these are the tables the BSP runs on (read from its CR3 by
    // `build_trampoline_tables`); they map this code, the stack we run on
    // (vmap, which the trampoline tables share) and every hypervisor
    // object; the identity-mapped trampoline page is not used again.
    unsafe { hypervisor_tables.activate() };
    cpu::enable_protections(&start.features);
    percpu::install(start.cpu);
    if start.tables.load(start.ist).is_err() {
        crate::qemu::exit(crate::qemu::ExitCode::Panic);
    }
    start.cpu.set_tables(start.tables);
    idt::load();
    lapic::enable();
    start.cpu.set_apic_id(lapic::id());
    // `start.kernel_stack` is the stack this CPU runs on from now on; the
    // token is simply never handed to anything else.
    // Release: pairs with the Acquire in `start_ap`.
    STARTED.store(apic_id + 1, Ordering::Release);
    (start.next)(start.cpu)
}
