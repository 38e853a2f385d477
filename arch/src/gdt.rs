//! Per-CPU GDT and TSS, laid out as Xen lays out its reserved GDT page.
//!
//! Xen PV guests own GDT entries below 0xe000 (14 pages of 512 entries, the
//! frames a guest passes to `set_gdt`) and use the hypervisor's flat
//! selectors above it (`FLAT_RING3_CS64` = 0xe033 and friends), which guest
//! code hard-codes. Sluice keeps the same selector values so that guests see
//! the same numbers as on Xen. The ring-3 entries are in the `syscall`/
//! `sysret` order: STAR's sysret base 0xe023 gives CS 0xe033 and SS 0xe02b.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::{DescriptorTablePointer, lgdt, load_tss};
use x86_64::registers::segmentation::SegmentSelector;
use x86_64::structures::tss::TaskStateSegment;

use crate::stack::Stack;

/// GDT entries: 14 guest pages plus Sluice's reserved page.
pub const GDT_ENTRIES: usize = 15 * 512;
/// First entry of the hypervisor's reserved page (byte offset 0xe000).
pub const FIRST_RESERVED_GDT_ENTRY: usize = 14 * 512;

/// 64-bit ring-0 code (Xen's `__HYPERVISOR_CS`).
pub const HYPERVISOR_CS: u16 = 0xe008;
/// Ring-0 data (Xen's `__HYPERVISOR_DS32`).
pub const HYPERVISOR_DS: u16 = 0xe010;
/// 32-bit ring-0 code (Xen's `__HYPERVISOR_CS32`).
pub const HYPERVISOR_CS32: u16 = 0xe018;
/// 32-bit ring-3 code (Xen's `FLAT_RING3_CS32`); also STAR's sysret base.
pub const FLAT_RING3_CS32: u16 = 0xe023;
/// Ring-3 data and stack (Xen's `FLAT_RING3_DS32`/`FLAT_RING3_SS64`).
pub const FLAT_RING3_DS: u16 = 0xe02b;
/// 64-bit ring-3 code (Xen's `FLAT_RING3_CS64`).
pub const FLAT_RING3_CS64: u16 = 0xe033;
/// The TSS (Xen's `TSS_ENTRY` 0xe040, two entries).
pub const TSS_SELECTOR: u16 = 0xe040;

/// IST slot (1-based, as in IDT entries) of the #DF stack.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST slot of the NMI stack.
pub const IST_NMI: u8 = 2;
/// IST slot of the #MC stack.
pub const IST_MACHINE_CHECK: u8 = 3;

const CODE64_RING0: u64 = 0x00af_9a00_0000_ffff;
const DATA_RING0: u64 = 0x00cf_9200_0000_ffff;
const CODE32_RING0: u64 = 0x00cf_9a00_0000_ffff;
const CODE32_RING3: u64 = 0x00cf_fa00_0000_ffff;
const DATA_RING3: u64 = 0x00cf_f200_0000_ffff;
const CODE64_RING3: u64 = 0x00af_fa00_0000_ffff;

const fn entry_of(selector: u16) -> usize {
    (selector >> 3) as usize
}

/// One CPU's GDT and TSS.
#[repr(C, align(4096))]
pub struct CpuTables {
    gdt: UnsafeCell<[u64; GDT_ENTRIES]>,
    tss: UnsafeCell<TaskStateSegment>,
    is_loaded: AtomicBool,
}

/// The tables were loaded on a CPU already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TablesInUse;

// SAFETY: the tables are written only by `load` and `set_ist`/`set_rsp0`,
// which run on the CPU that owns them (with interrupts off for `load`); the
// CPU hardware reads them. No two CPUs share a `CpuTables`.
unsafe impl Sync for CpuTables {}

impl CpuTables {
    /// Empty tables (all zero), for a static.
    pub const fn new() -> Self {
        Self {
            gdt: UnsafeCell::new([0; GDT_ENTRIES]),
            tss: UnsafeCell::new(TaskStateSegment::new()),
            is_loaded: AtomicBool::new(false),
        }
    }

    /// Allocates empty tables on the heap, for the lifetime of the system.
    pub fn new_leaked() -> &'static Self {
        let boxed: alloc::boxed::Box<core::mem::MaybeUninit<Self>> =
            alloc::boxed::Box::new_zeroed();
        // SAFETY: every field is plain integers (GDT words, TSS fields) or an
        // AtomicBool, for which all-zero is a valid value (false), and
        // UnsafeCell adds no invariant.
        let boxed = unsafe { boxed.assume_init() };
        alloc::boxed::Box::leak(boxed)
    }

    /// Fills the reserved GDT entries and the TSS (IST stacks for #DF, NMI
    /// and #MC) and loads GDTR, the segment registers and TR on this CPU.
    /// Tables load once, on one CPU.
    pub fn load(&'static self, ist: [Stack; 3]) -> Result<(), TablesInUse> {
        if self.is_loaded.swap(true, Ordering::AcqRel) {
            return Err(TablesInUse);
        }
        let ist_tops = ist.map(|stack| stack.top());
        crate::cpu::without_interrupts(|| {
            let tss_addr = self.tss.get() as u64;
            let tss_limit = (core::mem::size_of::<TaskStateSegment>() - 1) as u64;
            let tss_low = (tss_limit & 0xffff)
                | ((tss_addr & 0xff_ffff) << 16)
                | (0x89 << 40)
                | (((tss_limit >> 16) & 0xf) << 48)
                | (((tss_addr >> 24) & 0xff) << 56);
            let tss_high = tss_addr >> 32;
            // SAFETY: `is_loaded` lets one caller through, on the CPU that
            // loads them; the GDT is not live until `lgdt` below, so no
            // other reference exists.
            let gdt = unsafe { &mut *self.gdt.get() };
            // SAFETY: as above; the TSS is not loaded yet, so the CPU does
            // not read it concurrently.
            let tss = unsafe { &mut *self.tss.get() };
            let entries = [
                (HYPERVISOR_CS, CODE64_RING0),
                (HYPERVISOR_DS, DATA_RING0),
                (HYPERVISOR_CS32, CODE32_RING0),
                (FLAT_RING3_CS32 & !3, CODE32_RING3),
                (FLAT_RING3_DS & !3, DATA_RING3),
                (FLAT_RING3_CS64 & !3, CODE64_RING3),
                (TSS_SELECTOR, tss_low),
                (TSS_SELECTOR + 8, tss_high),
            ];
            for (selector, descriptor) in entries {
                if let Some(slot) = gdt.get_mut(entry_of(selector)) {
                    *slot = descriptor;
                }
            }
            // The TSS is packed: copy the table out, update, store it back.
            let mut stacks = tss.interrupt_stack_table;
            for (slot, top) in stacks.iter_mut().zip(ist_tops) {
                *slot = VirtAddr::new(top);
            }
            tss.interrupt_stack_table = stacks;
            tss.iomap_base = core::mem::size_of::<TaskStateSegment>() as u16;

            let pointer = DescriptorTablePointer {
                limit: (GDT_ENTRIES * 8 - 1) as u16,
                base: VirtAddr::new(gdt.as_ptr() as u64),
            };
            // SAFETY: the GDT lives for 'static and holds valid flat code and
            // data descriptors at the selectors loaded next.
            unsafe { lgdt(&pointer) };
            // SAFETY: 0xe008 is a present 64-bit ring-0 code segment and
            // 0xe010 a present ring-0 data segment in the GDT just loaded.
            unsafe {
                CS::set_reg(SegmentSelector(HYPERVISOR_CS));
            }
            // SAFETY: as above (data segments).
            unsafe {
                SS::set_reg(SegmentSelector(HYPERVISOR_DS));
            }
            // SAFETY: as above.
            unsafe {
                DS::set_reg(SegmentSelector(HYPERVISOR_DS));
            }
            // SAFETY: as above.
            unsafe {
                ES::set_reg(SegmentSelector(HYPERVISOR_DS));
            }
            // SAFETY: 0xe040 is an available 64-bit TSS descriptor pointing at
            // this CPU's 'static TSS.
            unsafe { load_tss(SegmentSelector(TSS_SELECTOR)) };
        });
        Ok(())
    }

    /// Replaces the IST stack of `slot` (1..=7) with `stack` (the old one
    /// is abandoned). Only on the CPU whose tables these are.
    pub fn set_ist(&self, slot: u8, stack: Stack) -> Result<(), TablesInUse> {
        let is_mine = crate::percpu::current()
            .tables()
            .is_some_and(|tables| core::ptr::eq(tables, self));
        if !is_mine {
            return Err(TablesInUse);
        }
        let top = stack.top();
        crate::cpu::without_interrupts(|| {
            // SAFETY: only the owning CPU writes the TSS (`load`, and this
            // after the check above, with interrupts off), so no other
            // reference to it exists
            // meanwhile; the CPU itself reads an IST slot only while
            // delivering that vector.
            let tss = unsafe { &mut *self.tss.get() };
            let mut stacks = tss.interrupt_stack_table;
            if let Some(entry) = stacks.get_mut(usize::from(slot).wrapping_sub(1)) {
                *entry = VirtAddr::new(top);
            }
            tss.interrupt_stack_table = stacks;
        });
        Ok(())
    }
}

impl CpuTables {
    /// Sets the ring-0 stack the CPU switches to when an interrupt or
    /// exception arrives from ring 3 (TSS.RSP0). Only on the CPU whose
    /// tables these are.
    pub fn set_rsp0(&self, top: u64) -> Result<(), TablesInUse> {
        let is_mine = crate::percpu::current()
            .tables()
            .is_some_and(|tables| core::ptr::eq(tables, self));
        if !is_mine {
            return Err(TablesInUse);
        }
        crate::cpu::without_interrupts(|| {
            // SAFETY: only the owning CPU writes its TSS (checked above),
            // with interrupts off; the CPU reads RSP0 only on a ring change,
            // which cannot happen while this runs in ring 0.
            let tss = unsafe { &mut *self.tss.get() };
            let mut stacks = tss.privilege_stack_table;
            if let Some(entry) = stacks.get_mut(0) {
                *entry = VirtAddr::new(top);
            }
            tss.privilege_stack_table = stacks;
        });
        Ok(())
    }
}

impl core::fmt::Debug for CpuTables {
    fn fmt(&self, formatter: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        formatter
            .debug_struct("CpuTables")
            .field("gdt", &self.gdt.get())
            .finish()
    }
}

impl Default for CpuTables {
    fn default() -> Self {
        Self::new()
    }
}
