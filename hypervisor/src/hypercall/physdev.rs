//! physdev_op (spec §6): eoi, irq_status_query, set_iopl, map_pirq and
//! unmap_pirq. The PIRQ machinery itself lives in [`crate::pirq`].

use evtchn_core::{DomId, Errno};

use super::{Call, GuestIn, GuestInOut};
use crate::domain::builder::NR_PIRQS;
use crate::pirq::{self, MAP_PIRQ_TYPE_GSI};

const PHYSDEVOP_IRQ_STATUS_QUERY: u64 = 5;
const PHYSDEVOP_SET_IOPL: u64 = 6;
const PHYSDEVOP_EOI: u64 = 12;
const PHYSDEVOP_MAP_PIRQ: u64 = 13;
const PHYSDEVOP_UNMAP_PIRQ: u64 = 14;
const XENIRQSTAT_NEEDS_EOI: u32 = 1 << 0;
const XENIRQSTAT_SHARED: u32 = 1 << 1;

/// `struct physdev_map_pirq` (40 bytes; spec §6.1): offsets of the fields
/// Sluice reads or writes.
const MAP_PIRQ_SIZE: usize = 40;
const MAP_PIRQ_DOMID: usize = 0;
const MAP_PIRQ_TYPE: usize = 4;
const MAP_PIRQ_INDEX: usize = 8;
const MAP_PIRQ_PIRQ: usize = 12;
/// `struct physdev_unmap_pirq` (8 bytes): domid @0, pirq @4.
const UNMAP_PIRQ_SIZE: usize = 8;
const UNMAP_PIRQ_PIRQ: usize = 4;

fn read_u32(address: GuestIn) -> Result<u32, Errno> {
    let mut bytes = [0u8; 4];
    address.read(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
}

fn field_i32(bytes: &[u8], offset: usize) -> i32 {
    let mut field = [0u8; 4];
    if let Some(source) = bytes.get(offset..offset + 4) {
        field.copy_from_slice(source);
    }
    i32::from_le_bytes(field)
}

fn field_domid(bytes: &[u8]) -> DomId {
    let mut field = [0u8; 2];
    if let Some(source) = bytes.get(MAP_PIRQ_DOMID..MAP_PIRQ_DOMID + 2) {
        field.copy_from_slice(source);
    }
    DomId(u16::from_le_bytes(field))
}

/// The domain a map/unmap names, checked as Xen's `physdev_map_pirq()`
/// does: unknown → -ESRCH, then DM_PRIV (privileged caller only, even for
/// itself) → -EPERM.
fn target_domain(call: &Call<'_>, domid: DomId) -> Result<DomId, Errno> {
    let target = if domid == DomId::SELF {
        call.domain.id
    } else {
        domid
    };
    if crate::domain::get(target).is_none() {
        return Err(Errno::ESRCH);
    }
    if !call.domain.is_privileged() {
        return Err(Errno::EPERM);
    }
    Ok(target)
}

/// PHYSDEVOP_map_pirq. Only MAP_PIRQ_TYPE_GSI is served (Sluice has no
/// MSI); any other type gives -EINVAL. As on Xen the whole struct is
/// copied back whatever the result, `pirq` updated on success.
fn map_pirq(call: &Call<'_>, argument: GuestInOut) -> Result<u64, Errno> {
    let mut request = [0u8; MAP_PIRQ_SIZE];
    argument.read(&mut request)?;
    let result = target_domain(call, field_domid(&request)).and_then(|target| {
        match field_i32(&request, MAP_PIRQ_TYPE) {
            MAP_PIRQ_TYPE_GSI => pirq::map_gsi(
                target,
                field_i32(&request, MAP_PIRQ_INDEX),
                field_i32(&request, MAP_PIRQ_PIRQ),
            ),
            _ => Err(Errno::EINVAL),
        }
    });
    if let Ok(mapped) = result
        && let Some(slot) = request.get_mut(MAP_PIRQ_PIRQ..MAP_PIRQ_PIRQ + 4)
    {
        slot.copy_from_slice(&mapped.to_le_bytes());
    }
    argument.write(&request)?;
    result.map(|_| 0)
}

/// PHYSDEVOP_unmap_pirq.
fn unmap_pirq(call: &Call<'_>, argument: GuestIn) -> Result<u64, Errno> {
    let mut request = [0u8; UNMAP_PIRQ_SIZE];
    argument.read(&mut request)?;
    let target = target_domain(call, field_domid(&request))?;
    pirq::unmap(target, field_i32(&request, UNMAP_PIRQ_PIRQ))?;
    Ok(0)
}

/// `physdev_op(cmd, arg)`.
pub fn physdev_op(call: &mut Call<'_>) -> Result<u64, Errno> {
    let (input, argument) = (call.guest_in(1), call.guest_in_out(1));
    match call.argument(0) {
        PHYSDEVOP_SET_IOPL => {
            if read_u32(input)? > 3 {
                return Err(Errno::EINVAL);
            }
            Ok(0)
        }
        PHYSDEVOP_IRQ_STATUS_QUERY => {
            let irq = read_u32(input)?;
            if irq >= NR_PIRQS {
                return Err(Errno::EINVAL);
            }
            // needs_eoi is always set for PV (Xen sets it whatever the
            // line); `shared` when more than one domain is bound.
            let mut flags = XENIRQSTAT_NEEDS_EOI;
            if pirq::is_shared(call.domain.id, irq) {
                flags |= XENIRQSTAT_SHARED;
            }
            let mut reply = [0u8; 8];
            reply[..4].copy_from_slice(&irq.to_le_bytes());
            reply[4..].copy_from_slice(&flags.to_le_bytes());
            argument.write(&reply)?;
            Ok(0)
        }
        PHYSDEVOP_EOI => {
            let irq = read_u32(input)?;
            pirq::eoi(call.domain.id, irq)?;
            Ok(0)
        }
        PHYSDEVOP_MAP_PIRQ => map_pirq(call, argument),
        PHYSDEVOP_UNMAP_PIRQ => unmap_pirq(call, input),
        _ => Err(Errno::ENOSYS),
    }
}
