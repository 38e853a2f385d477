//! The 2-level ABI's port ops (spec §3.3; Xen: event_2l.c).
//!
//! Port p is bit p%64 of word p/64 in `evtchn_pending` / `evtchn_mask`, and
//! selector bit p/64 in the target vcpu's `evtchn_pending_sel`. Every
//! read-modify-write is a locked atomic (`fetch_or` / `fetch_and`, SeqCst:
//! the guest side uses locked instructions too, and Xen's test-and-set bit
//! ops are full barriers, which the ABI's ordering relies on). A port past
//! the 512-byte arrays is never touched: it reads as masked and not pending
//! (XSA-342).

use super::{Wakeups, mark_info_pending};
use crate::abi::{Port, SharedInfo, VcpuId, VcpuInfo};
use crate::shared::SharedInfoView;
use crate::sync::{AtomicU64, Ordering};

#[inline]
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
/// was clear, mark events pending there. Returns the vcpu to kick. The
/// vcpu_info is looked up once for both test-and-sets.
#[inline(always)]
fn raise_selector(view: &dyn SharedInfoView, port: Port, vcpu: VcpuId) -> Option<VcpuId> {
    raise_selector_in(view.vcpu_info(vcpu)?, port, vcpu)
}

/// [`raise_selector`] in a vcpu_info the caller looked up.
#[inline(always)]
pub(super) fn raise_selector_in(info: &VcpuInfo, port: Port, vcpu: VcpuId) -> Option<VcpuId> {
    let selector_bit = 1u64 << (port.0 / 64);
    // Already set: Xen's test-and-set would find it set and stop here too,
    // so only the store is skipped. Sound because the caller's locked
    // operation on the pending or mask word came first (a full barrier; in
    // the single SeqCst order before this load): if the guest's exchange of
    // the selector comes after this load, its scan of the pending words
    // that follows sees the bit; if before, this load sees the selector
    // clear and the test-and-set below runs.
    if info.evtchn_pending_sel.load(Ordering::SeqCst) & selector_bit != 0 {
        return None;
    }
    // SeqCst test-and-set: Xen's guest_test_and_set_bit() is a full barrier.
    if info
        .evtchn_pending_sel
        .fetch_or(selector_bit, Ordering::SeqCst)
        & selector_bit
        != 0
    {
        return None;
    }
    mark_info_pending(info, vcpu)
}

/// Xen's `evtchn_2l_set_pending()` (spec §3.3), in its exact order. The
/// pending and mask words share an index.
#[inline]
pub(super) fn set_pending(view: &dyn SharedInfoView, port: Port, vcpu: VcpuId) -> Wakeups {
    set_pending_in(view.shared_info(), port, vcpu, || view.vcpu_info(vcpu))
}

/// [`set_pending`] in a shared_info page the caller looked up; `info` finds
/// `vcpu`'s vcpu_info, only for an unmasked port, after the pending
/// test-and-set: a vcpu_info may move (VCPUOP_register_vcpu_info), and
/// only a lookup after the test-and-set is sure to reach either the area
/// the guest reads or one whose move makes the guest rescan every pending
/// word (see `Domain::vcpu_info_after_raise`).
#[inline]
pub(super) fn set_pending_in<'info>(
    shared: &SharedInfo,
    port: Port,
    vcpu: VcpuId,
    info: impl FnOnce() -> Option<&'info VcpuInfo>,
) -> Wakeups {
    // 1. test-and-set pending; already set → nothing more (edge-triggered).
    if test_and_set_pending(shared, port) != Some(true) {
        return Wakeups::default();
    }
    crate::sync::after_test_and_set();
    // 2. Not masked → selector, then upcall_pending (straight-line: the
    // closure of `raise_then` is not always inlined).
    let kick_vcpu = if is_masked_in(shared, port) {
        None
    } else {
        info().and_then(|info| raise_selector_in(info, port, vcpu))
    };
    // 3. Pollers are woken also for a masked port.
    Wakeups {
        kick_vcpu,
        poll_port: Some(port),
    }
}

/// Step 1 of [`set_pending`]: test-and-set `port`'s pending bit. `Some(true)`
/// if this call set it, `Some(false)` if it was set already, `None` for a
/// port past the bitmaps (nothing touched).
#[inline]
pub(super) fn test_and_set_pending(shared: &SharedInfo, port: Port) -> Option<bool> {
    let (index, bit) = word_and_bit(port);
    let pending = shared.evtchn_pending.get(index)?;
    // SeqCst test-and-set: Xen's guest_test_and_set_bit() is a full barrier.
    Some(pending.fetch_or(bit, Ordering::SeqCst) & bit == 0)
}

/// Steps 2 and 3 of [`set_pending`], for a port whose pending bit was just
/// set (by [`test_and_set_pending`], which the caller follows with
/// `after_test_and_set`): if unmasked, the selector and upcall_pending of
/// `vcpu`; pollers in any case.
#[inline(always)]
pub(super) fn raise(
    view: &dyn SharedInfoView,
    shared: &SharedInfo,
    port: Port,
    vcpu: VcpuId,
) -> Wakeups {
    raise_then(shared, port, || raise_selector(view, port, vcpu))
}

/// The mask test of [`raise`], with `raise_selector` setting the selector
/// and upcall_pending of an unmasked port (it returns the vcpu to kick).
#[inline(always)]
fn raise_then(
    shared: &SharedInfo,
    port: Port,
    raise_selector: impl FnOnce() -> Option<VcpuId>,
) -> Wakeups {
    let (index, bit) = word_and_bit(port);
    let Some(mask) = shared.evtchn_mask.get(index) else {
        return Wakeups::default();
    };
    // 2. Not masked → selector, then upcall_pending.
    let kick_vcpu = if mask.load(Ordering::SeqCst) & bit != 0 {
        None
    } else {
        raise_selector()
    };
    // 3. Pollers are woken also for a masked port.
    Wakeups {
        kick_vcpu,
        poll_port: Some(port),
    }
}

pub(super) fn clear_pending(view: &dyn SharedInfoView, port: Port) {
    clear_pending_in(view.shared_info(), port);
}

/// [`clear_pending`] in a shared_info page the caller looked up.
#[inline]
pub(super) fn clear_pending_in(shared: &SharedInfo, port: Port) {
    let (index, bit) = word_and_bit(port);
    if let Some(pending) = shared.evtchn_pending.get(index) {
        pending.fetch_and(!bit, Ordering::SeqCst);
    }
}

/// The mask test of step 2 on its own, for a port whose pending bit was
/// just set (by [`test_and_set_pending`], which the caller follows with
/// `after_test_and_set`): whether `port` is masked. A port past the
/// bitmaps counts as masked.
#[inline(always)]
pub(super) fn is_masked_in(shared: &SharedInfo, port: Port) -> bool {
    let (index, bit) = word_and_bit(port);
    shared
        .evtchn_mask
        .get(index)
        .is_none_or(|mask| mask.load(Ordering::SeqCst) & bit != 0)
}

/// Xen's `evtchn_2l_unmask()`. The shared page is looked up once; the mask
/// and pending words share an index.
pub(super) fn unmask(view: &dyn SharedInfoView, port: Port, vcpu: VcpuId) -> Wakeups {
    unmask_in(view.shared_info(), port, vcpu, || view.vcpu_info(vcpu))
}

/// [`unmask`] in a shared_info page the caller looked up; `info` finds
/// `vcpu`'s vcpu_info, only when the port must be raised.
#[inline]
pub(super) fn unmask_in<'info>(
    shared: &SharedInfo,
    port: Port,
    vcpu: VcpuId,
    info: impl FnOnce() -> Option<&'info VcpuInfo>,
) -> Wakeups {
    let (index, bit) = word_and_bit(port);
    let (Some(mask), Some(pending)) = (
        shared.evtchn_mask.get(index),
        shared.evtchn_pending.get(index),
    ) else {
        return Wakeups::default();
    };
    // test-and-clear mask; only a port that *was* masked and is pending is
    // re-raised: unmasking an unmasked pending port does nothing.
    let was_masked = mask.fetch_and(!bit, Ordering::SeqCst) & bit != 0;
    crate::sync::after_test_and_set();
    if !was_masked || pending.load(Ordering::SeqCst) & bit == 0 {
        return Wakeups::default();
    }
    Wakeups {
        kick_vcpu: info().and_then(|info| raise_selector_in(info, port, vcpu)),
        poll_port: None,
    }
}

pub(super) fn is_pending(view: &dyn SharedInfoView, port: Port) -> bool {
    pending_word(view, port).is_some_and(|(pending, bit)| pending.load(Ordering::SeqCst) & bit != 0)
}

pub(super) fn is_masked(view: &dyn SharedInfoView, port: Port) -> bool {
    mask_word(view, port).is_none_or(|(mask, bit)| mask.load(Ordering::SeqCst) & bit != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::SharedInfo;

    fn bit(words: &[AtomicU64], port: u32) -> bool {
        words[(port / 64) as usize].load(Ordering::SeqCst) & (1 << (port % 64)) != 0
    }

    #[test]
    fn set_pending_reports_kick_and_poll_only_on_first_edge() {
        let page = SharedInfo::new();
        let first = set_pending(&page, Port(70), VcpuId(2));
        assert_eq!(first.kick_vcpu, Some(VcpuId(2)));
        assert_eq!(first.poll_port, Some(Port(70)));
        assert!(bit(&page.evtchn_pending, 70));
        assert_eq!(
            page.vcpu_info[2].evtchn_pending_sel.load(Ordering::SeqCst),
            0b10
        );
        assert_eq!(set_pending(&page, Port(70), VcpuId(2)), Wakeups::default());
    }

    #[test]
    fn masked_set_pending_still_asks_for_pollers() {
        let page = SharedInfo::new();
        page.evtchn_mask[0].store(1 << 5, Ordering::SeqCst);
        let wakeups = set_pending(&page, Port(5), VcpuId(0));
        assert_eq!(wakeups.kick_vcpu, None);
        assert_eq!(wakeups.poll_port, Some(Port(5)));
        assert_eq!(
            page.vcpu_info[0].evtchn_pending_sel.load(Ordering::SeqCst),
            0
        );
    }

    #[test]
    fn ports_past_the_bitmaps_are_masked_not_pending_and_never_written() {
        let page = SharedInfo::new();
        for port in [4096, 4097, 131_071, u32::MAX] {
            assert_eq!(
                set_pending(&page, Port(port), VcpuId(0)),
                Wakeups::default()
            );
            assert_eq!(unmask(&page, Port(port), VcpuId(0)), Wakeups::default());
            clear_pending(&page, Port(port));
            assert!(is_masked(&page, Port(port)));
            assert!(!is_pending(&page, Port(port)));
        }
        assert_eq!(page.wc_version.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn unmask_raises_only_a_masked_pending_port() {
        let page = SharedInfo::new();
        page.evtchn_mask[1].store(1, Ordering::SeqCst);
        page.evtchn_pending[1].store(1, Ordering::SeqCst);
        let wakeups = unmask(&page, Port(64), VcpuId(1));
        assert_eq!(wakeups.kick_vcpu, Some(VcpuId(1)));
        assert!(!bit(&page.evtchn_mask, 64));
        // Unmasking again (already unmasked) does nothing.
        page.vcpu_info[1]
            .evtchn_pending_sel
            .store(0, Ordering::SeqCst);
        page.vcpu_info[1]
            .evtchn_upcall_pending
            .store(0, Ordering::SeqCst);
        assert_eq!(unmask(&page, Port(64), VcpuId(1)), Wakeups::default());
    }

    #[test]
    fn vcpu_beyond_legacy_slots_gets_no_selector() {
        let page = SharedInfo::new();
        let wakeups = set_pending(&page, Port(3), VcpuId(40));
        assert_eq!(wakeups.kick_vcpu, None);
        assert!(bit(&page.evtchn_pending, 3));
    }
}
