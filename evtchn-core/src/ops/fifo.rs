//! The FIFO ABI's ops on a domain that uses the 2-level ABI (spec §2.13).
//!
//! Sluice does not implement FIFO yet. init_control validates its argument
//! as Xen 4.17 does and then answers -EOPNOTSUPP, as Xen (from 4.21) does
//! when built without FIFO support; Linux then stays on 2-level.

use crate::abi::{DomId, EVTCHN_FIFO_LINK_BITS, Errno, EvtchnInitControl, Port};
use crate::notify::{Notify, PirqHost};
use crate::port_ops::EventAbi;
use crate::registry::Domains;

/// Largest control-block offset: a 72-byte block must fit in the page.
const MAX_CONTROL_OFFSET: u32 = 4096 - 72;

impl<N: Notify, P: PirqHost> Domains<N, P> {
    /// EVTCHNOP_init_control: -ENOENT for no such vcpu, -EINVAL for an
    /// offset past 4024 or not 8-aligned, otherwise -EOPNOTSUPP (no FIFO in
    /// Sluice yet). The reply would carry `link_bits` = 17.
    pub fn init_control(
        &self,
        caller: DomId,
        request: EvtchnInitControl,
    ) -> Result<EvtchnInitControl, Errno> {
        let domain = self.caller(caller)?;
        domain.check_vcpu(request.vcpu)?;
        if request.offset > MAX_CONTROL_OFFSET || !request.offset.is_multiple_of(8) {
            return Err(Errno::EINVAL);
        }
        // With FIFO, the reply would carry link_bits = 17.
        let _reply = EvtchnInitControl {
            link_bits: EVTCHN_FIFO_LINK_BITS,
            ..request
        };
        Err(Errno::EOPNOTSUPP)
    }

    /// EVTCHNOP_expand_array: -EOPNOTSUPP while FIFO is not active (tested
    /// under the event lock, XSA-505).
    pub fn expand_array(&self, caller: DomId, _array_gfn: u64) -> Result<(), Errno> {
        let domain = self.caller(caller)?;
        let _locked = domain.lock();
        match domain.abi {
            EventAbi::TwoLevel => Err(Errno::EOPNOTSUPP),
        }
    }

    /// EVTCHNOP_set_priority: -EINVAL for an invalid port, then -ENOSYS
    /// while the 2-level ABI is active.
    pub fn set_priority(&self, caller: DomId, port: Port, _priority: u32) -> Result<(), Errno> {
        let domain = self.caller(caller)?;
        let channel = domain.table.channel(port).ok_or(Errno::EINVAL)?;
        let _state = channel.read();
        match domain.abi {
            EventAbi::TwoLevel => Err(Errno::ENOSYS),
        }
    }
}
