//! Host tests of the runtime's FIFO consumer (`src/fifo/consumer.rs`, spec
//! §4.5) and its side of the BUSY protocol (spec §4.1, §4.3, §4.4).
//!
//! The runtime itself only links into a guest image (it brings its own
//! panic handler and entry code), so this test compiles the consumer's
//! file on its own: that file uses nothing but `core` atomics. A small
//! simulated hypervisor below links events the way spec §4.3 says,
//! including the BUSY bit on a tail word whose LINK it cannot write.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed expectation is the test failing"
)]

#[path = "../src/fifo/consumer.rs"]
#[allow(
    dead_code,
    reason = "the test uses most of the consumer, not every constant"
)]
mod consumer;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use consumer::{
    BUSY, ControlBlock, LINK_MASK, LINKED, LocalHeads, MASKED, MaskCleared, PENDING, QUEUES,
    clear_mask, consume, set_mask,
};

/// An event array of `ports` words.
fn array(ports: usize) -> Vec<AtomicU32> {
    (0..ports).map(|_| AtomicU32::new(0)).collect()
}

fn heads() -> LocalHeads {
    [const { AtomicU32::new(0) }; QUEUES]
}

/// Links `ports` into queue `queue` by hand, as the hypervisor would have:
/// P and L on each, LINK to the next, `head[queue]` and the ready bit.
fn link_by_hand(block: &ControlBlock, words: &[AtomicU32], queue: usize, ports: &[u32]) {
    for (index, &port) in ports.iter().enumerate() {
        let next = ports.get(index + 1).copied().unwrap_or(0);
        words[port as usize].fetch_or(PENDING | LINKED | next, Ordering::SeqCst);
    }
    block.head[queue].store(ports[0], Ordering::SeqCst);
    block.ready.fetch_or(1 << queue, Ordering::SeqCst);
}

fn drain(block: &ControlBlock, heads: &LocalHeads, words: &[AtomicU32]) -> Vec<u32> {
    let mut seen = Vec::new();
    consume(
        block,
        heads,
        |port| words.get(port as usize),
        |port| seen.push(port),
    );
    seen
}

#[test]
fn consume_walks_queues_highest_priority_first_in_link_order() {
    let block = ControlBlock::new();
    let heads = heads();
    let words = array(64);
    link_by_hand(&block, &words, 9, &[5, 3, 8]);
    link_by_hand(&block, &words, 2, &[7, 6]);
    assert_eq!(drain(&block, &heads, &words), [7, 6, 5, 3, 8]);
    for port in [3, 5, 6, 7, 8] {
        assert_eq!(
            words[port].load(Ordering::SeqCst),
            0,
            "port {port} ends unlinked and not pending"
        );
    }
    assert_eq!(block.ready.load(Ordering::SeqCst), 0);
    assert!(heads.iter().all(|head| head.load(Ordering::SeqCst) == 0));
}

#[test]
fn consume_unlinks_masked_and_closed_words_without_handling_them() {
    let block = ControlBlock::new();
    let heads = heads();
    let words = array(16);
    link_by_hand(&block, &words, 7, &[1, 2, 3]);
    words[2].fetch_or(MASKED, Ordering::SeqCst);
    // Port 3 was closed while linked: the hypervisor cleared P only.
    words[3].fetch_and(!PENDING, Ordering::SeqCst);
    assert_eq!(drain(&block, &heads, &words), [1]);
    assert_eq!(
        words[2].load(Ordering::SeqCst),
        PENDING | MASKED,
        "a masked event keeps P for its unmask"
    );
    assert_eq!(
        words[3].load(Ordering::SeqCst),
        0,
        "the closed port is no longer LINKED"
    );
}

#[test]
fn unlinking_keeps_the_busy_bit() {
    let block = ControlBlock::new();
    let heads = heads();
    let words = array(16);
    link_by_hand(&block, &words, 0, &[4]);
    words[4].fetch_or(BUSY | MASKED, Ordering::SeqCst);
    assert_eq!(drain(&block, &heads, &words), Vec::<u32>::new());
    assert_eq!(
        words[4].load(Ordering::SeqCst),
        PENDING | MASKED | BUSY,
        "L and LINK cleared, B (the hypervisor's) kept"
    );
}

#[test]
fn consume_takes_a_higher_priority_event_raised_by_a_handler_next() {
    let block = ControlBlock::new();
    let heads = heads();
    let words = array(16);
    link_by_hand(&block, &words, 10, &[3, 5]);
    let mut seen = Vec::new();
    consume(
        &block,
        &heads,
        |port| words.get(port as usize),
        |port| {
            seen.push(port);
            if port == 3 {
                // Port 3's handler raises port 4 on queue 1; port 5 stays
                // queued behind port 3, remembered in the local head.
                words[4].fetch_or(PENDING | LINKED, Ordering::SeqCst);
                block.head[1].store(4, Ordering::SeqCst);
                block.ready.fetch_or(1 << 1, Ordering::SeqCst);
            }
        },
    );
    assert_eq!(seen, [3, 4, 5]);
}

#[test]
fn clear_mask_of_an_idle_word_clears_m_only() {
    let word = AtomicU32::new(MASKED | LINKED | 9);
    let unmasked = clear_mask(&word);
    assert_eq!(unmasked.outcome, MaskCleared::Cleared);
    assert_eq!(unmasked.busy_waits, 0);
    assert_eq!(word.load(Ordering::SeqCst), LINKED | 9);
    assert_eq!(clear_mask(&word).outcome, MaskCleared::WasClear);
}

#[test]
fn clear_mask_of_a_pending_word_leaves_m_for_evtchnop_unmask() {
    let word = AtomicU32::new(MASKED | PENDING);
    assert_eq!(clear_mask(&word).outcome, MaskCleared::Pending);
    assert_eq!(word.load(Ordering::SeqCst), MASKED | PENDING);
}

#[test]
fn set_mask_keeps_the_other_bits() {
    let word = AtomicU32::new(PENDING | LINKED | BUSY | 17);
    assert_eq!(set_mask(&word), PENDING | LINKED | BUSY | 17);
    assert_eq!(
        word.load(Ordering::SeqCst),
        PENDING | MASKED | LINKED | BUSY | 17
    );
}

#[test]
fn clear_mask_waits_while_the_hypervisor_holds_busy() {
    let word = Arc::new(AtomicU32::new(MASKED | LINKED | BUSY));
    let done = Arc::new(AtomicBool::new(false));
    let unmasker = {
        let (word, done) = (Arc::clone(&word), Arc::clone(&done));
        thread::spawn(move || {
            let unmasked = clear_mask(&word);
            done.store(true, Ordering::SeqCst);
            unmasked
        })
    };
    thread::sleep(Duration::from_millis(100));
    assert!(
        !done.load(Ordering::SeqCst),
        "clear_mask returned while BUSY was set"
    );
    assert_eq!(
        word.load(Ordering::SeqCst),
        MASKED | LINKED | BUSY,
        "M was cleared under BUSY"
    );
    // The hypervisor writes LINK and drops B in one exchange (spec §4.3).
    word.store(MASKED | LINKED | 12, Ordering::SeqCst);
    let unmasked = unmasker.join().unwrap();
    assert_eq!(unmasked.outcome, MaskCleared::Cleared);
    assert!(unmasked.busy_waits > 0, "{unmasked:?}");
    assert_eq!(
        word.load(Ordering::SeqCst),
        LINKED | 12,
        "LINK kept, M cleared"
    );
}

#[test]
fn clear_mask_that_waited_on_busy_sees_p_raised_meanwhile() {
    let word = Arc::new(AtomicU32::new(MASKED | LINKED | BUSY));
    let unmasker = {
        let word = Arc::clone(&word);
        thread::spawn(move || clear_mask(&word))
    };
    thread::sleep(Duration::from_millis(50));
    // Meanwhile the event became pending: the unmask is the hypervisor's.
    word.store(MASKED | LINKED | PENDING, Ordering::SeqCst);
    let unmasked = unmasker.join().unwrap();
    assert_eq!(unmasked.outcome, MaskCleared::Pending);
    assert_eq!(word.load(Ordering::SeqCst), MASKED | LINKED | PENDING);
}

/// A simulated hypervisor side of one vcpu's queues: spec §4.3 steps 4-6
/// and §4.4's unmask, serialised by one lock as the queue lock does.
struct Hypervisor<'a> {
    block: &'a ControlBlock,
    words: &'a [AtomicU32],
    /// Per-queue tail port.
    tails: Mutex<[u32; QUEUES]>,
    /// Tail words the LINK write found changed and took BUSY on.
    busy_taken: AtomicU32,
    /// Events lost after the bounded retries.
    dropped: AtomicU32,
}

impl Hypervisor<'_> {
    /// Writes LINK of a tail word only while it is LINKED; false if it is
    /// not (the guest unlinked it), or after the bounded retries.
    fn set_link(&self, tail: &AtomicU32, link: u32) -> bool {
        let try_link = |seen: &mut u32| -> Option<bool> {
            if *seen & LINKED == 0 {
                return Some(false);
            }
            let new = (*seen & !(BUSY | LINK_MASK)) | link;
            match tail.compare_exchange(*seen, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => Some(true),
                Err(now) => {
                    *seen = now;
                    None
                }
            }
        };
        let mut seen = tail.load(Ordering::SeqCst);
        if let Some(linked) = try_link(&mut seen) {
            return linked;
        }
        self.busy_taken.fetch_add(1, Ordering::SeqCst);
        tail.fetch_or(BUSY, Ordering::SeqCst);
        let mut seen = tail.load(Ordering::SeqCst);
        for _ in 0..4 {
            // Give the guest a chance to run into B.
            thread::yield_now();
            if let Some(linked) = try_link(&mut seen) {
                if !linked {
                    tail.fetch_and(!BUSY, Ordering::SeqCst);
                }
                return linked;
            }
        }
        self.dropped.fetch_add(1, Ordering::SeqCst);
        tail.fetch_and(!BUSY, Ordering::SeqCst);
        true
    }

    fn set_pending(&self, port: u32, queue: usize) {
        let word = &self.words[port as usize];
        let mut tails = self.tails.lock().unwrap();
        word.fetch_or(PENDING, Ordering::SeqCst);
        if word.load(Ordering::SeqCst) & MASKED != 0 {
            return;
        }
        if word.fetch_or(LINKED, Ordering::SeqCst) & LINKED != 0 {
            return;
        }
        // This port was the tail once and the consumer unlinked it since:
        // linking it behind itself would loop it (spec §4.3 step 5).
        if tails[queue] == port {
            tails[queue] = 0;
        }
        let tail = tails[queue];
        let linked = tail != 0 && self.set_link(&self.words[tail as usize], port);
        if !linked {
            self.block.head[queue].store(port, Ordering::SeqCst);
        }
        tails[queue] = port;
        drop(tails);
        if !linked {
            self.block.ready.fetch_or(1 << queue, Ordering::SeqCst);
        }
    }

    /// EVTCHNOP_unmask: clear M, link if pending.
    fn unmask(&self, port: u32, queue: usize) {
        let word = &self.words[port as usize];
        word.fetch_and(!MASKED, Ordering::SeqCst);
        if word.load(Ordering::SeqCst) & PENDING != 0 {
            self.set_pending(port, queue);
        }
    }
}

/// A sender thread raises events on ports 1..=63 round after round while
/// the consumer drains them and a third thread keeps masking and
/// unmasking the ports, so the sender's LINK writes keep meeting changed
/// tail words and take BUSY. No event is lost, none is handled twice
/// except where EVTCHNOP_unmask re-raised it, and B is never left set.
#[test]
fn concurrent_sender_masker_and_consumer_lose_nothing() {
    const PORTS: u32 = 63;
    const ROUNDS: u32 = 300;
    let block = ControlBlock::new();
    let heads = heads();
    let words = array(PORTS as usize + 1);
    let hypervisor = Hypervisor {
        block: &block,
        words: &words,
        tails: Mutex::new([0; QUEUES]),
        busy_taken: AtomicU32::new(0),
        dropped: AtomicU32::new(0),
    };
    let handled: Vec<AtomicU32> = (0..=PORTS).map(|_| AtomicU32::new(0)).collect();
    let raised: Vec<AtomicU32> = (0..=PORTS).map(|_| AtomicU32::new(0)).collect();
    let unmask_calls: Vec<AtomicU32> = (0..=PORTS).map(|_| AtomicU32::new(0)).collect();
    let sending = AtomicBool::new(true);
    let masking = AtomicBool::new(true);
    let busy_waits = AtomicU32::new(0);
    thread::scope(|scope| {
        scope.spawn(|| {
            for _ in 0..ROUNDS {
                for port in 1..=PORTS {
                    // Raise only when the previous event was handled, so
                    // the expected count is exact.
                    while words[port as usize].load(Ordering::SeqCst) & PENDING != 0 {
                        if hypervisor.dropped.load(Ordering::SeqCst) != 0 {
                            // A lost event stays pending forever: stop.
                            sending.store(false, Ordering::SeqCst);
                            return;
                        }
                        thread::yield_now();
                    }
                    raised[port as usize].fetch_add(1, Ordering::SeqCst);
                    hypervisor.set_pending(port, (port % 3) as usize);
                }
            }
            sending.store(false, Ordering::SeqCst);
        });
        scope.spawn(|| {
            let mut port = 1;
            while sending.load(Ordering::SeqCst) {
                let word = &words[port as usize];
                set_mask(word);
                let unmasked = clear_mask(word);
                busy_waits.fetch_add(unmasked.busy_waits, Ordering::SeqCst);
                if unmasked.outcome == MaskCleared::Pending {
                    unmask_calls[port as usize].fetch_add(1, Ordering::SeqCst);
                    hypervisor.unmask(port, (port % 3) as usize);
                }
                port = port % PORTS + 1;
            }
            masking.store(false, Ordering::SeqCst);
        });
        scope.spawn(|| {
            loop {
                // Once both others are done every event is linked, so a
                // walk that starts after that and finds nothing ends it.
                let finished = !sending.load(Ordering::SeqCst) && !masking.load(Ordering::SeqCst);
                let count = consume(
                    &block,
                    &heads,
                    |port| words.get(port as usize),
                    |port| {
                        handled[port as usize].fetch_add(1, Ordering::SeqCst);
                    },
                );
                if count == 0 {
                    if finished {
                        break;
                    }
                    thread::yield_now();
                }
            }
        });
    });
    let dropped = hypervisor.dropped.load(Ordering::SeqCst);
    assert_eq!(
        dropped, 0,
        "the hypervisor gave up linking {dropped} events"
    );
    for port in 1..=PORTS as usize {
        let (handled, raised) = (
            handled[port].load(Ordering::SeqCst),
            raised[port].load(Ordering::SeqCst),
        );
        // EVTCHNOP_unmask re-raises a pending event (spec §4.4): if the
        // consumer took the event between the unmask's M clear and its
        // set_pending, that event comes once more, as on Xen. Nothing
        // else may add one, and none may go missing.
        let spurious_limit = raised + unmask_calls[port].load(Ordering::SeqCst);
        assert!(
            (raised..=spurious_limit).contains(&handled),
            "port {port}: {handled} events handled, {raised} raised, at most {spurious_limit} allowed"
        );
        let word = words[port].load(Ordering::SeqCst);
        assert_eq!(
            word & (BUSY | PENDING | MASKED),
            0,
            "port {port}: {word:#x}"
        );
    }
    println!(
        "# BUSY taken {} times, unmask waited on it {} times",
        hypervisor.busy_taken.load(Ordering::SeqCst),
        busy_waits.load(Ordering::SeqCst)
    );
}
