//! ACPI: find the RSDP, walk the RSDT/XSDT, read the MADT.
//!
//! A small hand parser rather than the `acpi` crate: Sluice needs four MADT
//! entry types (local APIC, x2APIC, IOAPIC, interrupt source override), and
//! parsing copies of the tables (taken through `physmem`) keeps all of it
//! safe code with checked reads, with no mapping-handler trait to
//! implement. Layouts are from the ACPI 6.5 specification (§5.2.5 RSDP,
//! §5.2.6 header, §5.2.12 MADT).

use alloc::vec;
use alloc::vec::Vec;

use crate::physmem;

/// A processor the MADT lists as enabled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Processor {
    /// Its local APIC id.
    pub apic_id: u32,
    /// ACPI processor UID.
    pub uid: u32,
}

/// An IOAPIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApicEntry {
    /// Its id.
    pub id: u8,
    /// Physical address of its registers.
    pub address: u64,
    /// First GSI it serves.
    pub gsi_base: u32,
}

/// An ISA IRQ wired to another GSI or with other signalling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InterruptOverride {
    /// ISA IRQ.
    pub irq: u8,
    /// The GSI it arrives on.
    pub gsi: u32,
    /// MPS INTI flags: polarity in bits 0-1, trigger in bits 2-3.
    pub flags: u16,
}

/// What the MADT says.
#[derive(Clone, Debug, Default)]
pub struct Madt {
    /// Physical address of the local APICs.
    pub lapic_address: u64,
    /// Enabled processors, in table order (the first is the boot CPU on
    /// QEMU, but Sluice matches by APIC id).
    pub processors: Vec<Processor>,
    /// IOAPICs.
    pub ioapics: Vec<IoApicEntry>,
    /// ISA interrupt overrides.
    pub overrides: Vec<InterruptOverride>,
}

/// Why ACPI discovery failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcpiError {
    /// No valid RSDP in the EBDA or the BIOS area.
    NoRsdp,
    /// A table's checksum or length is wrong.
    BadTable([u8; 4]),
    /// No MADT.
    NoMadt,
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte)) == 0
}

fn u8_at(bytes: &[u8], offset: usize) -> u8 {
    bytes.get(offset).copied().unwrap_or(0)
}

fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([u8_at(bytes, offset), u8_at(bytes, offset + 1)])
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes([
        u8_at(bytes, offset),
        u8_at(bytes, offset + 1),
        u8_at(bytes, offset + 2),
        u8_at(bytes, offset + 3),
    ])
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    u64::from(u32_at(bytes, offset)) | (u64::from(u32_at(bytes, offset + 4)) << 32)
}

/// Where the RSDP was found and what it points at.
#[derive(Clone, Copy, Debug)]
pub struct Rsdp {
    /// Its physical address.
    pub address: u64,
    /// ACPI revision (0 = ACPI 1.0, RSDT only).
    pub revision: u8,
    /// The root table (XSDT if revision >= 2 and present, else RSDT).
    pub root_table: u64,
    /// Whether `root_table` is an XSDT (64-bit entries).
    pub is_xsdt: bool,
}

fn scan_for_rsdp(start: u64, length: usize) -> Option<Rsdp> {
    let mut area = vec![0u8; length];
    if !physmem::copy_from_phys(start, &mut area) {
        return None;
    }
    let mut offset = 0;
    while offset + 20 <= length {
        let candidate = area.get(offset..)?;
        if candidate.starts_with(b"RSD PTR ") && checksum_ok(candidate.get(..20)?) {
            let revision = u8_at(candidate, 15);
            let rsdt = u64::from(u32_at(candidate, 16));
            if revision >= 2 && candidate.len() >= 36 && checksum_ok(candidate.get(..36)?) {
                let xsdt = u64_at(candidate, 24);
                if xsdt != 0 {
                    return Some(Rsdp {
                        address: start + offset as u64,
                        revision,
                        root_table: xsdt,
                        is_xsdt: true,
                    });
                }
            }
            return Some(Rsdp {
                address: start + offset as u64,
                revision,
                root_table: rsdt,
                is_xsdt: false,
            });
        }
        offset += 16;
    }
    None
}

/// Finds the RSDP: the first KiB of the EBDA, then 0xE0000..0x100000.
pub fn find_rsdp() -> Option<Rsdp> {
    let mut segment = [0u8; 2];
    physmem::copy_from_phys(0x40e, &mut segment);
    let ebda = u64::from(u16::from_le_bytes(segment)) << 4;
    if (0x8_0000..0xa_0000).contains(&ebda)
        && let Some(rsdp) = scan_for_rsdp(ebda, 1024)
    {
        return Some(rsdp);
    }
    scan_for_rsdp(0xe_0000, 0x2_0000)
}

/// Copies the table at `address` after checking its length and checksum.
fn read_table(address: u64) -> Result<Vec<u8>, AcpiError> {
    let mut header = [0u8; 36];
    let signature = |bytes: &[u8]| {
        [
            u8_at(bytes, 0),
            u8_at(bytes, 1),
            u8_at(bytes, 2),
            u8_at(bytes, 3),
        ]
    };
    if !physmem::copy_from_phys(address, &mut header) {
        return Err(AcpiError::BadTable(*b"????"));
    }
    let length = u32_at(&header, 4) as usize;
    if !(36..=1 << 20).contains(&length) {
        return Err(AcpiError::BadTable(signature(&header)));
    }
    let mut table = vec![0u8; length];
    if !physmem::copy_from_phys(address, &mut table) || !checksum_ok(&table) {
        return Err(AcpiError::BadTable(signature(&header)));
    }
    Ok(table)
}

/// Finds the table with `signature` among the root table's entries.
fn find_table(rsdp: &Rsdp, signature: &[u8; 4]) -> Result<Option<Vec<u8>>, AcpiError> {
    let root = read_table(rsdp.root_table)?;
    let entry_size = if rsdp.is_xsdt { 8 } else { 4 };
    let mut offset = 36;
    while offset + entry_size <= root.len() {
        let address = if rsdp.is_xsdt {
            u64_at(&root, offset)
        } else {
            u64::from(u32_at(&root, offset))
        };
        offset += entry_size;
        let mut header = [0u8; 4];
        if address != 0 && physmem::copy_from_phys(address, &mut header) && &header == signature {
            return read_table(address).map(Some);
        }
    }
    Ok(None)
}

fn parse_madt(table: &[u8]) -> Madt {
    let mut madt = Madt {
        lapic_address: u64::from(u32_at(table, 36)),
        ..Madt::default()
    };
    let mut offset = 44;
    while offset + 2 <= table.len() {
        let kind = u8_at(table, offset);
        let length = usize::from(u8_at(table, offset + 1));
        if length < 2 || offset + length > table.len() {
            break;
        }
        let entry = table.get(offset..offset + length).unwrap_or(&[]);
        match (kind, length) {
            // Processor local APIC: uid, APIC id, flags (bit 0 enabled).
            (0, 8..) if u32_at(entry, 4) & 1 != 0 => madt.processors.push(Processor {
                apic_id: u32::from(u8_at(entry, 3)),
                uid: u32::from(u8_at(entry, 2)),
            }),
            // IOAPIC: id, reserved, address, GSI base.
            (1, 12..) => madt.ioapics.push(IoApicEntry {
                id: u8_at(entry, 2),
                address: u64::from(u32_at(entry, 4)),
                gsi_base: u32_at(entry, 8),
            }),
            // Interrupt source override: bus, source, GSI, flags.
            (2, 10..) => madt.overrides.push(InterruptOverride {
                irq: u8_at(entry, 3),
                gsi: u32_at(entry, 4),
                flags: u16_at(entry, 8),
            }),
            // Local APIC address override.
            (5, 12..) => madt.lapic_address = u64_at(entry, 4),
            // Processor local x2APIC: reserved, x2APIC id, flags, uid.
            (9, 16..) => {
                let apic_id = u32_at(entry, 4);
                if u32_at(entry, 8) & 1 != 0
                    && !madt.processors.iter().any(|cpu| cpu.apic_id == apic_id)
                {
                    madt.processors.push(Processor {
                        apic_id,
                        uid: u32_at(entry, 12),
                    });
                }
            }
            _ => {}
        }
        offset += length;
    }
    madt
}

/// Finds and parses the MADT.
pub fn discover() -> Result<(Rsdp, Madt), AcpiError> {
    let rsdp = find_rsdp().ok_or(AcpiError::NoRsdp)?;
    let table = find_table(&rsdp, b"APIC")?.ok_or(AcpiError::NoMadt)?;
    Ok((rsdp, parse_madt(&table)))
}
