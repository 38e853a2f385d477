//! `physdev_op` (hypercall 33; spec §6): the subset Sluice serves (eoi,
//! irq_status_query, set_iopl), with the ABI structs asserted against the
//! spec.

use core::mem::{offset_of, size_of};

use crate::errno::Errno;
use crate::hypercall::{hypercall2, nr};

/// PHYSDEVOP_irq_status_query.
pub const PHYSDEVOP_IRQ_STATUS_QUERY: u32 = 5;
/// PHYSDEVOP_set_iopl.
pub const PHYSDEVOP_SET_IOPL: u32 = 6;
/// PHYSDEVOP_eoi.
pub const PHYSDEVOP_EOI: u32 = 12;
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
