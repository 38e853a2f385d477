//! The hypervisor's virtual address map.
//!
//! Sluice lives only in the range Xen reserves for itself on x86_64, PML4
//! slots 256..=271 (`0xffff800000000000..0xffff880000000000`); every other
//! slot belongs to PV guests. Inside it the regions follow Xen's placement
//! where Sluice has an equivalent:
//!
//! | range | what |
//! |---|---|
//! | `0xffff82c000000000..0xffff82d000000000` | vmap: stacks (each under an unmapped guard page) and device MMIO |
//! | `0xffff82d040000000..` | the image, at `IMAGE_OFFSET + physical` |
//! | `0xffff830000000000..0xffff880000000000` | direct map of physical memory |

/// First address of the hypervisor's reserved range (PML4 slot 256).
pub const HYPERVISOR_VIRT_START: u64 = 0xffff_8000_0000_0000;
/// One past the last address of the reserved range (PML4 slot 272).
pub const HYPERVISOR_VIRT_END: u64 = 0xffff_8800_0000_0000;
/// First PML4 slot of the reserved range.
pub const HYPERVISOR_PML4_FIRST: usize = 256;
/// Last PML4 slot of the reserved range.
pub const HYPERVISOR_PML4_LAST: usize = 271;

/// The image is mapped at `IMAGE_OFFSET + physical address` (1 GiB aligned).
pub const IMAGE_OFFSET: u64 = 0xffff_82d0_4000_0000;
/// Physical address QEMU loads the image at (must match `linker.ld`).
pub const IMAGE_LOAD_PHYS: u64 = 0x20_0000;

/// Base of the direct map: physical address `p` is at `DIRECT_MAP_BASE + p`.
pub const DIRECT_MAP_BASE: u64 = 0xffff_8300_0000_0000;
/// Size of the direct map window (5 TiB, up to the end of the reserved range).
pub const DIRECT_MAP_SIZE: u64 = HYPERVISOR_VIRT_END - DIRECT_MAP_BASE;
/// How much of the direct map the boot page tables cover (the first 4 GiB).
pub const BOOT_DIRECT_MAP_SIZE: u64 = 4 << 30;

/// Base of the vmap area (stacks, MMIO).
pub const VMAP_BASE: u64 = 0xffff_82c0_0000_0000;
/// End of the vmap area.
pub const VMAP_END: u64 = 0xffff_82d0_0000_0000;

/// Size of a small page.
pub const PAGE_SIZE: u64 = 4096;

/// Virtual address of physical `phys` in the direct map.
pub const fn phys_to_virt(phys: u64) -> u64 {
    DIRECT_MAP_BASE + phys
}

/// Physical address of a direct-map virtual address, if it is one.
pub const fn direct_map_virt_to_phys(virt: u64) -> Option<u64> {
    if virt >= DIRECT_MAP_BASE && virt < HYPERVISOR_VIRT_END {
        Some(virt - DIRECT_MAP_BASE)
    } else {
        None
    }
}

/// Physical address of an address inside the image.
pub const fn image_virt_to_phys(virt: u64) -> u64 {
    virt - IMAGE_OFFSET
}

/// PML4 slot of a virtual address.
pub const fn pml4_index(virt: u64) -> usize {
    ((virt >> 39) & 0x1ff) as usize
}

/// PDPT slot of a virtual address.
pub const fn pdpt_index(virt: u64) -> usize {
    ((virt >> 30) & 0x1ff) as usize
}

const _: () = assert!(pml4_index(IMAGE_OFFSET) >= HYPERVISOR_PML4_FIRST);
const _: () = assert!(pml4_index(IMAGE_OFFSET) <= HYPERVISOR_PML4_LAST);
const _: () = assert!(pml4_index(DIRECT_MAP_BASE) == pml4_index(IMAGE_OFFSET) + 1);
const _: () = assert!(IMAGE_OFFSET.is_multiple_of(1 << 30));
const _: () = assert!(pml4_index(HYPERVISOR_VIRT_START) == HYPERVISOR_PML4_FIRST);
const _: () = assert!(pml4_index(HYPERVISOR_VIRT_END - 1) == HYPERVISOR_PML4_LAST);
