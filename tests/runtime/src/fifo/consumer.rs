//! The guest's half of the FIFO queue protocol over plain atomics: the
//! event word and control block layouts (spec §4.1), the queue walk of
//! spec §4.5 and the mask, unmask and BUSY rules of spec §4.1 and §4.4.
//!
//! Nothing here makes a hypercall or touches a static: the caller passes
//! the control block, its local queue heads and a way to find an event
//! word, and is told when the hypervisor must finish an unmask. That keeps
//! the file free of anything x86- or guest-specific, so the runtime's host
//! test (`tests/runtime/tests/fifo_consumer.rs`) compiles it on its own and
//! drives it against a simulated hypervisor.
//!
//! BUSY (bit 28) is set by the hypervisor on a queue's tail word while it
//! retries writing that word's LINK (spec §4.3 step 5): a guest that kept
//! changing the word (masking and unmasking it) would otherwise make every
//! attempt fail and the event would be lost. The guest's duties:
//!
//! * never clear M while B is set: [`clear_mask`] only exchanges from a
//!   word whose B is clear, so it waits until the hypervisor lets go;
//! * never clear M of a pending word itself: the hypervisor must link it,
//!   which `EVTCHNOP_unmask` does ([`MaskCleared::Pending`]);
//! * change the word only by atomic read-modify-writes that keep every bit
//!   they are not about: the unlink clears L and LINK in one exchange and
//!   leaves B (and P, M) alone; P is cleared with an atomic and-not.

use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU32, Ordering};

/// Event word bit: pending.
pub const PENDING: u32 = 1 << 31;
/// Event word bit: masked.
pub const MASKED: u32 = 1 << 30;
/// Event word bit: on a queue.
pub const LINKED: u32 = 1 << 29;
/// Event word bit: the hypervisor is writing LINK (the guest must not clear
/// M meanwhile).
pub const BUSY: u32 = 1 << 28;
/// Event word LINK field.
pub const LINK_MASK: u32 = 0x1_ffff;
/// Priorities (queues) per vcpu; 0 is the highest.
pub const QUEUES: usize = 16;

/// struct evtchn_fifo_control_block (72 bytes).
#[repr(C)]
pub struct ControlBlock {
    /// Bit q set by the hypervisor when queue q becomes non-empty.
    pub ready: AtomicU32,
    /// Reserved.
    pub _rsvd: AtomicU32,
    /// First port of each queue.
    pub head: [AtomicU32; QUEUES],
}
const _: () = assert!(size_of::<ControlBlock>() == 72);
const _: () = assert!(offset_of!(ControlBlock, ready) == 0);
const _: () = assert!(offset_of!(ControlBlock, head) == 8);

impl ControlBlock {
    /// An empty control block (as a zeroed guest page holds one).
    pub const fn new() -> ControlBlock {
        ControlBlock {
            ready: AtomicU32::new(0),
            _rsvd: AtomicU32::new(0),
            head: [const { AtomicU32::new(0) }; QUEUES],
        }
    }
}

impl Default for ControlBlock {
    fn default() -> ControlBlock {
        ControlBlock::new()
    }
}

/// One vcpu's local queue heads (spec §4.5): where the consumer resumes
/// each queue. 0 means "start from `head[q]`".
pub type LocalHeads = [AtomicU32; QUEUES];

/// Clears LINKED and LINK of `word` in one exchange and returns the word it
/// replaced. Every other bit (P, M, B) stays as it is: the hypervisor may
/// set B or P at any moment, and the exchange simply retries.
pub fn unlink(word: &AtomicU32) -> u32 {
    let mut old = word.load(Ordering::SeqCst);
    loop {
        let new = old & !(LINKED | LINK_MASK);
        // SeqCst pairs with the hypervisor's locked operations on the same
        // word (its LINK cmpxchg and B/P set-bits).
        match word.compare_exchange_weak(old, new, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return old,
            Err(seen) => old = seen,
        }
    }
}

/// Walks `block`'s ready queues as spec §4.5 says and returns the events
/// handed to `handle`.
///
/// `ready` is taken with an exchange; while a queue is ready the highest
/// priority one (lowest bit) gives up one event: its local head, or
/// `head[q]` when that is 0, is unlinked ([`unlink`]); its old LINK becomes
/// the local head, and a LINK of 0 ends the queue for now. A word that was
/// pending and not masked has P cleared and goes to `handle`. Then `ready`
/// is merged again, so an event of a higher priority raised meanwhile
/// (even by `handle`) comes next.
///
/// A masked word is unlinked but keeps P: unmasking it later makes the
/// hypervisor link it again. A word with P clear was closed while linked;
/// unlinking it lets its port be allocated again.
///
/// `word` maps a port to its event word; a port it does not know (beyond
/// the pages handed over) ends that queue's walk.
pub fn consume<'words>(
    block: &ControlBlock,
    local_heads: &LocalHeads,
    word: impl Fn(u32) -> Option<&'words AtomicU32>,
    mut handle: impl FnMut(u32),
) -> u64 {
    let mut handled = 0;
    let mut ready = block.ready.swap(0, Ordering::SeqCst);
    while ready != 0 {
        let queue = ready.trailing_zeros() as usize;
        let (Some(local), Some(shared_head)) = (local_heads.get(queue), block.head.get(queue))
        else {
            break;
        };
        let mut port = local.load(Ordering::SeqCst);
        if port == 0 {
            // The hypervisor stores head[q] before it sets the ready bit
            // (SeqCst: the swap of `ready` above is the pair).
            port = shared_head.load(Ordering::SeqCst);
        }
        let Some(event) = word(port).filter(|_| port != 0) else {
            // Nothing to walk (or a port beyond the pages handed over): the
            // queue is done as far as this consumer can tell.
            local.store(0, Ordering::SeqCst);
            ready &= !(1 << queue);
            ready |= block.ready.swap(0, Ordering::SeqCst);
            continue;
        };
        let old = unlink(event);
        let next = old & LINK_MASK;
        if next == 0 {
            ready &= !(1 << queue);
        }
        local.store(next, Ordering::SeqCst);
        if old & PENDING != 0 && old & MASKED == 0 {
            event.fetch_and(!PENDING, Ordering::SeqCst);
            handled += 1;
            handle(port);
        }
        ready |= block.ready.swap(0, Ordering::SeqCst);
    }
    handled
}

/// Sets M of `word` (an atomic or: LINK, B and P stay); returns the old word.
pub fn set_mask(word: &AtomicU32) -> u32 {
    word.fetch_or(MASKED, Ordering::SeqCst)
}

/// What [`clear_mask`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskCleared {
    /// M was clear already; nothing changed.
    WasClear,
    /// This call cleared M.
    Cleared,
    /// The word is pending, so M stays for the hypervisor to clear: the
    /// caller issues EVTCHNOP_unmask, which clears M and links the event.
    Pending,
}

/// The outcome of [`clear_mask`] and how often it found B set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unmasked {
    /// What happened to M.
    pub outcome: MaskCleared,
    /// Failed exchanges that saw B set (the hypervisor was linking behind
    /// this word), each followed by a spin.
    pub busy_waits: u32,
}

/// The guest's own unmask (spec §4.4): clears M unless P is set, and only
/// ever from a word whose B is clear.
///
/// The exchange expects B clear, so while the hypervisor holds B the
/// exchange fails and the loop spins until B is gone; the hypervisor holds
/// it only for a few bounded retries of one set_pending (spec §4.3). A
/// pending word is left masked for EVTCHNOP_unmask ([`MaskCleared::Pending`]):
/// clearing M here would leave a pending, unmasked event on no queue.
pub fn clear_mask(word: &AtomicU32) -> Unmasked {
    let mut busy_waits = 0;
    let mut seen = word.load(Ordering::SeqCst);
    loop {
        if seen & MASKED == 0 {
            return Unmasked {
                outcome: MaskCleared::WasClear,
                busy_waits,
            };
        }
        if seen & PENDING != 0 {
            return Unmasked {
                outcome: MaskCleared::Pending,
                busy_waits,
            };
        }
        let expected = seen & !BUSY;
        // SeqCst pairs with the hypervisor's set-bit of B and its LINK
        // cmpxchg on the same word.
        match word.compare_exchange_weak(
            expected,
            expected & !MASKED,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => {
                return Unmasked {
                    outcome: MaskCleared::Cleared,
                    busy_waits,
                };
            }
            Err(now) => {
                if now & BUSY != 0 {
                    busy_waits = busy_waits.saturating_add(1);
                    core::hint::spin_loop();
                }
                seen = now;
            }
        }
    }
}
