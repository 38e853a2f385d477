//! The byte-level entry point: `HYPERVISOR_event_channel_op(cmd, arg)`
//! after the hypervisor has copied the argument in.

use crate::abi::{
    DomId, Errno, EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindPirq,
    EvtchnBindVcpu, EvtchnBindVirq, EvtchnClose, EvtchnExpandArray, EvtchnInitControl, EvtchnOp,
    EvtchnReset, EvtchnSend, EvtchnSetPriority, EvtchnStatus, EvtchnUnmask,
};
use crate::notify::{Notify, PirqHost};
use crate::registry::{DomainHandle, Domains};

use super::ResetMode;

/// The bytes a successful op copies back to the guest (at most 24), or
/// none for ops that copy nothing back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply {
    bytes: [u8; 24],
    len: usize,
}

impl Reply {
    /// Nothing to copy back.
    pub const NONE: Self = Self {
        bytes: [0; 24],
        len: 0,
    };

    fn from_slice(source: &[u8]) -> Self {
        let mut reply = Self::NONE;
        let len = source.len().min(reply.bytes.len());
        if let (Some(target), Some(source)) = (reply.bytes.get_mut(..len), source.get(..len)) {
            target.copy_from_slice(source);
        }
        reply.len = len;
        reply
    }

    /// The bytes to copy back to the guest's argument (empty: copy nothing).
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&[])
    }

    /// Whether there is nothing to copy back.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The first `N` argument bytes, or -EFAULT if the hypervisor could not
/// copy that many in.
fn argument<const N: usize>(bytes: &[u8]) -> Result<&[u8; N], Errno> {
    bytes
        .get(..N)
        .and_then(|prefix| prefix.try_into().ok())
        .ok_or(Errno::EFAULT)
}

/// EVTCHNOP_status's copy-back: the union goes back as passed except the
/// state's member, so start from the guest's raw bytes, not a re-encoding.
fn status_reply(arg: &[u8], reply: EvtchnStatus) -> Result<Reply, Errno> {
    let mut reply_bytes = *argument::<24>(arg)?;
    let encoded = reply.to_bytes();
    if let (Some(target), Some(source)) = (reply_bytes.get_mut(4..24), encoded.get(4..24)) {
        target.copy_from_slice(source);
    }
    Ok(Reply::from_slice(&reply_bytes))
}

impl<N: Notify, P: PirqHost> Domains<N, P> {
    /// Serve `HYPERVISOR_event_channel_op(cmd, arg)` for `caller`, with `arg`
    /// the bytes copied in from the guest (at least
    /// [`EvtchnOp::arg_size`] of them, else -EFAULT). Unknown `cmd` gives
    /// -ENOSYS. On success, copy [`Reply::as_bytes`] back; a failed
    /// copy-back is -EFAULT and undoes nothing (spec §1.1).
    /// [`Errno::ERESTART`] (from reset) means "continue as cmd 14" and must
    /// not reach the guest.
    pub fn dispatch(&self, caller: DomId, cmd: u32, arg: &[u8]) -> Result<Reply, Errno> {
        let Some(op) = EvtchnOp::from_cmd(cmd) else {
            log::debug!("{caller}: event_channel_op {cmd} unknown: -ENOSYS");
            return Err(Errno::ENOSYS);
        };
        let result = self.dispatch_op(caller, op, arg);
        match result {
            // A preempted reset is continued, not rejected.
            Err(Errno::ERESTART) => {}
            Err(errno) => log::debug!("{caller}: {op:?} {arg:02x?} rejected: {errno}"),
            Ok(_) => {}
        }
        result
    }

    /// [`Domains::dispatch`] for the domain behind a [`DomainHandle`]:
    /// the hot ops go through the caller's handle without the registry
    /// lookup (EVTCHNOP_send through [`Domains::send_from`], unmask through
    /// [`Domains::unmask_from`], status through [`Domains::status_from`],
    /// close through [`Domains::close_from`], alloc_unbound through
    /// [`Domains::alloc_unbound_from`]); every other op is served
    /// exactly as `dispatch(caller.domid(), ..)` serves it.
    pub fn dispatch_from(
        &self,
        caller: &DomainHandle,
        cmd: u32,
        arg: &[u8],
    ) -> Result<Reply, Errno> {
        let Some(op) = EvtchnOp::from_cmd(cmd) else {
            return self.dispatch(caller.domid(), cmd, arg);
        };
        let result = match op {
            EvtchnOp::Send => argument(arg).and_then(|bytes| {
                let request = EvtchnSend::from_bytes(bytes);
                self.send_from(caller, request.port).map(|()| Reply::NONE)
            }),
            EvtchnOp::Unmask => argument(arg).and_then(|bytes| {
                let request = EvtchnUnmask::from_bytes(bytes);
                self.unmask_from(caller, request.port).map(|()| Reply::NONE)
            }),
            EvtchnOp::Status => argument(arg).and_then(|bytes| {
                let reply = self.status_from(caller, EvtchnStatus::from_bytes(bytes))?;
                status_reply(arg, reply)
            }),
            EvtchnOp::AllocUnbound => argument(arg).and_then(|bytes| {
                let mut request = EvtchnAllocUnbound::from_bytes(bytes);
                request.port = self.alloc_unbound_from(caller, request.dom, request.remote_dom)?;
                Ok(Reply::from_slice(&request.to_bytes()))
            }),
            EvtchnOp::Close => argument(arg).and_then(|bytes| {
                let request = EvtchnClose::from_bytes(bytes);
                self.close_from(caller, request.port).map(|()| Reply::NONE)
            }),
            _ => self.dispatch_op(caller.domid(), op, arg),
        };
        match result {
            // A preempted reset is continued, not rejected.
            Err(Errno::ERESTART) => {}
            Err(errno) => {
                let domid = caller.domid();
                log::debug!("{domid}: {op:?} {arg:02x?} rejected: {errno}");
            }
            Ok(_) => {}
        }
        result
    }

    fn dispatch_op(&self, caller: DomId, op: EvtchnOp, arg: &[u8]) -> Result<Reply, Errno> {
        match op {
            EvtchnOp::BindInterdomain => {
                let request = EvtchnBindInterdomain::from_bytes(argument(arg)?);
                let local_port =
                    self.bind_interdomain(caller, request.remote_dom, request.remote_port)?;
                // Xen copies its copy of the whole struct back: the padding
                // after remote_dom returns as the guest passed it, so start
                // from the guest's bytes, not a re-encoding (zero padding).
                let mut reply_bytes = *argument::<12>(arg)?;
                if let Some(target) = reply_bytes.get_mut(8..12) {
                    target.copy_from_slice(&local_port.0.to_le_bytes());
                }
                Ok(Reply::from_slice(&reply_bytes))
            }
            EvtchnOp::BindVirq => {
                let mut request = EvtchnBindVirq::from_bytes(argument(arg)?);
                request.port = self.bind_virq(caller, request.virq, request.vcpu)?;
                Ok(Reply::from_slice(&request.to_bytes()))
            }
            EvtchnOp::BindPirq => {
                let mut request = EvtchnBindPirq::from_bytes(argument(arg)?);
                request.port = self.bind_pirq(caller, request.pirq, request.flags)?;
                Ok(Reply::from_slice(&request.to_bytes()))
            }
            EvtchnOp::Close => {
                let request = EvtchnClose::from_bytes(argument(arg)?);
                self.close(caller, request.port).map(|()| Reply::NONE)
            }
            EvtchnOp::Send => {
                let request = EvtchnSend::from_bytes(argument(arg)?);
                self.send(caller, request.port).map(|()| Reply::NONE)
            }
            EvtchnOp::Status => {
                let request = EvtchnStatus::from_bytes(argument(arg)?);
                let reply = self.status(caller, request)?;
                status_reply(arg, reply)
            }
            EvtchnOp::AllocUnbound => {
                let mut request = EvtchnAllocUnbound::from_bytes(argument(arg)?);
                request.port = self.alloc_unbound(caller, request.dom, request.remote_dom)?;
                Ok(Reply::from_slice(&request.to_bytes()))
            }
            EvtchnOp::BindIpi => {
                let mut request = EvtchnBindIpi::from_bytes(argument(arg)?);
                request.port = self.bind_ipi(caller, request.vcpu)?;
                Ok(Reply::from_slice(&request.to_bytes()))
            }
            EvtchnOp::BindVcpu => {
                let request = EvtchnBindVcpu::from_bytes(argument(arg)?);
                self.bind_vcpu(caller, request.port, request.vcpu)
                    .map(|()| Reply::NONE)
            }
            EvtchnOp::Unmask => {
                let request = EvtchnUnmask::from_bytes(argument(arg)?);
                self.unmask(caller, request.port).map(|()| Reply::NONE)
            }
            EvtchnOp::Reset | EvtchnOp::ResetCont => {
                let request = EvtchnReset::from_bytes(argument(arg)?);
                let mode = if op == EvtchnOp::Reset {
                    ResetMode::Start
                } else {
                    ResetMode::Continue
                };
                self.reset(caller, request.dom, mode).map(|()| Reply::NONE)
            }
            EvtchnOp::InitControl => {
                let request = EvtchnInitControl::from_bytes(argument(arg)?);
                let reply = self.init_control(caller, request)?;
                Ok(Reply::from_slice(&reply.to_bytes()))
            }
            EvtchnOp::ExpandArray => {
                let request = EvtchnExpandArray::from_bytes(argument(arg)?);
                self.expand_array(caller, request.array_gfn)
                    .map(|()| Reply::NONE)
            }
            EvtchnOp::SetPriority => {
                let request = EvtchnSetPriority::from_bytes(argument(arg)?);
                self.set_priority(caller, request.port, request.priority)
                    .map(|()| Reply::NONE)
            }
        }
    }
}
