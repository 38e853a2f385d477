//! The multiboot1 information structure, copied into owned values.
//!
//! Layout (multiboot 0.6.96 §3.3): `flags` at 0; `mem_lower`/`mem_upper`
//! at 4/8 (flag bit 0); `cmdline` at 16 (bit 2); `mods_count`/`mods_addr`
//! at 20/24 (bit 3); `mmap_length`/`mmap_addr` at 44/48 (bit 6). QEMU puts
//! the kernel's file name first in the command line and each `-initrd`
//! entry's whole string ("file args") in its module string.

use arrayvec::{ArrayString, ArrayVec};

use crate::physmem;

const FLAG_MEMORY: u32 = 1 << 0;
const FLAG_CMDLINE: u32 = 1 << 2;
const FLAG_MODULES: u32 = 1 << 3;
const FLAG_MEMORY_MAP: u32 = 1 << 6;

/// Most memory-map entries kept.
pub const MAX_REGIONS: usize = 64;
/// Most modules kept.
pub const MAX_MODULES: usize = 16;

/// What a memory-map range holds (multiboot/E820 types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    /// Free RAM (type 1).
    Usable,
    /// Reserved (type 2 and unknown types).
    Reserved,
    /// ACPI tables, reclaimable after parsing (type 3).
    AcpiReclaimable,
    /// ACPI non-volatile storage (type 4).
    AcpiNvs,
    /// Defective RAM (type 5).
    Defective,
}

impl RegionKind {
    fn from_type(kind: u32) -> Self {
        match kind {
            1 => Self::Usable,
            3 => Self::AcpiReclaimable,
            4 => Self::AcpiNvs,
            5 => Self::Defective,
            _ => Self::Reserved,
        }
    }

    /// Short name for the boot log.
    pub fn name(self) -> &'static str {
        match self {
            Self::Usable => "usable",
            Self::Reserved => "reserved",
            Self::AcpiReclaimable => "ACPI",
            Self::AcpiNvs => "ACPI NVS",
            Self::Defective => "defective",
        }
    }
}

/// One memory-map range, `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// What it holds.
    pub kind: RegionKind,
}

/// A boot module (a guest image) and its string.
#[derive(Clone, Debug)]
pub struct Module {
    /// First byte (physical).
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The module string: file name then arguments.
    pub string: ArrayString<256>,
}

/// Everything Sluice takes from the loader.
#[derive(Clone, Debug, Default)]
pub struct BootInfo {
    /// The memory map.
    pub memory: ArrayVec<MemoryRegion, MAX_REGIONS>,
    /// Memory map entries dropped for lack of room.
    pub dropped_regions: usize,
    /// The command line (file name first, as QEMU passes it).
    pub cmdline: ArrayString<1024>,
    /// The modules, in order.
    pub modules: ArrayVec<Module, MAX_MODULES>,
    /// Modules dropped for lack of room.
    pub dropped_modules: usize,
    /// KiB of lower / upper memory the loader reported (flag bit 0).
    pub basic_memory_kib: Option<(u32, u32)>,
}

/// Why the loader's information was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// `eax` did not hold the multiboot magic.
    NotMultiboot(u32),
    /// No memory map (flag bit 6).
    NoMemoryMap,
}

fn string_at(phys: u64, out: &mut ArrayString<1024>) {
    let mut bytes = [0u8; 1024];
    let length = physmem::read_c_string(phys, &mut bytes);
    for &byte in bytes.iter().take(length) {
        // Keep printable ASCII only: the string is shown on the console.
        let shown = if (0x20..0x7f).contains(&byte) {
            byte as char
        } else {
            '?'
        };
        if out.try_push(shown).is_err() {
            break;
        }
    }
}

/// Copies the multiboot information at `info_phys`.
pub fn parse(magic: u32, info_phys: u32) -> Result<BootInfo, BootInfoError> {
    if magic != arch::boot::MULTIBOOT_BOOTLOADER_MAGIC {
        return Err(BootInfoError::NotMultiboot(magic));
    }
    let base = u64::from(info_phys);
    let flags = physmem::read_u32(base);
    let mut info = BootInfo::default();

    if flags & FLAG_MEMORY != 0 {
        info.basic_memory_kib = Some((physmem::read_u32(base + 4), physmem::read_u32(base + 8)));
    }
    if flags & FLAG_CMDLINE != 0 {
        string_at(u64::from(physmem::read_u32(base + 16)), &mut info.cmdline);
    }
    if flags & FLAG_MODULES != 0 {
        let count = physmem::read_u32(base + 20);
        let table = u64::from(physmem::read_u32(base + 24));
        for index in 0..u64::from(count) {
            let entry = table + index * 16;
            let mut string = ArrayString::<1024>::new();
            string_at(u64::from(physmem::read_u32(entry + 8)), &mut string);
            let mut short = ArrayString::<256>::new();
            for character in string.chars() {
                if short.try_push(character).is_err() {
                    break;
                }
            }
            let module = Module {
                start: u64::from(physmem::read_u32(entry)),
                end: u64::from(physmem::read_u32(entry + 4)),
                string: short,
            };
            if info.modules.try_push(module).is_err() {
                info.dropped_modules += 1;
            }
        }
    }
    if flags & FLAG_MEMORY_MAP == 0 {
        return Err(BootInfoError::NoMemoryMap);
    }
    let length = u64::from(physmem::read_u32(base + 44));
    let map = u64::from(physmem::read_u32(base + 48));
    let mut cursor = map;
    while cursor + 24 <= map + length {
        let size = u64::from(physmem::read_u32(cursor));
        let start = physmem::read_u64(cursor + 4);
        let bytes = physmem::read_u64(cursor + 12);
        let kind = RegionKind::from_type(physmem::read_u32(cursor + 20));
        if bytes != 0 {
            let region = MemoryRegion {
                start,
                end: start.saturating_add(bytes),
                kind,
            };
            if info.memory.try_push(region).is_err() {
                info.dropped_regions += 1;
            }
        }
        // `size` excludes its own 4 bytes; a zero size would loop forever.
        cursor += size.max(20) + 4;
    }
    Ok(info)
}
