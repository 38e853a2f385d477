//! The FIFO ABI's ops (spec §2.13, §4.2): EVTCHNOP_init_control,
//! EVTCHNOP_expand_array and EVTCHNOP_set_priority.
//!
//! The first init_control of a domain switches it from 2-level to FIFO:
//! FIFO state for every vcpu is built first (XSA-107), the control block
//! is mapped and published with its queue heads (XSA-358), and only then is
//! the domain's ABI switched, under the ABI lock as writer, so every reader
//! sees complete FIFO state (XSA-359). Leaving FIFO is reset's job
//! (`close.rs`) or destruction's.

use alloc::vec::Vec;

use crate::abi::{
    DomId, EVTCHN_2L_NR_CHANNELS, EVTCHN_FIFO_LINK_BITS, EVTCHN_FIFO_PRIORITY_DEFAULT,
    EVTCHN_FIFO_PRIORITY_MIN, EVTCHN_FIFO_WORDS_PER_PAGE, Errno, EvtchnFifoControlBlock,
    EvtchnInitControl, Port,
};
use crate::domain::{Domain, EventLocked, FifoSupport};
use crate::notify::{Notify, PirqHost};
use crate::port_ops::{EventAbi, Fifo};
use crate::registry::Domains;
use crate::sync::MutexGuard;

/// Largest control-block offset: a 72-byte block must fit in the page.
const MAX_CONTROL_OFFSET: u32 = 4096 - EvtchnFifoControlBlock::SIZE;

impl<N: Notify, P: PirqHost> Domains<N, P> {
    /// EVTCHNOP_init_control (spec §2.13; Xen: `evtchn_fifo_init_control()`):
    /// give `request.vcpu` its control block at byte `request.offset` of
    /// guest frame `request.control_gfn`; the reply carries `link_bits` 17.
    ///
    /// Checks, in Xen's order: -ENOENT for no such vcpu; -EINVAL for an
    /// offset past 4096 − 72 or not 8-aligned; (Sluice) -EOPNOTSUPP if the
    /// domain was created with [`FifoSupport::Disabled`]; -EINVAL if the
    /// vcpu already has a control block; then the frame mapping's errors
    /// (-EINVAL for a frame the domain does not own), -ENOMEM. A failure
    /// leaves the domain as it was. (Sluice: -EINVAL while the domain is
    /// being destroyed.)
    ///
    /// The first call switches the domain to FIFO: ports pending in the
    /// 2-level bitmap stay pending (re-raised when expand_array adds their
    /// page), every valid port gets priority 7, and the allocation limit
    /// becomes 131071 (or `max_evtchn_port`).
    pub fn init_control(
        &self,
        caller: DomId,
        request: EvtchnInitControl,
    ) -> Result<EvtchnInitControl, Errno> {
        let domain = self.caller(caller)?;
        let reply = EvtchnInitControl {
            link_bits: EVTCHN_FIFO_LINK_BITS,
            ..request
        };
        let vcpu = request.vcpu;
        domain.check_vcpu(vcpu)?;
        if request.offset > MAX_CONTROL_OFFSET || !request.offset.is_multiple_of(8) {
            return Err(Errno::EINVAL);
        }
        if domain.fifo_support == FifoSupport::Disabled {
            return Err(Errno::EOPNOTSUPP);
        }
        let locked = domain.lock();
        // Destruction has left FIFO for good (or is about to): mapping new
        // frames now would keep them until the last reference goes.
        if locked.is_dying {
            return Err(Errno::EINVAL);
        }
        {
            let abi = domain.abi();
            if let Some(fifo) = abi.fifo() {
                if fifo.has_control_block(vcpu) {
                    return Err(Errno::EINVAL);
                }
                let frame = domain.shared.map_frame(request.control_gfn)?;
                fifo.install_control_block(vcpu, frame, request.offset)?;
                return Ok(reply);
            }
        }
        // First control block of the domain: build everything, then switch.
        let fifo = Fifo::new(domain.vcpus.len() as u32)?;
        let frame = domain.shared.map_frame(request.control_gfn)?;
        fifo.install_control_block(vcpu, frame, request.offset)?;
        let _two_level = domain.switch_abi(&locked, EventAbi::Fifo(fifo));
        // Xen: setup_ports(), after the switch and only ever *setting* the
        // sticky flag, so an event that reached the FIFO ops in between is
        // kept too. Under the event lock no channel changes state.
        let valid = domain.table.valid_evtchns().min(EVTCHN_2L_NR_CHANNELS);
        for port in (1..valid).map(Port) {
            if let Some(channel) = domain.table.channel(port) {
                if EventAbi::TwoLevel.is_pending(&*domain.shared, port) {
                    channel.set_fifo_pending(true);
                }
                channel.set_priority(EVTCHN_FIFO_PRIORITY_DEFAULT);
            }
        }
        drop(locked);
        log::debug!("{}: switched to the FIFO event ABI", domain.domid);
        Ok(reply)
    }

    /// EVTCHNOP_expand_array (spec §2.13, §4.2; Xen:
    /// `evtchn_fifo_expand_array()`): add guest frame `array_gfn` as the next
    /// event-array page (1024 ports), then set pending again every port of
    /// the new range that was raised while it had no event word.
    ///
    /// -EOPNOTSUPP while FIFO is not active (tested under the event lock,
    /// XSA-505); -ENOSPC once 128 pages (131072 ports) are there; -EINVAL
    /// for a frame the domain does not own; -ENOMEM.
    pub fn expand_array(&self, caller: DomId, array_gfn: u64) -> Result<(), Errno> {
        let domain = self.caller(caller)?;
        let locked = domain.lock();
        let abi = domain.abi();
        let fifo = abi.fifo().ok_or(Errno::EOPNOTSUPP)?;
        fifo.check_room()?;
        let mut wakeups = Vec::new();
        wakeups
            .try_reserve_exact(EVTCHN_FIFO_WORDS_PER_PAGE as usize)
            .map_err(|_| Errno::ENOMEM)?;
        let frame = domain.shared.map_frame(array_gfn)?;
        let (first, end) = fifo.add_page(frame)?;
        // Lock order: event lock -> ABI (read) -> channel (read). Holding
        // the event lock excludes every writer of both, so the channel read
        // after the ABI read cannot wait.
        let valid = domain.table.valid_evtchns();
        for port in (first..end.min(valid)).map(Port) {
            let Some(channel) = domain.table.channel(port) else {
                continue;
            };
            let state = channel.read();
            if channel.take_fifo_pending() && state.is_usable() {
                wakeups.push(abi.set_pending(
                    &*domain.shared,
                    (port, channel),
                    channel.notify_vcpu(),
                    &self.notify,
                ));
            }
        }
        drop(abi);
        drop(locked);
        for wakeup in wakeups {
            domain.deliver(wakeup, &self.notify);
        }
        Ok(())
    }

    /// EVTCHNOP_set_priority (spec §2.13; Xen: `evtchn_set_priority()`):
    /// -EINVAL for an invalid port, -ENOSYS while the 2-level ABI is active,
    /// -EACCES for a free, reserved or Xen-attached port, -EINVAL for a
    /// priority above 15. Only future linking uses the new priority: a
    /// linked event stays on its queue.
    pub fn set_priority(&self, caller: DomId, port: Port, priority: u32) -> Result<(), Errno> {
        let domain = self.caller(caller)?;
        let channel = domain.table.channel(port).ok_or(Errno::EINVAL)?;
        let state = channel.read();
        if domain.abi().fifo().is_none() {
            return Err(Errno::ENOSYS);
        }
        if !state.is_usable() {
            return Err(Errno::EACCES);
        }
        let priority = u8::try_from(priority)
            .ok()
            .filter(|&priority| priority <= EVTCHN_FIFO_PRIORITY_MIN)
            .ok_or(Errno::EINVAL)?;
        channel.set_priority(priority);
        Ok(())
    }
}

impl Domain {
    /// Leave FIFO for 2-level, if FIFO is active, and drop the FIFO state
    /// (unmapping every frame) after the locks are released. The caller
    /// holds the event lock and has closed every guest channel (reset) or
    /// every channel (destruction).
    pub(crate) fn leave_fifo(&self, locked: MutexGuard<'_, EventLocked>) {
        let previous = self.switch_abi(&locked, EventAbi::TwoLevel);
        if previous.fifo().is_none() {
            return;
        }
        // Sticky flags belong to the FIFO session that ends here.
        for port in (1..self.table.valid_evtchns()).map(Port) {
            if let Some(channel) = self.table.channel(port) {
                channel.set_fifo_pending(false);
            }
        }
        drop(locked);
        drop(previous);
        log::debug!("{}: back to the 2-level event ABI", self.domid);
    }
}
