//! The hypervisor's page tables.
//!
//! Page-table frames are reached through the direct map, so building tables
//! needs only physical frames; during early boot the boot tables cover the
//! first 4 GiB of the direct map, which is where the frame allocator hands
//! out frames first.

use x86_64::structures::paging::mapper::{MapToError, TranslateResult};
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PhysFrame, Size2MiB, Size4KiB,
    Translate,
};
use x86_64::{PhysAddr, VirtAddr};

pub use x86_64::structures::paging::PageTableFlags;

use crate::layout::{DIRECT_MAP_BASE, HYPERVISOR_PML4_FIRST, HYPERVISOR_PML4_LAST, phys_to_virt};

/// A source of free physical frames for page tables.
///
/// # Safety
/// `allocate_frame` must return the physical address of a 4 KiB-aligned
/// frame that nothing else uses and that lies in the direct map's currently
/// mapped part.
pub unsafe trait FrameSource {
    /// A free frame's physical address, or `None` when memory is exhausted.
    fn allocate_frame(&mut self) -> Option<u64>;
}

struct Bridge<'a, F: FrameSource>(&'a mut F);

// SAFETY: `FrameSource`'s contract is exactly FrameAllocator's: unused
// frames only.
unsafe impl<F: FrameSource> FrameAllocator<Size4KiB> for Bridge<'_, F> {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        let phys = self.0.allocate_frame()?;
        PhysFrame::from_start_address(PhysAddr::new(phys)).ok()
    }
}

/// Why a mapping failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// No frame for an intermediate table.
    OutOfFrames,
    /// Something is mapped there already.
    AlreadyMapped,
    /// A huge page covers the address.
    HugePageInTheWay,
    /// Address not aligned to the page size.
    Misaligned,
}

impl<S: x86_64::structures::paging::PageSize> From<MapToError<S>> for MapError {
    fn from(error: MapToError<S>) -> Self {
        match error {
            MapToError::FrameAllocationFailed => Self::OutOfFrames,
            MapToError::PageAlreadyMapped(_) => Self::AlreadyMapped,
            MapToError::ParentEntryHugePage => Self::HugePageInTheWay,
        }
    }
}

/// A set of 4-level page tables, by the physical address of its PML4.
#[derive(Debug)]
pub struct PageTables {
    root: u64,
}

impl PageTables {
    /// New, empty tables.
    pub fn new(frames: &mut impl FrameSource) -> Option<Self> {
        let root = frames.allocate_frame()?;
        let tables = Self { root };
        tables.root_table().zero();
        Some(tables)
    }

    /// The tables CR3 points at.
    pub fn current() -> Self {
        Self {
            root: crate::cpu::cr3(),
        }
    }

    /// The tables whose PML4 is at physical `root` (built by `new`).
    pub fn from_root(root: u64) -> Self {
        Self { root }
    }

    /// Physical address of the PML4.
    pub fn root_phys(&self) -> u64 {
        self.root
    }

    #[expect(
        clippy::mut_from_ref,
        reason = "the tables are owned by `self`; see SAFETY"
    )]
    fn root_table(&self) -> &mut PageTable {
        // SAFETY: `root` is a page-table frame this object owns, reached
        // through the direct map; callers hold `&mut self` (or build the
        // tables before anyone else sees them) so no other reference exists.
        unsafe { &mut *(phys_to_virt(self.root) as *mut PageTable) }
    }

    fn mapper(&mut self) -> OffsetPageTable<'_> {
        let root = self.root_table();
        // SAFETY: the direct map at DIRECT_MAP_BASE covers every frame of
        // these tables (FrameSource's contract), and `root` is a PML4.
        unsafe { OffsetPageTable::new(root, VirtAddr::new(DIRECT_MAP_BASE)) }
    }

    /// Maps the 4 KiB page at `virt` to `phys` with `flags` (PRESENT is
    /// added). Does not flush the TLB: for tables not yet live, or for a
    /// previously unmapped page.
    pub fn map_4k(
        &mut self,
        virt: u64,
        phys: u64,
        flags: PageTableFlags,
        frames: &mut impl FrameSource,
    ) -> Result<(), MapError> {
        let page = Page::<Size4KiB>::from_start_address(VirtAddr::new(virt))
            .map_err(|_| MapError::Misaligned)?;
        let frame = PhysFrame::<Size4KiB>::from_start_address(PhysAddr::new(phys))
            .map_err(|_| MapError::Misaligned)?;
        // A user page needs USER at every level; hypervisor pages never get it.
        let parent = PageTableFlags::PRESENT
            | PageTableFlags::WRITABLE
            | (flags & PageTableFlags::USER_ACCESSIBLE);
        // SAFETY: `map_to` refuses a page that is already mapped, so no
        // memory that existing references point at changes; a new mapping
        // of a frame that is also reachable elsewhere (e.g. through the
        // direct map) is an alias that only unsafe code can dereference,
        // and that code must justify its access. Intermediate tables come
        // from the FrameSource (unused frames).
        let flush = unsafe {
            self.mapper().map_to_with_table_flags(
                page,
                frame,
                flags | PageTableFlags::PRESENT,
                parent,
                &mut Bridge(frames),
            )
        }?;
        flush.ignore();
        Ok(())
    }

    /// Maps the 2 MiB page at `virt` to `phys` (both 2 MiB aligned).
    pub fn map_2m(
        &mut self,
        virt: u64,
        phys: u64,
        flags: PageTableFlags,
        frames: &mut impl FrameSource,
    ) -> Result<(), MapError> {
        let page = Page::<Size2MiB>::from_start_address(VirtAddr::new(virt))
            .map_err(|_| MapError::Misaligned)?;
        let frame = PhysFrame::<Size2MiB>::from_start_address(PhysAddr::new(phys))
            .map_err(|_| MapError::Misaligned)?;
        let parent = PageTableFlags::PRESENT | PageTableFlags::WRITABLE;
        // SAFETY: as in `map_4k`.
        let flush = unsafe {
            self.mapper().map_to_with_table_flags(
                page,
                frame,
                flags | PageTableFlags::PRESENT | PageTableFlags::HUGE_PAGE,
                parent,
                &mut Bridge(frames),
            )
        }?;
        flush.ignore();
        Ok(())
    }

    /// Removes the 4 KiB mapping of `virt` and returns the frame it mapped
    /// (`None` if nothing was mapped there with a 4 KiB page). Intermediate
    /// tables stay. Flushes only this CPU's TLB entry: other CPUs may keep
    /// theirs until they flush (see [`flush_everything`]), so the caller
    /// must not reuse the frame before they have.
    pub fn unmap_4k(&mut self, virt: u64) -> Option<u64> {
        let page = Page::<Size4KiB>::from_start_address(VirtAddr::new(virt)).ok()?;
        let (frame, flush) = self.mapper().unmap(page).ok()?;
        flush.flush();
        Some(frame.start_address().as_u64())
    }

    /// The physical address `virt` maps to.
    pub fn translate(&mut self, virt: u64) -> Option<u64> {
        self.mapper()
            .translate_addr(VirtAddr::new(virt))
            .map(|phys| phys.as_u64())
    }

    /// The flags of the mapping of `virt`.
    pub fn flags_of(&mut self, virt: u64) -> Option<PageTableFlags> {
        match self.mapper().translate(VirtAddr::new(virt)) {
            TranslateResult::Mapped { flags, .. } => Some(flags),
            TranslateResult::NotMapped | TranslateResult::InvalidFrameAddress(_) => None,
        }
    }

    /// Gives each of the hypervisor's PML4 slots (256..=271) its own,
    /// empty PDPT, so that the slots never change afterwards and tables that
    /// copy them (`share_hypervisor_slots`) see every later mapping.
    pub fn populate_hypervisor_slots(
        &mut self,
        frames: &mut impl FrameSource,
    ) -> Result<(), MapError> {
        for slot in HYPERVISOR_PML4_FIRST..=HYPERVISOR_PML4_LAST {
            let root = self.root_table();
            let Some(entry) = root.iter_mut().nth(slot) else {
                continue;
            };
            if !entry.is_unused() {
                continue;
            }
            let pdpt = frames.allocate_frame().ok_or(MapError::OutOfFrames)?;
            // SAFETY: the frame is fresh from the FrameSource (unused) and in
            // the direct map; zeroing it makes an empty PDPT.
            unsafe { core::ptr::write_bytes(phys_to_virt(pdpt) as *mut u8, 0, 4096) };
            entry.set_addr(
                PhysAddr::new(pdpt),
                PageTableFlags::PRESENT | PageTableFlags::WRITABLE,
            );
        }
        Ok(())
    }

    /// Copies the hypervisor's PML4 slots (256..=271) from `other`, so both
    /// share every hypervisor mapping below them.
    pub fn share_hypervisor_slots(&mut self, other: &Self) {
        if self.root == other.root {
            return;
        }
        let source = other.root_table();
        let target = self.root_table();
        for slot in HYPERVISOR_PML4_FIRST..=HYPERVISOR_PML4_LAST {
            if let (Some(from), Some(to)) = (source.iter().nth(slot), target.iter_mut().nth(slot)) {
                *to = from.clone();
            }
        }
    }

    /// Makes these tables the live ones on this CPU.
    ///
    /// # Safety
    /// Everything the CPU uses from now on must be mapped here as before:
    /// the running code, the stack, the GDT/IDT/TSS, the per-CPU block and
    /// every static and heap object still referenced.
    pub unsafe fn activate(&self) {
        let frame = PhysFrame::<Size4KiB>::containing_address(PhysAddr::new(self.root));
        // SAFETY: the caller guarantees the new tables map everything in use.
        unsafe {
            x86_64::registers::control::Cr3::write(
                frame,
                x86_64::registers::control::Cr3Flags::empty(),
            );
        }
    }
}

/// The effective access rights of a mapping (all levels combined).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// Every level allows writes.
    pub is_writable: bool,
    /// Some level forbids instruction fetches.
    pub is_no_execute: bool,
    /// Every level allows ring 3.
    pub is_user: bool,
}

/// How `virt` is mapped in the live tables, if it is (walked by hand
/// through the direct map, so it is safe to call from a fault handler).
pub fn access(virt: u64) -> Option<Access> {
    const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
    let mut table = crate::cpu::cr3() & ADDRESS_MASK;
    let mut access = Access {
        is_writable: true,
        is_no_execute: false,
        is_user: true,
    };
    for level in (0..4).rev() {
        let index = (virt >> (12 + 9 * level)) & 0x1ff;
        let entry_address = phys_to_virt(table + index * 8);
        // SAFETY: `table` is a page-table frame reachable through the direct
        // map (every table Sluice builds or boots with is), and an aligned
        // u64 read of it has no side effect.
        let entry = unsafe { core::ptr::read_volatile(entry_address as *const u64) };
        if entry & 1 == 0 {
            return None;
        }
        access.is_writable &= entry & (1 << 1) != 0;
        access.is_user &= entry & (1 << 2) != 0;
        access.is_no_execute |= entry & (1 << 63) != 0;
        if level == 0 || (level < 3 && entry & 0x80 != 0) {
            return Some(access);
        }
        table = entry & ADDRESS_MASK;
    }
    None
}

/// Whether the tables at physical `root` hold the live tables'
/// entries in the hypervisor's PML4 slots (256..=271), but for the bits
/// the CPU writes itself.
pub fn shares_hypervisor_slots(root: u64) -> bool {
    if !root.is_multiple_of(4096) || !is_mapped(phys_to_virt(root)) {
        return false;
    }
    let live = crate::cpu::cr3() & 0x000f_ffff_ffff_f000;
    // The CPU sets an entry's accessed bit (5) in each copy on its own
    // when it walks through it (dirty, bit 6, is ignored at this level):
    // two copies of one slot may differ there and still map the same.
    const CPU_WRITTEN: u64 = (1 << 5) | (1 << 6);
    (HYPERVISOR_PML4_FIRST..=HYPERVISOR_PML4_LAST).all(|slot| {
        let offset = slot as u64 * 8;
        // SAFETY: an aligned u64 inside the live root table, reachable
        // through the direct map; reading it has no effect.
        let mine = unsafe { core::ptr::read_volatile(phys_to_virt(live + offset) as *const u64) };
        // SAFETY: an aligned u64 inside the frame at `root`, which is mapped
        // in the direct map (checked above); reading it has no effect.
        let theirs = unsafe { core::ptr::read_volatile(phys_to_virt(root + offset) as *const u64) };
        mine | CPU_WRITTEN == theirs | CPU_WRITTEN
    })
}

/// Whether `virt` is mapped in the live tables.
pub fn is_mapped(virt: u64) -> bool {
    access(virt).is_some()
}

/// Loads the page tables at physical `root` into CR3. When they are not the
/// tables already loaded, every TLB entry goes, global ones included.
///
/// Guests may set the global bit in their own L1 entries (Sluice keeps
/// what a guest writes, as Xen does), and a plain CR3 load keeps global
/// entries: without the full flush, the next domain on this CPU could
/// reach the previous one's frames through its stale translations. So
/// PGE is cleared before the load and set again after it (the order of
/// Xen's `switch_cr3_cr4()`): while PGE is clear no entry can be cached
/// as global, not even by a speculative walk of the old tables, and the
/// load then drops every entry. Reloading the same tables (another vcpu
/// of the same domain, or the same vcpu again) keeps global entries: they
/// are that address space's own.
///
/// # Safety
/// `root` must map everything the CPU uses from here on as the live
/// tables do (for a guest's tables: the hypervisor's slots, identical).
pub unsafe fn switch_root(root: u64) {
    use x86_64::registers::control::{Cr4, Cr4Flags};
    const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
    let leaving = crate::cpu::cr3() & ADDRESS_MASK != root & ADDRESS_MASK;
    let flags = Cr4::read();
    let flush_global = leaving && flags.contains(Cr4Flags::PAGE_GLOBAL);
    if flush_global {
        // SAFETY: only PGE changes, until the write below restores it;
        // clearing it flushes the TLB and changes nothing about paging or
        // protection.
        unsafe { Cr4::write(flags - Cr4Flags::PAGE_GLOBAL) };
    }
    // SAFETY: (caller) everything in use stays mapped across the load.
    unsafe {
        core::arch::asm!("mov cr3, {}", in(reg) root, options(nostack, preserves_flags));
    }
    if flush_global {
        // SAFETY: restores exactly the flags read above.
        unsafe { Cr4::write(flags) };
    }
}

/// Drops any TLB entry for `virt` on this CPU.
pub fn flush(virt: u64) {
    x86_64::instructions::tlb::flush(VirtAddr::new(virt));
}

/// Drops every non-global TLB entry on this CPU.
pub fn flush_all() {
    x86_64::instructions::tlb::flush_all();
}

/// Drops every TLB entry on this CPU, global ones included (toggling
/// CR4.PGE; a CR3 load keeps global entries).
pub fn flush_everything() {
    use x86_64::registers::control::{Cr4, Cr4Flags};
    let flags = Cr4::read();
    if !flags.contains(Cr4Flags::PAGE_GLOBAL) {
        flush_all();
        return;
    }
    // SAFETY: only PGE changes, and only for the moment between the two
    // writes; clearing it flushes the whole TLB and setting it back
    // restores the state every other part of Sluice relies on. Nothing
    // else about paging or protection changes.
    unsafe { Cr4::write(flags - Cr4Flags::PAGE_GLOBAL) };
    // SAFETY: restores exactly the flags read above.
    unsafe { Cr4::write(flags) };
}
