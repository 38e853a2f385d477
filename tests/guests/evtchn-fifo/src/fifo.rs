//! The FIFO ABI's guest-visible structures (spec §4.1), declared here with
//! their sizes asserted, and a guest-side consumer that walks the queues
//! the way spec §4.5 describes (with the vcpu masked, so no upcall runs).

use core::cell::UnsafeCell;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicU32, Ordering};

/// Event word bit: pending.
pub const PENDING: u32 = 1 << 31;
/// Event word bit: masked.
pub const MASKED: u32 = 1 << 30;
/// Event word bit: on a queue.
pub const LINKED: u32 = 1 << 29;
// Bit 28 (BUSY: the hypervisor is writing LINK) matters only to a guest
// that clears M itself; this one leaves M to EVTCHNOP_unmask.
/// Event word LINK field.
pub const LINK_MASK: u32 = 0x1_ffff;
/// Priorities (queues) per vcpu.
pub const QUEUES: usize = 16;
/// Default priority of a newly bound port.
pub const DEFAULT_PRIORITY: u32 = 7;
/// Event words per event-array page.
pub const WORDS_PER_PAGE: usize = 1024;

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
const _: () = assert!(offset_of!(ControlBlock, head) == 8);

/// A page of the image handed to the hypervisor (control block or event
/// array); only ever accessed through atomics once handed over.
#[repr(C, align(4096))]
pub struct GuestPage(UnsafeCell<[u32; WORDS_PER_PAGE]>);

// SAFETY: the page is only read and written through `AtomicU32` views.
unsafe impl Sync for GuestPage {}

impl GuestPage {
    /// A zeroed page.
    pub const fn new() -> GuestPage {
        GuestPage(UnsafeCell::new([0; WORDS_PER_PAGE]))
    }

    /// The page's virtual address.
    pub fn address(&self) -> u64 {
        self.0.get() as u64
    }

    /// Word `index` of the page as an atomic.
    pub fn word(&self, index: usize) -> Option<&AtomicU32> {
        if index >= WORDS_PER_PAGE {
            return None;
        }
        let pointer = self.0.get().cast::<AtomicU32>().wrapping_add(index);
        // SAFETY: `index` is inside the page, so `pointer` is in bounds;
        // AtomicU32 has the layout of u32 and the page is 4-byte aligned;
        // all access is atomic.
        Some(unsafe { &*pointer })
    }

    /// The control block at byte `offset` (8-aligned, fits in the page).
    pub fn control_block(&self, offset: usize) -> Option<&ControlBlock> {
        if !offset.is_multiple_of(8) || offset + size_of::<ControlBlock>() > 4096 {
            return None;
        }
        let pointer = self
            .0
            .get()
            .cast::<u8>()
            .wrapping_add(offset)
            .cast::<ControlBlock>();
        // SAFETY: the block lies inside the page at an 8-aligned offset and
        // consists of atomics; the page lives for the guest's life.
        Some(unsafe { &*pointer })
    }
}

impl Default for GuestPage {
    fn default() -> GuestPage {
        GuestPage::new()
    }
}

/// Unlinks the head event of queue `queue` (spec §4.5): clear L and LINK
/// atomically, returning the old word.
fn unlink(word: &AtomicU32) -> u32 {
    let mut old = word.load(Ordering::SeqCst);
    loop {
        let new = old & !(LINKED | LINK_MASK);
        match word.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => return old,
            Err(seen) => old = seen,
        }
    }
}

/// Drains every ready queue of `block` in priority order, clearing P of each
/// pending, unmasked event it hands to `found`; returns the ports in the
/// order found. Ports whose P is clear (closed while linked) are unlinked
/// but not reported.
pub fn drain(block: &ControlBlock, words: &GuestPage, found: &mut [u32; 32]) -> usize {
    let mut count = 0;
    let mut ready = block.ready.swap(0, Ordering::SeqCst);
    while ready != 0 {
        let queue = ready.trailing_zeros() as usize;
        let Some(head) = block.head.get(queue) else {
            break;
        };
        let mut port = head.load(Ordering::SeqCst);
        // Xen writes head[q] only when the queue was empty; this consumer
        // always empties a queue, so it restarts from head[q] every time.
        let mut steps = 0;
        while port != 0 && steps < 4096 {
            steps += 1;
            let Some(word) = words.word(port as usize) else {
                break;
            };
            let old = unlink(word);
            if old & PENDING != 0 && old & MASKED == 0 {
                word.fetch_and(!PENDING, Ordering::SeqCst);
                if let Some(slot) = found.get_mut(count) {
                    *slot = port;
                    count += 1;
                }
            }
            port = old & LINK_MASK;
        }
        ready &= !(1 << queue);
        ready |= block.ready.swap(0, Ordering::SeqCst);
    }
    count
}
