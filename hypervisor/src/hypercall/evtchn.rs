//! event_channel_op (hypercall 32, spec §1–§2): copy the op's struct in,
//! let evtchn-core serve it on plain bytes, copy the reply out on success
//! only (a failed copy-out is -EFAULT and undoes nothing).
//!
//! The hot ops (send, unmask, close: one port in, nothing back; status;
//! alloc_unbound) skip the byte interface and call evtchn-core's typed entry points on
//! the domain's handle directly.

use evtchn_core::abi::{EvtchnAllocUnbound, EvtchnOp, EvtchnStatus};
use evtchn_core::{DomainHandle, Errno, Port};

use super::{Call, GuestInOut};

/// EVTCHNOP_reset_cont: how a preempted reset continues.
const EVTCHNOP_RESET_CONT: u64 = 14;
/// This hypercall's number, for a continuation.
const EVENT_CHANNEL_OP: u64 = 32;

/// `event_channel_op(cmd, arg)`. Inlined into the hypercall dispatch, so
/// the hot ops pay no call of their own.
#[inline]
pub fn event_channel_op(call: &mut Call<'_>) -> Result<u64, Errno> {
    let (command, argument) = (call.argument(0), call.guest_in_out(1));
    let Ok(command) = u32::try_from(command) else {
        return Err(Errno::ENOSYS);
    };
    let op = EvtchnOp::from_cmd(command);
    if let Some(op @ (EvtchnOp::Send | EvtchnOp::Unmask | EvtchnOp::Close)) = op
        && let Some(handle) = call.domain.events.get()
    {
        return port_op(handle, op, argument);
    }
    if op == Some(EvtchnOp::Status)
        && let Some(handle) = call.domain.events.get()
    {
        return status(handle, argument);
    }
    if op == Some(EvtchnOp::AllocUnbound)
        && let Some(handle) = call.domain.events.get()
    {
        return alloc_unbound(handle, argument);
    }
    let mut bytes = [0u8; 32];
    let size = op.map_or(0, EvtchnOp::arg_size);
    let input = bytes.get_mut(..size).ok_or(Errno::EFAULT)?;
    if !input.is_empty() {
        argument.read(input)?;
    }
    let events = crate::events::domains();
    let result = match call.domain.events.get() {
        Some(handle) => events.dispatch_from(handle, command, input),
        None => events.dispatch(call.domain.id, command, input),
    };
    match result {
        Ok(reply) => {
            if !reply.is_empty() {
                argument.write(reply.as_bytes())?;
            }
            Ok(0)
        }
        Err(Errno::ERESTART) => {
            // Continue as reset_cont: the guest's `syscall` runs again
            // (2 bytes back) with rax and rdi rewritten (spec §7.2).
            call.frame.rdi = EVTCHNOP_RESET_CONT;
            call.frame.rip = call.frame.rip.wrapping_sub(2);
            Ok(EVENT_CHANNEL_OP)
        }
        Err(errno) => Err(errno),
    }
}

/// EVTCHNOP_send, EVTCHNOP_unmask or EVTCHNOP_close (`op`) through the
/// caller's handle: the same checks and answers as the byte interface
/// (-EFAULT for an unreadable struct first), without building a reply.
#[inline]
fn port_op(handle: &DomainHandle, op: EvtchnOp, argument: GuestInOut) -> Result<u64, Errno> {
    let port = Port(argument.read_u32()?);
    let events = crate::events::domains();
    let result = match op {
        EvtchnOp::Send => events.send_from(handle, port),
        EvtchnOp::Unmask => events.unmask_from(handle, port),
        _ => events.close_from(handle, port),
    };
    if let Err(errno) = result {
        log::debug!("{}: {op:?} {port} rejected: {errno}", handle.domid());
    }
    result.map(|()| 0)
}

/// EVTCHNOP_status through the caller's handle, with the byte interface's
/// checks and answers: -EFAULT for an unreadable struct first, and the
/// union copied back as passed except the state's member (spec §2.6).
#[inline]
fn status(handle: &DomainHandle, argument: GuestInOut) -> Result<u64, Errno> {
    let mut bytes = [0u8; 24];
    argument.read(&mut bytes)?;
    let query = EvtchnStatus::from_bytes(&bytes);
    let reply = crate::events::domains()
        .status_from(handle, query)
        .inspect_err(|errno| {
            log::debug!("{}: Status {bytes:02x?} rejected: {errno}", handle.domid());
        })?;
    // The OUT fields only (status, vcpu, union: bytes 8..24); dom, its
    // padding and port go back as read, as the full encoding would give.
    let (status, vcpu) = (reply.status.to_le_bytes(), reply.vcpu.0.to_le_bytes());
    let out = status.iter().chain(&vcpu).chain(&reply.u);
    for (target, source) in bytes.iter_mut().skip(8).zip(out) {
        *target = *source;
    }
    argument.write(&bytes)?;
    Ok(0)
}

/// EVTCHNOP_alloc_unbound through the caller's handle, with the byte
/// interface's checks and answers: -EFAULT for an unreadable struct first,
/// and on success the struct copied back with the new port.
#[inline]
fn alloc_unbound(handle: &DomainHandle, argument: GuestInOut) -> Result<u64, Errno> {
    let mut bytes = [0u8; 8];
    argument.read(&mut bytes)?;
    let mut request = EvtchnAllocUnbound::from_bytes(&bytes);
    request.port = crate::events::domains()
        .alloc_unbound_from(handle, request.dom, request.remote_dom)
        .inspect_err(|errno| {
            log::debug!(
                "{}: AllocUnbound {bytes:02x?} rejected: {errno}",
                handle.domid()
            );
        })?;
    argument.write(&request.to_bytes())?;
    Ok(0)
}
