//! event_channel_op (hypercall 32, spec §1–§2): copy the op's struct in,
//! let evtchn-core serve it on plain bytes, copy the reply out on success
//! only (a failed copy-out is -EFAULT and undoes nothing).
//!
//! The hot ops (send, unmask, close: one port in, nothing back; status;
//! alloc_unbound) are recognised by their command, skip the
//! byte interface and call evtchn-core's typed entry points on the
//! domain's handle directly; their structs are read and written as whole
//! quadwords. Every other op, and a domain without a handle, takes the
//! byte interface, out of line.
//!
//! The command is Xen's `int cmd`: a 64-bit guest passes it in `rdi`, and
//! Xen 4.17's hypercall table hands the register to
//! `do_event_channel_op(int cmd, ...)`, which keeps its low 32 bits. So
//! bits 32–63 of `rdi` are ignored here too (0x1_0000_0004 is
//! EVTCHNOP_send), and a command whose bit 31 is set, negative as an
//! `int`, is unknown (-ENOSYS) like any other.

use evtchn_core::abi::{EvtchnOp, EvtchnStatus};
use evtchn_core::{DomId, DomainHandle, Errno, Port, VcpuId};

use arch::idt::InterruptFrame;

use super::{Call, GuestInOut};
use crate::domain::Domain;

/// EVTCHNOP_reset_cont: how a preempted reset continues.
const EVTCHNOP_RESET_CONT: u64 = 14;
/// This hypercall's number, for a continuation.
const EVENT_CHANNEL_OP: u64 = 32;

/// The hot ops' commands (spec §1.1).
const SEND: u32 = EvtchnOp::Send as u32;
const UNMASK: u32 = EvtchnOp::Unmask as u32;
const CLOSE: u32 = EvtchnOp::Close as u32;
const STATUS: u32 = EvtchnOp::Status as u32;
const ALLOC_UNBOUND: u32 = EvtchnOp::AllocUnbound as u32;

/// The command in `rdi` as Xen's `int cmd` sees it: its low 32 bits
/// (module doc).
#[inline(always)]
fn int_cmd(rdi: u64) -> u32 {
    rdi as u32
}

/// `event_channel_op(cmd, arg)`. Inlined into the hypercall dispatch, so
/// the hot ops pay no call of their own.
#[inline]
pub fn event_channel_op(call: &mut Call<'_>) -> Result<u64, Errno> {
    let argument = call.guest_in_out(1);
    if let Some(handle) = call.domain.events.get() {
        let events = crate::events::domains();
        // Xen's `int cmd`: only the low 32 bits of the register count.
        match int_cmd(call.argument(0)) {
            SEND => {
                return port_op(handle, EvtchnOp::Send, argument, |port| {
                    events.send_from(handle, port)
                });
            }
            UNMASK => {
                return port_op(handle, EvtchnOp::Unmask, argument, |port| {
                    events.unmask_from(handle, port)
                });
            }
            CLOSE => {
                return port_op(handle, EvtchnOp::Close, argument, |port| {
                    events.close_from(handle, port)
                });
            }
            STATUS => return status(handle, argument),
            ALLOC_UNBOUND => return alloc_unbound(handle, argument),
            _ => {}
        }
    }
    by_bytes(call.domain, call.frame)
}

/// Every op through evtchn-core's byte interface: the ops without a
/// typed path here, and any op of a domain without a handle. Takes the
/// domain and frame rather than the [`Call`], which then stays in
/// registers on the hot ops' path.
#[inline(never)]
fn by_bytes(domain: &Domain, frame: &mut InterruptFrame) -> Result<u64, Errno> {
    let (command, argument) = (int_cmd(frame.rdi), GuestInOut(frame.rsi));
    let op = EvtchnOp::from_cmd(command);
    let mut bytes = [0u8; 32];
    let size = op.map_or(0, EvtchnOp::arg_size);
    let input = bytes.get_mut(..size).ok_or(Errno::EFAULT)?;
    if !input.is_empty() {
        argument.read(input)?;
    }
    let events = crate::events::domains();
    let result = match domain.events.get() {
        Some(handle) => events.dispatch_from(handle, command, input),
        None => events.dispatch(domain.id, command, input),
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
            frame.rdi = EVTCHNOP_RESET_CONT;
            frame.rip = frame.rip.wrapping_sub(2);
            Ok(EVENT_CHANNEL_OP)
        }
        Err(errno) => Err(errno),
    }
}

/// EVTCHNOP_send, EVTCHNOP_unmask or EVTCHNOP_close (`op`, served by
/// `serve`) through the caller's handle: the same checks and answers as
/// the byte interface (-EFAULT for an unreadable struct first), without
/// building a reply.
#[inline(always)]
fn port_op(
    handle: &DomainHandle,
    op: EvtchnOp,
    argument: GuestInOut,
    serve: impl FnOnce(Port) -> Result<(), Errno>,
) -> Result<u64, Errno> {
    let port = Port(argument.read_u32()?);
    match serve(port) {
        Ok(()) => Ok(0),
        Err(errno) => Err(rejected(handle, op, port, errno)),
    }
}

/// Logs a rejected port op (debug level) and returns its errno.
#[cold]
#[inline(never)]
fn rejected(handle: &DomainHandle, op: EvtchnOp, port: Port, errno: Errno) -> Errno {
    log::debug!("{}: {op:?} {port} rejected: {errno}", handle.domid());
    errno
}

/// Logs a rejected op whose struct was `words` (debug level) and returns
/// its errno.
#[cold]
#[inline(never)]
fn rejected_struct(handle: &DomainHandle, op: EvtchnOp, words: &[u64], errno: Errno) -> Errno {
    log::debug!("{}: {op:?} {words:016x?} rejected: {errno}", handle.domid());
    errno
}

/// EVTCHNOP_status through the caller's handle, with the byte interface's
/// checks and answers: -EFAULT for an unreadable struct first, and the
/// union copied back as passed except the state's member (spec §2.6).
///
/// The 24 bytes are three quadwords: `dom`, its padding and `port`; then
/// `status` and `vcpu`; then the union. The first goes back as read.
#[inline]
fn status(handle: &DomainHandle, argument: GuestInOut) -> Result<u64, Errno> {
    let words = argument.read_words::<3>()?;
    let [head, out, union] = words;
    let query = EvtchnStatus {
        dom: DomId(head as u16),
        _pad: ((head >> 16) as u16).to_le_bytes(),
        port: Port((head >> 32) as u32),
        status: out as u32,
        vcpu: VcpuId((out >> 32) as u32),
        u: union.to_le_bytes(),
    };
    let reply = match crate::events::domains().status_from(handle, query) {
        Ok(reply) => reply,
        Err(errno) => return Err(rejected_struct(handle, EvtchnOp::Status, &words, errno)),
    };
    let out = u64::from(reply.status) | u64::from(reply.vcpu.0) << 32;
    argument.write_words([head, out, u64::from_le_bytes(reply.u)])?;
    Ok(0)
}

/// EVTCHNOP_alloc_unbound through the caller's handle, with the byte
/// interface's checks and answers: -EFAULT for an unreadable struct first,
/// and on success the struct copied back with the new port (`dom` and
/// `remote_dom`, the first quadword's low half, as read).
#[inline]
fn alloc_unbound(handle: &DomainHandle, argument: GuestInOut) -> Result<u64, Errno> {
    let [word] = argument.read_words::<1>()?;
    let (dom, remote_dom) = (DomId(word as u16), DomId((word >> 16) as u16));
    let port = match crate::events::domains().alloc_unbound_from(handle, dom, remote_dom) {
        Ok(port) => port,
        Err(errno) => {
            return Err(rejected_struct(
                handle,
                EvtchnOp::AllocUnbound,
                &[word],
                errno,
            ));
        }
    };
    argument.write_words([(word & 0xffff_ffff) | u64::from(port.0) << 32])?;
    Ok(0)
}
