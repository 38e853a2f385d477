//! physdev_op (spec §6): eoi, irq_status_query and set_iopl. No host IRQ is
//! routed to a guest yet, so no pirq has an EOI outstanding.

use evtchn_core::Errno;

use super::{Call, GuestIn};
use crate::domain::builder::NR_PIRQS;

const PHYSDEVOP_IRQ_STATUS_QUERY: u64 = 5;
const PHYSDEVOP_SET_IOPL: u64 = 6;
const PHYSDEVOP_EOI: u64 = 12;
const XENIRQSTAT_NEEDS_EOI: u32 = 1 << 0;

fn read_u32(address: GuestIn) -> Result<u32, Errno> {
    let mut bytes = [0u8; 4];
    address.read(&mut bytes)?;
    Ok(u32::from_le_bytes(bytes))
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
            // needs_eoi is always set for PV; `shared` needs two binders.
            let mut reply = [0u8; 8];
            reply[..4].copy_from_slice(&irq.to_le_bytes());
            reply[4..].copy_from_slice(&XENIRQSTAT_NEEDS_EOI.to_le_bytes());
            argument.write(&reply)?;
            Ok(0)
        }
        PHYSDEVOP_EOI => {
            let irq = read_u32(input)?;
            let events = crate::events::domains();
            if irq >= NR_PIRQS || events.pirq_port(call.domain.id, irq).is_none() {
                return Err(Errno::EINVAL);
            }
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}
