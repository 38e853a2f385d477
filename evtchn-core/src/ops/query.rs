//! EVTCHNOP_status, EVTCHNOP_bind_vcpu and EVTCHNOP_unmask.

use crate::abi::{DomId, Errno, EvtchnStat, EvtchnStatus, Port, VcpuId};
use crate::channel::{ChannelState, Consumer};
use crate::domain::Domain;
use crate::notify::{Notify, PirqHost};
use crate::registry::Domains;

use super::check_target;

impl<N: Notify, P: PirqHost> Domains<N, P> {
    /// EVTCHNOP_status (spec §2.6): fills `status`, `vcpu` and the union
    /// member of the state; the rest of `query.u` comes back as passed (so
    /// IPI and closed ports leave the union untouched). -ESRCH, then
    /// -EINVAL for an invalid port *before* the privilege check, then
    /// -EACCES for a Xen-attached channel (Xen 4.15–4.18), then -EPERM.
    pub fn status(&self, caller: DomId, query: EvtchnStatus) -> Result<EvtchnStatus, Errno> {
        let caller = self.caller(caller)?;
        let target = self.resolve(&caller, query.dom)?;
        self.status_on(&caller, &target, query)
    }

    /// [`Domains::status`] once the caller and the target are found. One
    /// match on the state decides the Xen-attached refusal, the status
    /// value and the union member; the reply is the query with those
    /// written in. Inlined into its one caller each, the handle's
    /// (`status_from`) and the by-id op's.
    #[inline(always)]
    pub(crate) fn status_on(
        &self,
        caller: &Domain,
        target: &Domain,
        query: EvtchnStatus,
    ) -> Result<EvtchnStatus, Errno> {
        let channel = target.table.channel(query.port).ok_or(Errno::EINVAL)?;
        let state = *channel.read();
        let mut reply = query;
        let stat = match state {
            ChannelState::Unbound {
                consumer: Consumer::Xen(_),
                ..
            }
            | ChannelState::Interdomain {
                consumer: Consumer::Xen(_),
                ..
            } => return Err(Errno::EACCES),
            ChannelState::Free | ChannelState::Reserved => EvtchnStat::Closed,
            ChannelState::Ipi => EvtchnStat::Ipi,
            ChannelState::Unbound {
                remote,
                consumer: Consumer::Guest,
            } => {
                reply.set_unbound_dom(remote);
                EvtchnStat::Unbound
            }
            ChannelState::Interdomain {
                remote,
                remote_port,
                consumer: Consumer::Guest,
            } => {
                reply.set_interdomain(remote, remote_port);
                EvtchnStat::Interdomain
            }
            ChannelState::Pirq { pirq } => {
                reply.set_pirq(pirq);
                EvtchnStat::Pirq
            }
            ChannelState::Virq { virq } => {
                reply.set_virq(virq.number());
                EvtchnStat::Virq
            }
        };
        // After -EACCES, as Xen 4.17 checks (spec §2.6); the union written
        // above goes nowhere on this error.
        check_target(caller, target)?;
        reply.status = stat as u32;
        reply.vcpu = channel.notify_vcpu();
        Ok(reply)
    }

    /// EVTCHNOP_bind_vcpu (spec §2.10): -ENOENT for no such vcpu (checked
    /// *before* the port), -EINVAL for an invalid port, a Xen-attached
    /// channel, a per-vcpu VIRQ, an IPI, a free or reserved port. Global
    /// VIRQs, unbound and interdomain ports change their notify vcpu; a PIRQ
    /// also has its host IRQ retargeted. Nothing pending is re-raised.
    pub fn bind_vcpu(&self, caller: DomId, port: Port, vcpu: VcpuId) -> Result<(), Errno> {
        let domain = self.caller(caller)?;
        domain.check_vcpu(vcpu)?;
        let _locked = domain.lock();
        let channel = domain.table.channel(port).ok_or(Errno::EINVAL)?;
        let state = *channel.read();
        if state.is_xen_attached() {
            return Err(Errno::EINVAL);
        }
        match state {
            ChannelState::Virq { virq } if virq.is_per_vcpu() => Err(Errno::EINVAL),
            ChannelState::Virq { .. }
            | ChannelState::Unbound { .. }
            | ChannelState::Interdomain { .. } => {
                channel.set_notify_vcpu(vcpu);
                Ok(())
            }
            ChannelState::Pirq { pirq } => {
                if channel.notify_vcpu() != vcpu {
                    channel.set_notify_vcpu(vcpu);
                    self.pirq_host.set_affinity(domain.domid, pirq, vcpu);
                }
                Ok(())
            }
            ChannelState::Ipi | ChannelState::Free | ChannelState::Reserved => Err(Errno::EINVAL),
        }
    }

    /// EVTCHNOP_unmask (spec §2.11): -EINVAL for an invalid port, else rc 0
    /// — also for free and reserved ports, where nothing happens. A usable
    /// port that was masked and is pending is re-raised toward its notify
    /// vcpu.
    pub fn unmask(&self, caller: DomId, port: Port) -> Result<(), Errno> {
        let domain = self.caller(caller)?;
        self.unmask_on(&domain, port)
    }

    /// [`Domains::unmask`] once the caller is found.
    #[inline]
    pub(crate) fn unmask_on(&self, domain: &Domain, port: Port) -> Result<(), Errno> {
        let channel = domain.table.channel(port).ok_or(Errno::EINVAL)?;
        let state = channel.read();
        if !channel.is_usable_under_lock(&state) {
            return Ok(());
        }
        let wakeups = domain.unmask((port, channel), channel.notify_vcpu(), &self.notify);
        drop(state);
        domain.deliver(wakeups, &self.notify);
        Ok(())
    }
}
