//! The FIFO ABI's port ops and per-domain state (spec §4; Xen:
//! event_fifo.c).
//!
//! Port p's event word is word p%1024 of event-array page p/1024, a guest
//! frame added by EVTCHNOP_expand_array; each vcpu has sixteen queues (one
//! per priority) whose heads and ready bits live in the vcpu's control
//! block, a guest frame given by EVTCHNOP_init_control, and whose tails and
//! locks live here. Linking (set_pending) is in `link.rs`.
//!
//! Every access to a guest word is an atomic with SeqCst: the guest changes
//! the same words with locked instructions, Xen's guest bit operations are
//! full barriers, and the protocol's correctness (LINKED before LINK, P
//! before the ready bit, the ready bit before `upcall_pending`) rests on one
//! total order of those operations.
//!
//! Publication (Xen's `smp_wmb()` / `smp_rmb()` pairs): a control block is
//! published once, in a [`OnceSlot`], and its queue heads are *part of* it,
//! so no reader can find a block whose heads are not set (XSA-358). An
//! event-array page is published in its slot before the word count that
//! covers it grows (Release), and readers load the count first (Acquire).
//! Nothing is unpublished while the `Fifo` lives: reset and destruction
//! drop the whole state, under the domain's ABI lock as writer, after
//! switching the domain back to 2-level.

mod link;

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::abi::{
    EVTCHN_FIFO_LINKED, EVTCHN_FIFO_MASKED, EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES,
    EVTCHN_FIFO_MAX_QUEUES, EVTCHN_FIFO_PENDING, EVTCHN_FIFO_WORDS_PER_PAGE, Errno,
    EvtchnFifoControlBlock, Port, VcpuId,
};
use crate::channel::Channel;
use crate::notify::Notify;
use crate::shared::{GuestFrame, SharedInfoView};
use crate::sync::{AtomicU32, Mutex, OnceSlot, Ordering};

use super::Wakeups;

/// One queue: a vcpu and a priority. Ordered by (vcpu, priority), the
/// order in which two queue locks are taken (Xen orders by address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct QueueId {
    pub(crate) vcpu: VcpuId,
    pub(crate) priority: u8,
}

impl QueueId {
    /// The initial "last queue" of every channel: vcpu 0, priority 0, as
    /// Xen's zeroed `fifo_lastq`.
    pub(crate) const FIRST: Self = Self {
        vcpu: VcpuId(0),
        priority: 0,
    };

    /// The id as one word, so that a channel can store it atomically.
    pub(crate) const fn to_raw(self) -> u64 {
        ((self.vcpu.0 as u64) << 8) | self.priority as u64
    }

    /// The inverse of [`QueueId::to_raw`].
    pub(crate) const fn from_raw(raw: u64) -> Self {
        Self {
            vcpu: VcpuId((raw >> 8) as u32),
            priority: raw as u8,
        }
    }
}

/// A vcpu's control block: the mapped frame and where the block starts.
struct ControlBlock {
    frame: Box<dyn GuestFrame>,
    /// Word index of the block's first word in the frame.
    first_word: usize,
}

impl ControlBlock {
    /// The block at byte `offset` (checked by init_control: 8-aligned, at
    /// most 4096 − 72); -EINVAL if the frame is too short to hold it.
    fn new(frame: Box<dyn GuestFrame>, offset: u32) -> Result<Self, Errno> {
        let first_word = (offset / 4) as usize;
        if frame.words().len() < first_word + EvtchnFifoControlBlock::WORDS {
            return Err(Errno::EINVAL);
        }
        Ok(Self { frame, first_word })
    }

    fn word(&self, index: usize) -> Option<&AtomicU32> {
        self.frame.words().get(self.first_word + index)
    }

    /// `ready`.
    fn ready(&self) -> Option<&AtomicU32> {
        self.word(EvtchnFifoControlBlock::READY_WORD)
    }

    /// `head[priority]`.
    fn head(&self, priority: u8) -> Option<&AtomicU32> {
        self.word(EvtchnFifoControlBlock::HEAD_WORD + usize::from(priority))
    }
}

/// A vcpu's FIFO state (Xen: `struct evtchn_fifo_vcpu`).
struct FifoVcpu {
    /// Published once by init_control for this vcpu.
    control_block: OnceSlot<ControlBlock>,
    /// Each queue's lock and tail port (0 = none), by priority.
    queues: [Mutex<u32>; EVTCHN_FIFO_MAX_QUEUES],
}

/// A domain's FIFO state (Xen: `struct evtchn_fifo_domain` plus every
/// vcpu's `struct evtchn_fifo_vcpu`). Created for all vcpus at once, so a
/// vcpu without a control block still has queues (XSA-107).
pub(crate) struct Fifo {
    vcpus: Box<[FifoVcpu]>,
    /// Event-array pages in the order added.
    event_array: Box<[OnceSlot<Box<dyn GuestFrame>>]>,
    /// Ports with an event word (Xen: `num_evtchns`): 1024 per page.
    event_words: AtomicU32,
}

impl Fifo {
    /// Empty FIFO state for `vcpus` vcpus: no control block, no event-array
    /// page. -ENOMEM.
    pub(crate) fn new(vcpus: u32) -> Result<Box<Self>, Errno> {
        let mut vcpu_states = Vec::new();
        vcpu_states
            .try_reserve_exact(vcpus as usize)
            .map_err(|_| Errno::ENOMEM)?;
        vcpu_states.extend((0..vcpus).map(|_| FifoVcpu {
            control_block: OnceSlot::new(),
            queues: core::array::from_fn(|_| Mutex::new(0)),
        }));
        let mut pages = Vec::new();
        pages
            .try_reserve_exact(EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES as usize)
            .map_err(|_| Errno::ENOMEM)?;
        pages.extend((0..EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES).map(|_| OnceSlot::new()));
        Ok(Box::new(Self {
            vcpus: vcpu_states.into_boxed_slice(),
            event_array: pages.into_boxed_slice(),
            event_words: AtomicU32::new(0),
        }))
    }

    /// Whether `vcpu` has a control block.
    pub(crate) fn has_control_block(&self, vcpu: VcpuId) -> bool {
        self.vcpus
            .get(vcpu.0 as usize)
            .is_some_and(|state| state.control_block.get().is_some())
    }

    /// Publish `vcpu`'s control block at byte `offset` of `frame` (Xen:
    /// `map_control_block()`). -EINVAL if it already has one (the caller
    /// checked, under the event lock) or the frame is too short; -ENOENT for
    /// no such vcpu. On error the frame is dropped (unmapped).
    pub(crate) fn install_control_block(
        &self,
        vcpu: VcpuId,
        frame: Box<dyn GuestFrame>,
        offset: u32,
    ) -> Result<(), Errno> {
        let state = self.vcpus.get(vcpu.0 as usize).ok_or(Errno::ENOENT)?;
        if state.control_block.get().is_some() {
            return Err(Errno::EINVAL);
        }
        let block = ControlBlock::new(frame, offset)?;
        // The heads are words of the block itself: publishing the block
        // publishes them (XSA-358). The event lock serialises installers.
        state.control_block.call_once(|| block);
        Ok(())
    }

    /// Ports that have an event word. Acquire: pairs with the Release in
    /// [`Fifo::add_page`], so every page below the count is visible.
    pub(crate) fn event_words(&self) -> u32 {
        self.event_words.load(Ordering::Acquire)
    }

    /// Whether another event-array page fits (-ENOSPC past 128 pages).
    pub(crate) fn check_room(&self) -> Result<(), Errno> {
        if self.event_words() / EVTCHN_FIFO_WORDS_PER_PAGE >= EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES {
            return Err(Errno::ENOSPC);
        }
        Ok(())
    }

    /// Add the next event-array page (Xen: `add_page_to_event_array()`,
    /// without the re-raise, which the caller does). Returns the new ports
    /// `first..end`. The caller holds the event lock, which serialises
    /// adders.
    pub(crate) fn add_page(&self, frame: Box<dyn GuestFrame>) -> Result<(u32, u32), Errno> {
        self.check_room()?;
        let first = self.event_words();
        let slot = self
            .event_array
            .get((first / EVTCHN_FIFO_WORDS_PER_PAGE) as usize)
            .ok_or(Errno::ENOSPC)?;
        if slot.get().is_some() {
            return Err(Errno::EINVAL);
        }
        slot.call_once(|| frame);
        let end = first + EVTCHN_FIFO_WORDS_PER_PAGE;
        // Release: the page is visible before the count that covers it;
        // pairs with the Acquire in `event_words`.
        self.event_words.store(end, Ordering::Release);
        Ok((first, end))
    }

    /// Port `port`'s event word, if its page exists (Xen:
    /// `evtchn_fifo_word_from_port()`).
    pub(crate) fn word(&self, port: Port) -> Option<&AtomicU32> {
        if port.0 >= self.event_words() {
            return None;
        }
        let page = self
            .event_array
            .get((port.0 / EVTCHN_FIFO_WORDS_PER_PAGE) as usize)?
            .get()?;
        let index = (port.0 % EVTCHN_FIFO_WORDS_PER_PAGE) as usize;
        page.words().get(index)
    }

    /// Clear P only; a linked word stays linked (Xen:
    /// `evtchn_fifo_clear_pending()`).
    pub(crate) fn clear_pending(&self, port: Port) {
        if let Some(word) = self.word(port) {
            word.fetch_and(!EVTCHN_FIFO_PENDING, Ordering::SeqCst);
        }
    }

    /// Clear M, then, if P is set, set the event pending again toward
    /// `vcpu`, which links it (Xen: `evtchn_fifo_unmask()`).
    pub(crate) fn unmask(
        &self,
        view: &dyn SharedInfoView,
        (port, channel): (Port, &Channel),
        vcpu: VcpuId,
        notify: &dyn Notify,
    ) -> Wakeups {
        let Some(word) = self.word(port) else {
            return Wakeups::default();
        };
        word.fetch_and(!EVTCHN_FIFO_MASKED, Ordering::SeqCst);
        if word.load(Ordering::SeqCst) & EVTCHN_FIFO_PENDING == 0 {
            return Wakeups::default();
        }
        self.set_pending(view, (port, channel), vcpu, notify)
    }

    /// P (false without an event word).
    pub(crate) fn is_pending(&self, port: Port) -> bool {
        self.word(port)
            .is_some_and(|word| word.load(Ordering::SeqCst) & EVTCHN_FIFO_PENDING != 0)
    }

    /// M, or no event word.
    pub(crate) fn is_masked(&self, port: Port) -> bool {
        self.word(port)
            .is_none_or(|word| word.load(Ordering::SeqCst) & EVTCHN_FIFO_MASKED != 0)
    }

    /// L: the port is still on a queue.
    pub(crate) fn is_busy(&self, port: Port) -> bool {
        self.word(port)
            .is_some_and(|word| word.load(Ordering::SeqCst) & EVTCHN_FIFO_LINKED != 0)
    }

    /// The raw event word, for the debug dump.
    pub(crate) fn raw_word(&self, port: Port) -> Option<u32> {
        self.word(port).map(|word| word.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::sync::Arc;
    use alloc::vec::Vec;

    struct Words(Arc<Vec<AtomicU32>>);

    impl GuestFrame for Words {
        fn words(&self) -> &[AtomicU32] {
            &self.0
        }
    }

    fn frame(words: usize) -> (Arc<Vec<AtomicU32>>, Box<dyn GuestFrame>) {
        let page = Arc::new((0..words).map(|_| AtomicU32::new(0)).collect::<Vec<_>>());
        (page.clone(), Box::new(Words(page)))
    }

    #[test]
    fn queue_id_survives_its_raw_form() {
        for queue in [
            QueueId::FIRST,
            QueueId {
                vcpu: VcpuId(4095),
                priority: 15,
            },
            QueueId {
                vcpu: VcpuId(u32::MAX >> 8),
                priority: 7,
            },
        ] {
            assert_eq!(QueueId::from_raw(queue.to_raw()), queue);
        }
        // Lock order: by vcpu first, then priority.
        let low = QueueId {
            vcpu: VcpuId(0),
            priority: 15,
        };
        let high = QueueId {
            vcpu: VcpuId(1),
            priority: 0,
        };
        assert!(low < high);
    }

    #[test]
    fn control_block_words_follow_the_abi_layout() {
        let fifo = Fifo::new(1).unwrap();
        let (page, block) = frame(1024);
        fifo.install_control_block(VcpuId(0), block, 4024).unwrap();
        let installed = fifo.vcpus[0].control_block.get().unwrap();
        installed.ready().unwrap().store(0xaa, Ordering::SeqCst);
        installed.head(15).unwrap().store(0xbb, Ordering::SeqCst);
        assert_eq!(page[4024 / 4].load(Ordering::SeqCst), 0xaa);
        assert_eq!(page[(4024 + 8) / 4 + 15].load(Ordering::SeqCst), 0xbb);
        assert_eq!(
            (4024 + 8) / 4 + 15,
            1023,
            "head[15] is the page's last word"
        );
    }

    #[test]
    fn a_frame_too_short_for_the_block_is_refused() {
        let fifo = Fifo::new(1).unwrap();
        let (_, short) = frame(17);
        assert_eq!(
            fifo.install_control_block(VcpuId(0), short, 0).err(),
            Some(Errno::EINVAL)
        );
        assert!(!fifo.has_control_block(VcpuId(0)));
        let (_, block) = frame(18);
        assert!(fifo.install_control_block(VcpuId(0), block, 0).is_ok());
        assert_eq!(
            fifo.install_control_block(VcpuId(1), frame(18).1, 0).err(),
            Some(Errno::ENOENT)
        );
    }

    #[test]
    fn event_words_grow_a_page_at_a_time_up_to_128_pages() {
        let fifo = Fifo::new(1).unwrap();
        assert!(fifo.word(Port(0)).is_none());
        for page in 0..EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES {
            let (first, end) = fifo.add_page(frame(1024).1).unwrap();
            assert_eq!((first, end), (page * 1024, page * 1024 + 1024));
        }
        assert_eq!(fifo.add_page(frame(1024).1).err(), Some(Errno::ENOSPC));
        assert!(fifo.word(Port(131_071)).is_some());
        assert!(fifo.word(Port(131_072)).is_none());
        assert!(fifo.is_masked(Port(u32::MAX)));
        assert!(!fifo.is_pending(Port(u32::MAX)));
        assert!(!fifo.is_busy(Port(u32::MAX)));
    }
}
