//! The 2-level ABI's port ops (spec §3.3; Xen: event_2l.c).
//!
//! Port p is bit p%64 of word p/64 in `evtchn_pending` / `evtchn_mask`, and
//! selector bit p/64 in the target vcpu's `evtchn_pending_sel`. Every
//! read-modify-write is a locked atomic (`fetch_or` / `fetch_and`, SeqCst:
//! the guest side uses locked instructions too, and Xen's test-and-set bit
//! ops are full barriers, which the ABI's ordering relies on). A port past
//! the 512-byte arrays is never touched: it reads as masked and not pending
//! (XSA-342).

use super::Wakeups;
use crate::abi::{Port, VcpuId};
use crate::shared::SharedInfoView;
use crate::sync::{AtomicU64, Ordering};

fn word_and_bit(port: Port) -> (usize, u64) {
    ((port.0 / 64) as usize, 1u64 << (port.0 % 64))
}

fn pending_word(view: &dyn SharedInfoView, port: Port) -> Option<(&AtomicU64, u64)> {
    let (word, bit) = word_and_bit(port);
    Some((view.shared_info().evtchn_pending.get(word)?, bit))
}

fn mask_word(view: &dyn SharedInfoView, port: Port) -> Option<(&AtomicU64, u64)> {
    let (word, bit) = word_and_bit(port);
    Some((view.shared_info().evtchn_mask.get(word)?, bit))
}

/// Set the selector bit of `port`'s word in `vcpu`'s vcpu_info and, if it
/// was clear, mark events pending there. Returns the vcpu to kick.
fn raise_selector(view: &dyn SharedInfoView, port: Port, vcpu: VcpuId) -> Option<VcpuId> {
    let info = view.vcpu_info(vcpu)?;
    let selector_bit = 1u64 << (port.0 / 64);
    // SeqCst test-and-set: Xen's guest_test_and_set_bit() is a full barrier.
    if info
        .evtchn_pending_sel
        .fetch_or(selector_bit, Ordering::SeqCst)
        & selector_bit
        != 0
    {
        return None;
    }
    // Xen: vcpu_mark_events_pending(); upcall_mask is not looked at here.
    if info.evtchn_upcall_pending.fetch_or(1, Ordering::SeqCst) & 1 != 0 {
        return None;
    }
    Some(vcpu)
}

pub(super) fn set_pending(view: &dyn SharedInfoView, port: Port, vcpu: VcpuId) -> Wakeups {
    let Some((pending, bit)) = pending_word(view, port) else {
        return Wakeups::default();
    };
    // 1. test-and-set pending; already set → nothing more (edge-triggered).
    if pending.fetch_or(bit, Ordering::SeqCst) & bit != 0 {
        return Wakeups::default();
    }
    crate::sync::after_test_and_set();
    // 2. Not masked → selector, then upcall_pending.
    let is_masked =
        mask_word(view, port).is_none_or(|(mask, bit)| mask.load(Ordering::SeqCst) & bit != 0);
    let kick_vcpu = if is_masked {
        None
    } else {
        raise_selector(view, port, vcpu)
    };
    // 3. Pollers are woken also for a masked port.
    Wakeups {
        kick_vcpu,
        poll_port: Some(port),
    }
}

pub(super) fn clear_pending(view: &dyn SharedInfoView, port: Port) {
    if let Some((pending, bit)) = pending_word(view, port) {
        pending.fetch_and(!bit, Ordering::SeqCst);
    }
}

pub(super) fn unmask(view: &dyn SharedInfoView, port: Port, vcpu: VcpuId) -> Wakeups {
    let Some((mask, bit)) = mask_word(view, port) else {
        return Wakeups::default();
    };
    // test-and-clear mask; only a port that *was* masked and is pending is
    // re-raised: unmasking an unmasked pending port does nothing.
    let was_masked = mask.fetch_and(!bit, Ordering::SeqCst) & bit != 0;
    crate::sync::after_test_and_set();
    if !was_masked || !is_pending(view, port) {
        return Wakeups::default();
    }
    Wakeups {
        kick_vcpu: raise_selector(view, port, vcpu),
        poll_port: None,
    }
}

pub(super) fn is_pending(view: &dyn SharedInfoView, port: Port) -> bool {
    pending_word(view, port).is_some_and(|(pending, bit)| pending.load(Ordering::SeqCst) & bit != 0)
}

pub(super) fn is_masked(view: &dyn SharedInfoView, port: Port) -> bool {
    mask_word(view, port).is_none_or(|(mask, bit)| mask.load(Ordering::SeqCst) & bit != 0)
}
