//! The hypervisor's own address space: direct map, image, vmap (stacks
//! under guard pages, device MMIO), and the tables the AP trampoline uses.
//!
//! This module opts out of `deny(unsafe_code)` to switch CR3 to the tables
//! it builds and to claim memory it has set aside (the trampoline page, the
//! LAPIC and IOAPIC windows).
#![allow(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use arch::layout::{
    BOOT_DIRECT_MAP_SIZE, DIRECT_MAP_BASE, DIRECT_MAP_SIZE, IMAGE_OFFSET, PAGE_SIZE, VMAP_BASE,
    VMAP_END,
};
use arch::paging::{MapError, PageTableFlags, PageTables};
use arch::percpu::StackRange;
use arch::stack::Stack;

use super::frames::{self, Frames};
use crate::bootinfo::{MemoryRegion, RegionKind};

const TWO_MIB: u64 = 2 << 20;

/// The live hypervisor tables (for adding mappings later).
static TABLES: spin::Mutex<Option<PageTables>> = spin::Mutex::new(None);
/// Their root, once built (0 before).
static ROOT: AtomicU64 = AtomicU64::new(0);
/// Next free vmap address.
static VMAP_NEXT: AtomicU64 = AtomicU64::new(VMAP_BASE);
/// Frames taken as tables of the vmap area since boot (they stay when
/// what they map is unmapped).
static VMAP_TABLE_FRAMES: AtomicU64 = AtomicU64::new(0);

/// The frame allocator, counting the frames it gives as vmap tables.
struct VmapTableFrames;

// SAFETY: every frame comes from `frames::allocate`, whose guarantees
// (unused, inside the mapped direct map) `Frames` already vouches for.
unsafe impl arch::paging::FrameSource for VmapTableFrames {
    fn allocate_frame(&mut self) -> Option<u64> {
        let frame = frames::allocate()?;
        VMAP_TABLE_FRAMES.fetch_add(1, Ordering::Relaxed);
        Some(frame)
    }
}

/// Frames backing stacks in the vmap area now.
static STACK_FRAMES: AtomicU64 = AtomicU64::new(0);

/// Frames the vmap area has taken for its own tables so far: a domain
/// builder subtracts their growth from what it counts as the domain's.
pub fn vmap_table_frames() -> u64 {
    VMAP_TABLE_FRAMES.load(Ordering::Relaxed)
}

/// Frames the vmap area holds now: its tables and the stacks it maps.
pub fn hypervisor_frames() -> u64 {
    VMAP_TABLE_FRAMES.load(Ordering::Relaxed) + STACK_FRAMES.load(Ordering::Relaxed)
}

/// The hypervisor's own page tables (0 before they are built).
pub fn hypervisor_root() -> u64 {
    ROOT.load(Ordering::Relaxed)
}

/// What `build_and_activate` set up, for the boot log.
#[derive(Clone, Copy, Debug)]
pub struct SpaceInfo {
    /// Physical address of the PML4.
    pub root: u64,
    /// Bytes of physical memory in the direct map.
    pub direct_map_bytes: u64,
}

fn is_ram(kind: RegionKind) -> bool {
    matches!(
        kind,
        RegionKind::Usable | RegionKind::AcpiReclaimable | RegionKind::AcpiNvs
    )
}

/// Builds the hypervisor's tables and switches this CPU to them.
///
/// The direct map covers the first 4 GiB and all RAM above, with 2 MiB
/// pages (read-write, no-execute, global; uncached where no RAM is). The
/// image is mapped with 4 KiB pages: code read-only and executable,
/// read-only data read-only, data and `.bss` writable, both no-execute.
/// Nothing is mapped below the reserved range: that is guest space.
pub fn build_and_activate(regions: &[MemoryRegion]) -> Result<SpaceInfo, MapError> {
    let mut frames = Frames;
    let mut tables = PageTables::new(&mut frames).ok_or(MapError::OutOfFrames)?;
    tables.populate_hypervisor_slots(&mut frames)?;

    let ram_top = regions
        .iter()
        .filter(|region| is_ram(region.kind))
        .map(|region| region.end)
        .max()
        .unwrap_or(0);
    let direct_top = ram_top
        .max(BOOT_DIRECT_MAP_SIZE)
        .div_ceil(TWO_MIB)
        .saturating_mul(TWO_MIB)
        .min(DIRECT_MAP_SIZE);
    let global = PageTableFlags::GLOBAL;
    let mut phys = 0;
    while phys < direct_top {
        let end = phys + TWO_MIB;
        let has_ram = regions
            .iter()
            .any(|region| is_ram(region.kind) && region.start < end && phys < region.end);
        let mut flags = PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE | global;
        if !has_ram {
            flags |= PageTableFlags::NO_CACHE | PageTableFlags::WRITE_THROUGH;
        }
        // RAM above 4 GiB is only mapped where some exists.
        if has_ram || phys < BOOT_DIRECT_MAP_SIZE {
            tables.map_2m(DIRECT_MAP_BASE + phys, phys, flags, &mut frames)?;
        }
        phys = end;
    }

    let image = arch::boot::image_layout();
    let mut virt = image.start;
    while virt < image.end {
        let flags = if virt < image.text_end {
            global
        } else if virt < image.rodata_end {
            PageTableFlags::NO_EXECUTE | global
        } else {
            PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE | global
        };
        tables.map_4k(virt, virt - IMAGE_OFFSET, flags, &mut frames)?;
        virt += PAGE_SIZE;
    }

    // SAFETY: the new tables map the image exactly as the boot tables did
    // (same virtual addresses, same frames): code, statics, the boot stack
    // we are running on, the GDT/IDT/TSS. The direct map covers at least
    // what the boot tables' did (the first 4 GiB), which is where the page
    // tables themselves and everything read so far live. Only the identity
    // map goes away, and nothing uses it after the jump to the image's
    // virtual addresses.
    unsafe { tables.activate() };
    frames::set_reachable_limit(direct_top);
    ROOT.store(tables.root_phys(), Ordering::Relaxed);
    let info = SpaceInfo {
        root: tables.root_phys(),
        direct_map_bytes: direct_top,
    };
    *TABLES.lock() = Some(tables);
    Ok(info)
}

fn reserve_vmap(pages: u64) -> Option<u64> {
    let size = pages.checked_mul(PAGE_SIZE)?;
    let base = VMAP_NEXT.fetch_add(size, Ordering::Relaxed);
    (base.checked_add(size)? <= VMAP_END).then_some(base)
}

fn map_range(
    virt: u64,
    phys: Option<u64>,
    pages: u64,
    flags: PageTableFlags,
) -> Result<(), MapError> {
    let mut guard = TABLES.lock();
    let tables = guard.as_mut().ok_or(MapError::OutOfFrames)?;
    for page in 0..pages {
        let target = match phys {
            Some(base) => base + page * PAGE_SIZE,
            None => {
                let frame = frames::allocate().ok_or(MapError::OutOfFrames)?;
                STACK_FRAMES.fetch_add(1, Ordering::Relaxed);
                frame
            }
        };
        tables.map_4k(virt + page * PAGE_SIZE, target, flags, &mut VmapTableFrames)?;
    }
    Ok(())
}

/// Unmaps a released stack (`Stack::release`) from the vmap area and
/// returns the frames that backed it. Its addresses are never handed out
/// again. Other CPUs may still hold TLB entries for it: the frames may be
/// freed only once each has flushed (`arch::paging::flush_everything`).
pub fn unmap_stack(range: arch::percpu::StackRange) -> alloc::vec::Vec<u64> {
    let mut backing = alloc::vec::Vec::new();
    arch::cpu::without_interrupts(|| {
        let mut guard = TABLES.lock();
        if let Some(tables) = guard.as_mut() {
            let mut page = range.bottom;
            while page < range.top {
                backing.extend(tables.unmap_4k(page));
                page += PAGE_SIZE;
            }
        }
    });
    backing
}

/// Gives back a frame [`unmap_stack`] returned; `false` if the allocator
/// did not take it.
///
/// # Safety
/// As `frames::free`: in particular every CPU has flushed its TLB since
/// the unmap.
pub unsafe fn free_stack_frame(phys: u64) -> bool {
    // SAFETY: (caller) nothing maps or uses the frame any more.
    let is_freed = unsafe { frames::free(phys) };
    if is_freed {
        STACK_FRAMES.fetch_sub(1, Ordering::Relaxed);
    }
    is_freed
}

/// A stack of `pages` fresh pages in the vmap area with an unmapped guard
/// page below it (and the next allocation's guard page above).
pub fn allocate_stack(pages: u64) -> Result<Stack, MapError> {
    let base = reserve_vmap(pages + 1).ok_or(MapError::OutOfFrames)?;
    let bottom = base + PAGE_SIZE;
    let flags = PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE | PageTableFlags::GLOBAL;
    let range = StackRange {
        bottom,
        top: bottom + pages * PAGE_SIZE,
    };
    if let Err(error) = map_range(bottom, None, pages, flags) {
        // Out of frames part way: give back the pages mapped so far. The
        // range is fresh and was touched by no one but this CPU, whose TLB
        // is flushed before the frames go back.
        let mapped = unmap_stack(range);
        arch::paging::flush_everything();
        for phys in mapped {
            // SAFETY: unmapped and flushed above; no stack was made of it.
            unsafe { free_stack_frame(phys) };
        }
        return Err(error);
    }
    // SAFETY: the vmap range was reserved just now (the bump pointer never
    // hands it out again) and backed with fresh frames from the allocator,
    // mapped writable for good; the top is page aligned.
    Ok(unsafe { Stack::assume_exclusive(range) })
}

/// Maps a fresh frame at the guest (lower-half) address `virt` in the
/// hypervisor's own tables, user-accessible, writable and executable, and
/// zeroes it through the guest-copy path: for the self-tests of guest
/// copies, SMAP and SMEP only. Domains will get their own tables.
#[cfg(feature = "selftest")]
pub fn map_guest_test_page(virt: u64) -> Result<(), MapError> {
    if virt >= arch::layout::HYPERVISOR_VIRT_START {
        return Err(MapError::Misaligned);
    }
    let frame = frames::allocate().ok_or(MapError::OutOfFrames)?;
    let flags = PageTableFlags::USER_ACCESSIBLE | PageTableFlags::WRITABLE;
    map_range(virt, Some(frame), 1, flags)?;
    let zeros = [0u8; PAGE_SIZE as usize];
    arch::guest_copy::copy_to_guest(virt, &zeros).map_err(|_| MapError::OutOfFrames)
}

/// Runs `body` with this CPU vouching (`arch::guest_copy::trust_user_only`)
/// for the hypervisor's own tables, so that guest copies to the test page
/// take the path they take for a domain: for the guest-copy self-test
/// only, on the boot CPU before any domain exists.
#[cfg(feature = "selftest")]
pub fn with_own_tables_vouched<R>(body: impl FnOnce() -> R) -> R {
    // SAFETY: the guest range (the lower half and the upper half past the
    // hypervisor's slots) of the hypervisor's own tables maps nothing but
    // the pages of `map_guest_test_page`, user-accessible at every level
    // (everything else lives in the hypervisor's slots; the AP trampoline
    // has tables of its own). The vouch is withdrawn before returning.
    unsafe { arch::guest_copy::trust_user_only(ROOT.load(Ordering::Relaxed)) };
    let result = body();
    arch::guest_copy::trust_no_tables();
    result
}

/// Maps device registers at `phys` (`size` bytes) uncached in the vmap
/// area; returns the virtual address of `phys`.
pub fn map_mmio(phys: u64, size: u64) -> Result<u64, MapError> {
    let first = phys / PAGE_SIZE * PAGE_SIZE;
    let pages = (phys + size).div_ceil(PAGE_SIZE) - first / PAGE_SIZE;
    let base = reserve_vmap(pages + 1).ok_or(MapError::OutOfFrames)? + PAGE_SIZE;
    let flags = PageTableFlags::WRITABLE
        | PageTableFlags::NO_EXECUTE
        | PageTableFlags::GLOBAL
        | PageTableFlags::NO_CACHE
        | PageTableFlags::WRITE_THROUGH;
    map_range(base, Some(first), pages, flags)?;
    Ok(base + (phys - first))
}

/// Tables for the AP trampoline (the trampoline page identity-mapped plus
/// the hypervisor's slots).
pub fn trampoline_tables() -> Result<arch::smp::TrampolineTables, arch::smp::StartError> {
    arch::smp::build_trampoline_tables(&mut Frames)
}

/// Claims the AP trampoline page, if the memory map says it is RAM (once).
pub fn claim_trampoline_page(regions: &[MemoryRegion]) -> Option<arch::smp::TrampolinePage> {
    let page = arch::smp::TRAMPOLINE_PHYS;
    let is_usable = regions.iter().any(|region| {
        region.kind == RegionKind::Usable && region.start <= page && page + PAGE_SIZE <= region.end
    });
    if !is_usable || page + PAGE_SIZE > frames::LOW_MEMORY_END {
        return None;
    }
    // SAFETY: the page is usable RAM (checked above) below 1 MiB, which the
    // frame allocator never hands out (`frames::LOW_MEMORY_END`) and
    // nothing else in Sluice writes, and it is in the direct map.
    unsafe { arch::smp::TrampolinePage::claim() }
}

/// Maps the local APIC's register page (at `phys`) for xAPIC mode.
pub fn map_xapic(phys: u64) -> Result<arch::lapic::XApicWindow, MapError> {
    let virt = map_mmio(phys, PAGE_SIZE)?;
    // SAFETY: `virt` maps the page at `phys` uncached for good (vmap is
    // never unmapped); the caller passes the LAPIC's physical address.
    Ok(unsafe { arch::lapic::XApicWindow::new(virt) })
}

/// Maps the IOAPIC at `phys` and masks all its inputs.
pub fn ioapic(phys: u64, gsi_base: u32) -> Result<arch::ioapic::IoApic, MapError> {
    let virt = map_mmio(phys, PAGE_SIZE)?;
    // SAFETY: `virt` maps the IOAPIC's page uncached for good (vmap is never
    // unmapped), and startup creates one `IoApic` per MADT entry.
    Ok(unsafe { arch::ioapic::IoApic::new(virt, gsi_base) })
}
