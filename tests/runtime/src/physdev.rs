//! `physdev_op` (hypercall 33; spec §6): the subset Sluice serves (eoi,
//! irq_status_query, set_iopl, map_pirq, unmap_pirq), with the ABI structs
//! asserted against the spec.

use core::mem::{offset_of, size_of};

use crate::errno::Errno;
use crate::hypercall::{hypercall2, nr};

/// PHYSDEVOP_irq_status_query.
pub const PHYSDEVOP_IRQ_STATUS_QUERY: u32 = 5;
/// PHYSDEVOP_set_iopl.
pub const PHYSDEVOP_SET_IOPL: u32 = 6;
/// PHYSDEVOP_eoi.
pub const PHYSDEVOP_EOI: u32 = 12;
/// PHYSDEVOP_map_pirq.
pub const PHYSDEVOP_MAP_PIRQ: u32 = 13;
/// PHYSDEVOP_unmap_pirq.
pub const PHYSDEVOP_UNMAP_PIRQ: u32 = 14;
/// map_pirq type: MSI.
pub const MAP_PIRQ_TYPE_MSI: i32 = 0;
/// map_pirq type: a GSI (ISA/IOAPIC line), named by `index`.
pub const MAP_PIRQ_TYPE_GSI: i32 = 1;
/// irq_status_query flag: the guest must call PHYSDEVOP_eoi.
pub const XENIRQSTAT_NEEDS_EOI: u32 = 1 << 0;
/// irq_status_query flag: the line is shared with another domain.
pub const XENIRQSTAT_SHARED: u32 = 1 << 1;

/// struct physdev_eoi (4 bytes).
#[repr(C)]
pub struct PhysdevEoi {
    /// IN: the PIRQ.
    pub irq: u32,
}
const _: () = assert!(size_of::<PhysdevEoi>() == 4);

/// struct physdev_irq_status_query (8 bytes).
#[repr(C)]
pub struct PhysdevIrqStatusQuery {
    /// IN: the PIRQ.
    pub irq: u32,
    /// OUT: XENIRQSTAT_* flags.
    pub flags: u32,
}
const _: () = assert!(size_of::<PhysdevIrqStatusQuery>() == 8);
const _: () = assert!(offset_of!(PhysdevIrqStatusQuery, flags) == 4);

/// struct physdev_set_iopl (4 bytes).
#[repr(C)]
pub struct PhysdevSetIopl {
    /// IN: 0..3.
    pub iopl: u32,
}
const _: () = assert!(size_of::<PhysdevSetIopl>() == 4);

/// struct physdev_map_pirq (40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PhysdevMapPirq {
    /// IN: target domain (DOMID_SELF allowed).
    pub domid: u16,
    /// Padding after `domid`.
    pub _pad: u16,
    /// IN: MAP_PIRQ_TYPE_*.
    pub kind: i32,
    /// IN: the GSI for MAP_PIRQ_TYPE_GSI.
    pub index: i32,
    /// IN/OUT: the pirq (< 0: let the hypervisor choose).
    pub pirq: i32,
    /// IN (MSI): bus.
    pub bus: i32,
    /// IN (MSI): devfn.
    pub devfn: i32,
    /// IN (MSI): entry number.
    pub entry_nr: i32,
    /// Padding before `table_base`.
    pub _pad2: u32,
    /// IN (MSI-X): table base.
    pub table_base: u64,
}
const _: () = assert!(size_of::<PhysdevMapPirq>() == 40);
const _: () = assert!(offset_of!(PhysdevMapPirq, kind) == 4);
const _: () = assert!(offset_of!(PhysdevMapPirq, index) == 8);
const _: () = assert!(offset_of!(PhysdevMapPirq, pirq) == 12);
const _: () = assert!(offset_of!(PhysdevMapPirq, bus) == 16);
const _: () = assert!(offset_of!(PhysdevMapPirq, devfn) == 20);
const _: () = assert!(offset_of!(PhysdevMapPirq, entry_nr) == 24);
const _: () = assert!(offset_of!(PhysdevMapPirq, table_base) == 32);

/// struct physdev_unmap_pirq (8 bytes).
#[repr(C)]
pub struct PhysdevUnmapPirq {
    /// IN: target domain (DOMID_SELF allowed).
    pub domid: u16,
    /// Padding after `domid`.
    pub _pad: u16,
    /// IN: the pirq.
    pub pirq: i32,
}
const _: () = assert!(size_of::<PhysdevUnmapPirq>() == 8);
const _: () = assert!(offset_of!(PhysdevUnmapPirq, pirq) == 4);

/// Issues PHYSDEVOP `command` with `arg`; returns the raw result.
///
/// `T` must be the op's argument struct, at least as large as the op copies.
pub fn op<T>(command: u32, arg: &mut T) -> i64 {
    // SAFETY: `arg` is a live exclusive reference to a repr(C) struct of
    // integers of the op's size; any bytes written back are valid values.
    unsafe { hypercall2(nr::PHYSDEV_OP, u64::from(command), (arg as *mut T) as u64) }
}

/// PHYSDEVOP_eoi for `pirq`.
pub fn eoi(pirq: u32) -> Result<(), Errno> {
    Errno::unit(op(PHYSDEVOP_EOI, &mut PhysdevEoi { irq: pirq }))
}

/// PHYSDEVOP_irq_status_query for `pirq`; returns its flags.
pub fn irq_status_query(pirq: u32) -> Result<u32, Errno> {
    let mut arg = PhysdevIrqStatusQuery {
        irq: pirq,
        flags: 0,
    };
    Errno::unit(op(PHYSDEVOP_IRQ_STATUS_QUERY, &mut arg)).map(|()| arg.flags)
}

/// PHYSDEVOP_set_iopl.
pub fn set_iopl(iopl: u32) -> Result<(), Errno> {
    Errno::unit(op(PHYSDEVOP_SET_IOPL, &mut PhysdevSetIopl { iopl }))
}

/// PHYSDEVOP_map_pirq of GSI `gsi` for `domid`, asking for `pirq` (< 0:
/// the hypervisor chooses); returns the pirq mapped.
pub fn map_pirq_gsi(domid: u16, gsi: i32, pirq: i32) -> Result<u32, Errno> {
    let mut arg = PhysdevMapPirq {
        domid,
        kind: MAP_PIRQ_TYPE_GSI,
        index: gsi,
        pirq,
        ..PhysdevMapPirq::default()
    };
    Errno::unit(op(PHYSDEVOP_MAP_PIRQ, &mut arg)).map(|()| arg.pirq as u32)
}

/// PHYSDEVOP_unmap_pirq of `pirq` for `domid`.
pub fn unmap_pirq(domid: u16, pirq: i32) -> Result<(), Errno> {
    let mut arg = PhysdevUnmapPirq {
        domid,
        _pad: 0,
        pirq,
    };
    Errno::unit(op(PHYSDEVOP_UNMAP_PIRQ, &mut arg))
}
