//! Per-CPU data, reached through the GS base.
//!
//! Each CPU's `IA32_GS_BASE` points at its `PerCpu`, whose first word is its
//! own address, so `mov %gs:0` yields it in one instruction. The bootstrap
//! CPU's block is a static (it is needed before the heap exists); the others
//! are allocated as the CPUs come up.

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::cpu;
use crate::gdt::CpuTables;

/// Most CPUs Sluice supports.
pub const MAX_CPUS: usize = 64;

/// One stack's extent, `[bottom, top)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StackRange {
    /// Lowest address (the guard page is just below).
    pub bottom: u64,
    /// One past the highest address.
    pub top: u64,
}

/// Data private to one CPU.
#[repr(C)]
pub struct PerCpu {
    /// This block's own address (`%gs:0`). Must stay the first field.
    self_address: AtomicU64,
    /// Top of the hypervisor stack of the vcpu this CPU runs (`%gs:8`): the
    /// `syscall` entry switches to it. Must stay the second field.
    pub guest_stack_top: AtomicU64,
    /// Scratch for the guest's `rsp` during `syscall` entry (`%gs:16`).
    /// Must stay the third field.
    pub guest_rsp_scratch: AtomicU64,
    index: u32,
    apic_id: AtomicU32,
    tables: AtomicPtr<CpuTables>,
    is_online: AtomicBool,
    /// LAPIC timer interrupts taken on this CPU.
    pub timer_ticks: AtomicU64,
    /// Kick IPIs taken on this CPU.
    pub kicks_received: AtomicU64,
    /// Free for the hypervisor's own per-CPU state (an address or index).
    pub hypervisor_slot: AtomicUsize,
    /// Free for the hypervisor: what this CPU runs (its domain, vcpu and
    /// that vcpu's vcpu_info, as addresses), which every entry from a guest
    /// reads; here rather than in an array indexed by CPU so that a read
    /// is two loads.
    pub running: [AtomicPtr<()>; 3],
    /// Free for the hypervisor: a hint its every return to a guest tests
    /// with one GS-relative load ([`is_return_hint_set`]), so that work
    /// it rarely has to do there costs one load and a branch when there
    /// is none.
    pub return_hint: AtomicBool,
    /// Page tables whose guest range maps only pages the guest may access
    /// (see `guest_copy::trust_user_only`), or `u64::MAX` for none.
    pub(crate) user_only_root: AtomicU64,
}

impl PerCpu {
    /// A block for CPU number `index` (dense, 0 = bootstrap) with `apic_id`.
    pub const fn new(index: u32, apic_id: u32) -> Self {
        Self {
            self_address: AtomicU64::new(0),
            guest_stack_top: AtomicU64::new(0),
            guest_rsp_scratch: AtomicU64::new(0),
            index,
            apic_id: AtomicU32::new(apic_id),
            tables: AtomicPtr::new(core::ptr::null_mut()),
            is_online: AtomicBool::new(false),
            timer_ticks: AtomicU64::new(0),
            kicks_received: AtomicU64::new(0),
            hypervisor_slot: AtomicUsize::new(0),
            running: [const { AtomicPtr::new(core::ptr::null_mut()) }; 3],
            return_hint: AtomicBool::new(false),
            user_only_root: AtomicU64::new(u64::MAX),
        }
    }

    /// Dense CPU number (0 = bootstrap processor).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The CPU's local APIC id.
    pub fn apic_id(&self) -> u32 {
        self.apic_id.load(Ordering::Relaxed)
    }

    /// Records the APIC id (the bootstrap CPU learns its own late).
    pub fn set_apic_id(&self, apic_id: u32) {
        self.apic_id.store(apic_id, Ordering::Relaxed);
    }

    /// Whether the CPU finished bring-up and idles or runs work.
    pub fn is_online(&self) -> bool {
        // Acquire: pairs with the Release in `mark_online`, so whoever sees
        // the CPU online also sees its set-up writes.
        self.is_online.load(Ordering::Acquire)
    }

    /// Marks the CPU online (called by the CPU itself at the end of
    /// bring-up).
    pub fn mark_online(&self) {
        // Release: pairs with the Acquire in `is_online`.
        self.is_online.store(true, Ordering::Release);
    }

    /// The CPU's GDT/TSS, once loaded.
    pub fn tables(&self) -> Option<&'static CpuTables> {
        let pointer = self.tables.load(Ordering::Acquire);
        // SAFETY: the pointer is null or was stored from a `&'static
        // CpuTables` in `set_tables` (Release, pairs with this Acquire).
        unsafe { pointer.as_ref() }
    }

    /// Records the CPU's GDT/TSS.
    pub fn set_tables(&self, tables: &'static CpuTables) {
        self.tables
            .store(core::ptr::from_ref(tables).cast_mut(), Ordering::Release);
    }
}

impl core::fmt::Debug for PerCpu {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("PerCpu")
            .field("index", &self.index)
            .field("apic_id", &self.apic_id())
            .finish()
    }
}

/// Offset of [`PerCpu::guest_stack_top`] (used by the `syscall` entry).
pub const GUEST_STACK_TOP_OFFSET: usize = core::mem::offset_of!(PerCpu, guest_stack_top);
/// Offset of [`PerCpu::guest_rsp_scratch`] (used by the `syscall` entry).
pub const GUEST_RSP_SCRATCH_OFFSET: usize = core::mem::offset_of!(PerCpu, guest_rsp_scratch);
const _: () = assert!(GUEST_STACK_TOP_OFFSET == 8 && GUEST_RSP_SCRATCH_OFFSET == 16);
/// Offset of [`PerCpu::running`].
const RUNNING_OFFSET: usize = core::mem::offset_of!(PerCpu, running);
/// Offset of [`PerCpu::return_hint`].
const RETURN_HINT_OFFSET: usize = core::mem::offset_of!(PerCpu, return_hint);
/// Offset of [`PerCpu::user_only_root`].
const USER_ONLY_ROOT_OFFSET: usize = core::mem::offset_of!(PerCpu, user_only_root);

/// The bootstrap processor's block. The boot entry (`boot`) stores its
/// address in its first word and points GS at it before any Rust code runs.
pub(crate) static BSP: PerCpu = PerCpu::new(0, 0);
/// Every registered CPU by dense index.
static CPUS: [AtomicPtr<PerCpu>; MAX_CPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_CPUS];
/// How many CPUs are registered.
static CPU_COUNT: AtomicU32 = AtomicU32::new(0);

/// The bootstrap processor's block.
pub fn bsp() -> &'static PerCpu {
    &BSP
}

/// Registers `cpu` (so IPIs and the fatal path can find it) and points this
/// CPU's GS base at it. Call once, on the CPU `cpu` describes, before
/// anything reads `current()` there.
pub fn install(cpu: &'static PerCpu) {
    let address = core::ptr::from_ref(cpu) as u64;
    cpu.self_address.store(address, Ordering::Relaxed);
    if let Some(slot) = CPUS.get(cpu.index as usize) {
        // Release: pairs with the Acquire in `by_index`.
        slot.store(core::ptr::from_ref(cpu).cast_mut(), Ordering::Release);
        CPU_COUNT.fetch_max(cpu.index + 1, Ordering::AcqRel);
    }
    // SAFETY: IA32_GS_BASE exists on every x86_64 CPU; pointing it at a
    // 'static PerCpu is the invariant `current` relies on.
    unsafe { cpu::write_msr(cpu::MSR_GS_BASE, address) };
}

/// This CPU's block.
#[inline]
pub fn current() -> &'static PerCpu {
    let address: u64;
    // SAFETY: every CPU running Rust code has its GS base pointing at its
    // PerCpu, whose first word is its own address: the bootstrap CPU's
    // from the boot entry on (`boot` points it at `BSP`, which `install`
    // keeps), each AP's from its `install`, the first thing it runs.
    unsafe {
        core::arch::asm!("mov {}, gs:[0]", out(reg) address, options(nostack, readonly, preserves_flags));
    }
    // SAFETY: the address was stored from a `&'static PerCpu` in `install`.
    unsafe { &*(address as *const PerCpu) }
}

/// Word `INDEX` of this CPU's [`PerCpu::running`], as a Relaxed load of
/// it would give, in one GS-relative load (`current().running[INDEX]`
/// costs two: the block's address, then the word). Every guest entry
/// reads these.
#[inline(always)]
pub fn running_word<const INDEX: usize>() -> *mut () {
    const { assert!(INDEX < 3) };
    let value: *mut ();
    // SAFETY: GS points at this CPU's PerCpu (as in `current`), and the
    // operand is the address of `running[INDEX]` in it (INDEX < 3, checked
    // at compile time): an aligned pointer-sized atomic, so this plain
    // load reads it as a Relaxed load would (aligned 8-byte loads are
    // single-copy atomic on x86_64).
    unsafe {
        core::arch::asm!(
            "mov {value}, gs:[{offset}]",
            value = out(reg) value,
            offset = const RUNNING_OFFSET + INDEX * core::mem::size_of::<AtomicPtr<()>>(),
            options(nostack, readonly, preserves_flags)
        );
    }
    value
}

/// Whether CR3, as it is, equals this CPU's [`PerCpu::user_only_root`]
/// (read as a Relaxed load would), in one compare with a GS-relative
/// operand and a branch (every guarded guest access asks).
#[inline(always)]
pub(crate) fn is_cr3_user_only_root() -> bool {
    // SAFETY: reading CR3 in ring 0 has no side effect; GS points at this
    // CPU's PerCpu (as in `current`), and the memory operand is the
    // address of its `user_only_root`, an aligned `AtomicU64`, which this
    // plain compare reads as a Relaxed load would (aligned 8-byte loads
    // are single-copy atomic on x86_64); the jump goes to the block that
    // returns false.
    unsafe {
        core::arch::asm!(
            "mov {cr3}, cr3",
            "cmp {cr3}, gs:[{offset}]",
            "jne {differs}",
            cr3 = out(reg) _,
            offset = const USER_ONLY_ROOT_OFFSET,
            differs = label {
                return false;
            },
            options(nostack, readonly)
        );
    }
    true
}

/// Whether this CPU's [`PerCpu::return_hint`] is set, as a Relaxed load
/// of it would say, in one GS-relative compare and a branch (every return
/// to a guest asks).
#[inline(always)]
pub fn is_return_hint_set() -> bool {
    // SAFETY: GS points at this CPU's PerCpu (as in `current`), and the
    // operand is the address of its `return_hint`, an `AtomicBool` (one
    // byte holding 0 or 1): this plain byte compare reads it as a Relaxed
    // load would; the jump goes to the block that returns true.
    unsafe {
        core::arch::asm!(
            "cmp byte ptr gs:[{offset}], 0",
            "jne {set}",
            offset = const RETURN_HINT_OFFSET,
            set = label {
                return true;
            },
            options(nostack, readonly)
        );
    }
    false
}

/// The registered CPU with dense index `index`.
pub fn by_index(index: u32) -> Option<&'static PerCpu> {
    let pointer = CPUS.get(index as usize)?.load(Ordering::Acquire);
    // SAFETY: non-null entries were stored from `&'static PerCpu`.
    unsafe { pointer.as_ref() }
}

/// How many CPUs are registered (dense indexes `0..count`).
pub fn count() -> u32 {
    CPU_COUNT.load(Ordering::Acquire)
}

/// How many registered CPUs are online.
pub fn online_count() -> u32 {
    (0..count())
        .filter_map(by_index)
        .filter(|cpu| cpu.is_online())
        .count() as u32
}
