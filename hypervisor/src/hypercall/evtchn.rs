//! event_channel_op (hypercall 32, spec §1–§2): copy the op's struct in,
//! let evtchn-core serve it on plain bytes, copy the reply out on success
//! only (a failed copy-out is -EFAULT and undoes nothing).

use evtchn_core::Errno;
use evtchn_core::abi::EvtchnOp;

use super::Call;

/// EVTCHNOP_reset_cont: how a preempted reset continues.
const EVTCHNOP_RESET_CONT: u64 = 14;
/// This hypercall's number, for a continuation.
const EVENT_CHANNEL_OP: u64 = 32;

/// `event_channel_op(cmd, arg)`.
pub fn event_channel_op(call: &mut Call<'_>) -> Result<u64, Errno> {
    let (command, argument) = (call.argument(0), call.guest_in_out(1));
    let Ok(command) = u32::try_from(command) else {
        return Err(Errno::ENOSYS);
    };
    let mut bytes = [0u8; 32];
    let size = EvtchnOp::from_cmd(command).map_or(0, EvtchnOp::arg_size);
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
