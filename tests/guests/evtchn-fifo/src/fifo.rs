//! A guest-side consumer that walks the FIFO queues the way spec §4.5
//! describes, with the vcpu masked so no upcall runs. The guest-visible
//! structures themselves (spec §4.1, sizes asserted) and the unlink step
//! are the runtime's.

use core::sync::atomic::Ordering;

use sluice_guest::fifo::consumer::unlink;
pub use sluice_guest::fifo::{
    ControlBlock, DEFAULT_PRIORITY, GuestPage, LINK_MASK, LINKED, MASKED, PENDING,
};

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
