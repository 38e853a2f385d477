//! Copying bytes out of physical memory the hypervisor does not own: the
//! multiboot information the loader left and the firmware's ACPI tables.
//!
//! Only copies leave this module, never references, so nothing outlives the
//! moment the memory was read (the loader's memory is reused later).
#![allow(unsafe_code)]

use arch::layout::{BOOT_DIRECT_MAP_SIZE, phys_to_virt};

/// Copies `out.len()` bytes from physical address `phys`. Returns false
/// (and copies nothing) unless the whole range lies in the part of the
/// direct map that is always present (the first 4 GiB).
pub fn copy_from_phys(phys: u64, out: &mut [u8]) -> bool {
    let Some(end) = phys.checked_add(out.len() as u64) else {
        return false;
    };
    if end > BOOT_DIRECT_MAP_SIZE {
        return false;
    }
    let source = phys_to_virt(phys) as *const u8;
    for (offset, byte) in out.iter_mut().enumerate() {
        // SAFETY: the range is inside the first 4 GiB, which both the boot
        // tables and the hypervisor's tables map in the direct map; byte
        // reads are volatile because firmware or device memory may sit
        // there, and a read has no effect on memory Rust owns.
        *byte = unsafe { core::ptr::read_volatile(source.wrapping_add(offset)) };
    }
    true
}

/// Reads a little-endian `u32` at `phys` (0 if out of range).
pub fn read_u32(phys: u64) -> u32 {
    let mut bytes = [0u8; 4];
    copy_from_phys(phys, &mut bytes);
    u32::from_le_bytes(bytes)
}

/// Reads a little-endian `u64` at `phys` (0 if out of range).
pub fn read_u64(phys: u64) -> u64 {
    let mut bytes = [0u8; 8];
    copy_from_phys(phys, &mut bytes);
    u64::from_le_bytes(bytes)
}

/// Reads a NUL-terminated string at `phys` into `out`, up to `out`'s
/// capacity; returns the bytes read (without the NUL).
pub fn read_c_string(phys: u64, out: &mut [u8]) -> usize {
    let mut length = 0;
    for (index, slot) in out.iter_mut().enumerate() {
        let mut byte = [0u8; 1];
        if !copy_from_phys(phys + index as u64, &mut byte) || byte[0] == 0 {
            break;
        }
        *slot = byte[0];
        length = index + 1;
    }
    length
}
