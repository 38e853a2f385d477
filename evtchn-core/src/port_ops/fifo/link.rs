//! FIFO set_pending: linking an event onto a queue (spec §4.3; Xen:
//! `evtchn_fifo_set_pending()`, `evtchn_fifo_set_link()`).
//!
//! The order of steps is Xen 4.17's, and the retry counts are Xen's: the
//! target and last queues are locked in (vcpu, priority) order and checked
//! again, up to 3 times, after which the event is dropped with a warning;
//! the tail's LINK is set by compare-exchange only while the tail word is
//! still LINKED, and after one failure with BUSY set on the tail (so the
//! guest cannot unmask it meanwhile) at most 4 more times.
//!
//! Queue locks are taken by spinning, from guest and interrupt context
//! alike, so they are held with interrupts off ([`InterruptsOff`]).

use crate::abi::{
    EVTCHN_FIFO_BUSY, EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_LINKED, EVTCHN_FIFO_MASKED,
    EVTCHN_FIFO_PENDING, Port, VcpuId,
};
use crate::channel::Channel;
use crate::notify::{InterruptState, Notify};
use crate::shared::SharedInfoView;
use crate::sync::{AtomicU32, MutexGuard, Ordering};

use super::super::{Wakeups, mark_events_pending};
use super::{Fifo, QueueId};

/// Attempts at locking the target and last queues before the event is lost.
const QUEUE_LOCK_TRIES: u32 = 3;
/// Compare-exchange attempts on a BUSY tail word after the first failure.
const LINK_TRIES_WHILE_BUSY: u32 = 4;

/// Interrupts off on this pCPU for as long as the guard lives.
struct InterruptsOff<'a> {
    notify: &'a dyn Notify,
    previous: InterruptState,
}

impl<'a> InterruptsOff<'a> {
    fn new(notify: &'a dyn Notify) -> Self {
        let previous = notify.disable_interrupts();
        Self { notify, previous }
    }
}

impl Drop for InterruptsOff<'_> {
    fn drop(&mut self) {
        self.notify.restore_interrupts(self.previous);
    }
}

/// The target queue's lock and, if different, the last queue's.
enum QueueLocks<'a> {
    Same(MutexGuard<'a, u32>),
    Different {
        target: MutexGuard<'a, u32>,
        last: MutexGuard<'a, u32>,
    },
}

impl QueueLocks<'_> {
    fn target_tail(&mut self) -> &mut u32 {
        match self {
            Self::Same(tail) | Self::Different { target: tail, .. } => tail,
        }
    }

    fn last_tail(&mut self) -> &mut u32 {
        match self {
            Self::Same(tail) | Self::Different { last: tail, .. } => tail,
        }
    }
}

/// Outcome of one compare-exchange on a tail word (Xen: `try_set_link()`).
enum LinkAttempt {
    /// The tail is no longer LINKED: the queue is empty.
    TailUnlinked,
    /// LINK now names the new port.
    Linked,
    /// The guest changed the word meanwhile; `seen` is its new value.
    Raced { seen: u32 },
}

fn try_set_link(tail: &AtomicU32, expected: u32, port: Port) -> LinkAttempt {
    if expected & EVTCHN_FIFO_LINKED == 0 {
        return LinkAttempt::TailUnlinked;
    }
    // Writing LINK also clears BUSY.
    let new = (expected & !(EVTCHN_FIFO_BUSY | EVTCHN_FIFO_LINK_MASK)) | port.0;
    match tail.compare_exchange(expected, new, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => LinkAttempt::Linked,
        Err(seen) => LinkAttempt::Raced { seen },
    }
}

/// Set the tail word's LINK to `port` if the tail is still LINKED (Xen:
/// `evtchn_fifo_set_link()`). The guest may only set or clear M, clear P,
/// or clear L and LINK of a linked word; with BUSY set it must not clear M,
/// so the compare-exchange can fail only a bounded number of times. Returns
/// whether the port counts as linked behind the tail; like Xen, a tail that
/// keeps changing after the last try counts as linked (with a warning).
fn set_link(tail: &AtomicU32, port: Port) -> bool {
    match try_set_link(tail, tail.load(Ordering::SeqCst), port) {
        LinkAttempt::TailUnlinked => return false,
        LinkAttempt::Linked => return true,
        LinkAttempt::Raced { .. } => {}
    }
    // Keep the guest from unmasking the tail while we retry.
    tail.fetch_or(EVTCHN_FIFO_BUSY, Ordering::SeqCst);
    let mut expected = tail.load(Ordering::SeqCst);
    for _ in 0..LINK_TRIES_WHILE_BUSY {
        match try_set_link(tail, expected, port) {
            LinkAttempt::TailUnlinked => {
                tail.fetch_and(!EVTCHN_FIFO_BUSY, Ordering::SeqCst);
                return false;
            }
            LinkAttempt::Linked => return true,
            LinkAttempt::Raced { seen } => expected = seen,
        }
    }
    // Xen warns here; Sluice does not log on a path that may run in
    // interrupt context (crate doc).
    tail.fetch_and(!EVTCHN_FIFO_BUSY, Ordering::SeqCst);
    true
}

impl Fifo {
    /// Lock the target queue and the last queue in (vcpu, priority) order;
    /// `None` if either names a vcpu without FIFO state (a hypervisor bug:
    /// every vcpu has one).
    fn lock_queues(&self, target: QueueId, last: QueueId) -> Option<QueueLocks<'_>> {
        let queue = |id: QueueId| {
            self.vcpus
                .get(id.vcpu.0 as usize)?
                .queues
                .get(usize::from(id.priority))
        };
        let target_lock = queue(target)?;
        if target == last {
            return Some(QueueLocks::Same(target_lock.lock()));
        }
        let last_lock = queue(last)?;
        // Lock order: queue (lower vcpu, priority) -> queue (higher).
        Some(if target < last {
            let target = target_lock.lock();
            QueueLocks::Different {
                target,
                last: last_lock.lock(),
            }
        } else {
            let last = last_lock.lock();
            QueueLocks::Different {
                target: target_lock.lock(),
                last,
            }
        })
    }

    /// Mark `port` pending toward `vcpu` and link it onto queue (vcpu,
    /// channel priority) if it is unmasked and not linked yet (spec §4.3).
    ///
    /// * No event word yet: only the channel's sticky flag is set, for
    ///   expand_array to re-raise.
    /// * The queues keep changing (3 tries): the event is lost, as in Xen.
    /// * `vcpu` has no control block: the event is dropped, P untouched
    ///   (XSA-107; what Xen 4.17 shows a guest).
    /// * Masked: only P is set. Already linked: nothing moves; a priority
    ///   or vcpu change applies at the next linking.
    ///
    /// Kicks `vcpu` (returned) if the port went to the head of an empty
    /// queue whose ready bit was clear and `upcall_pending` was clear; asks
    /// for pollers if P was newly set.
    pub(crate) fn set_pending(
        &self,
        view: &dyn SharedInfoView,
        (port, channel): (Port, &Channel),
        vcpu: VcpuId,
        notify: &dyn Notify,
    ) -> Wakeups {
        let Some(word) = self.word(port) else {
            // The event-array page may come later: keep the event for it.
            channel.set_fifo_pending(true);
            return Wakeups::default();
        };
        let Some(vcpu_state) = self.vcpus.get(vcpu.0 as usize) else {
            return Wakeups::default();
        };
        let interrupts_off = InterruptsOff::new(notify);
        let mut locked = None;
        for _ in 0..QUEUE_LOCK_TRIES {
            let target = QueueId {
                vcpu,
                priority: channel.priority(),
            };
            let last = channel.last_queue();
            let Some(locks) = self.lock_queues(target, last) else {
                return Wakeups::default();
            };
            // Still the same queues once both are locked?
            if channel.priority() == target.priority && channel.last_queue() == last {
                locked = Some((target, last, locks));
                break;
            }
        }
        // Xen logs the two drops below; Sluice does not log on a path that
        // may run in interrupt context (crate doc).
        let Some((target, last, mut locks)) = locked else {
            return Wakeups::default();
        };
        let Some(block) = vcpu_state.control_block.get() else {
            return Wakeups::default();
        };
        let was_pending =
            word.fetch_or(EVTCHN_FIFO_PENDING, Ordering::SeqCst) & EVTCHN_FIFO_PENDING != 0;
        let mut is_linked_behind_tail = true;
        if word.load(Ordering::SeqCst) & EVTCHN_FIFO_MASKED == 0
            && word.fetch_or(EVTCHN_FIFO_LINKED, Ordering::SeqCst) & EVTCHN_FIFO_LINKED == 0
        {
            // This port was the last queue's tail: that queue is empty now,
            // and its stale tail must not be linked to by later events.
            let last_tail = locks.last_tail();
            if *last_tail == port.0 {
                *last_tail = 0;
            }
            if last != target {
                channel.set_last_queue(target);
            }
            let tail = locks.target_tail();
            is_linked_behind_tail = *tail != 0
                && self
                    .word(Port(*tail))
                    .is_some_and(|tail_word| set_link(tail_word, port));
            if !is_linked_behind_tail && let Some(head) = block.head(target.priority) {
                head.store(port.0, Ordering::SeqCst);
            }
            *tail = port.0;
        }
        drop(locks);
        drop(interrupts_off);
        let ready_bit = 1u32 << target.priority;
        let kick_vcpu = if !is_linked_behind_tail
            && block
                .ready()
                .is_some_and(|ready| ready.fetch_or(ready_bit, Ordering::SeqCst) & ready_bit == 0)
        {
            mark_events_pending(view, vcpu)
        } else {
            None
        };
        Wakeups {
            kick_vcpu,
            poll_port: (!was_pending).then_some(port),
        }
    }
}
