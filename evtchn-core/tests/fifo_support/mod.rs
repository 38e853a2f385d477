//! Shared fakes for the FIFO tests: guest frames on the heap (a
//! `SharedInfoView` that maps them), a recording `Notify`, and a guest-side
//! consumer that drains the queues as spec §4.5 describes.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers: a panic here is a failed test"
)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use evtchn_core::abi::{
    EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_LINKED, EVTCHN_FIFO_MASKED, EVTCHN_FIFO_PENDING,
    EvtchnInitControl, SharedInfo,
};
use evtchn_core::{
    DomId, DomainConfig, Domains, Errno, GuestFrame, InterruptState, NoPirqs, Notify,
    SharedInfoView, VcpuId, WORDS_PER_FRAME,
};

pub const P: u32 = EVTCHN_FIFO_PENDING;
pub const M: u32 = EVTCHN_FIFO_MASKED;
pub const L: u32 = EVTCHN_FIFO_LINKED;
pub const LINK: u32 = EVTCHN_FIFO_LINK_MASK;

/// One guest frame: 1024 words.
pub struct Page {
    pub words: Vec<AtomicU32>,
}

impl Page {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            words: (0..WORDS_PER_FRAME).map(|_| AtomicU32::new(0)).collect(),
        })
    }
}

/// A mapping of a [`Page`]: holds a reference until dropped.
struct Mapping(Arc<Page>);

impl GuestFrame for Mapping {
    fn words(&self) -> &[AtomicU32] {
        &self.0.words
    }
}

/// A domain's memory: its shared_info page and the frames it owns.
pub struct GuestMemory {
    pub shared: SharedInfo,
    frames: BTreeMap<u64, Arc<Page>>,
    live: Arc<AtomicUsize>,
}

/// Frames a test domain owns: control pages at 0x100 + vcpu, event-array
/// pages at 0x200 + index.
pub const CONTROL_GFN: u64 = 0x100;
pub const EVENT_GFN: u64 = 0x200;
/// A frame no domain owns.
pub const FOREIGN_GFN: u64 = 0xdead_0000;

impl GuestMemory {
    pub fn new(vcpus: u32, event_pages: u32) -> Self {
        let mut frames = BTreeMap::new();
        for vcpu in 0..u64::from(vcpus) {
            frames.insert(CONTROL_GFN + vcpu, Page::new());
        }
        for index in 0..u64::from(event_pages) {
            frames.insert(EVENT_GFN + index, Page::new());
        }
        Self {
            shared: SharedInfo::new(),
            frames,
            live: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn page(&self, gfn: u64) -> &Page {
        &self.frames[&gfn]
    }

    /// Mappings currently held by evtchn-core.
    pub fn mapped(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }
}

struct CountedMapping {
    mapping: Mapping,
    live: Arc<AtomicUsize>,
}

impl GuestFrame for CountedMapping {
    fn words(&self) -> &[AtomicU32] {
        self.mapping.words()
    }
}

impl Drop for CountedMapping {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SharedInfoView for GuestMemory {
    fn shared_info(&self) -> &SharedInfo {
        &self.shared
    }

    fn map_frame(&self, gfn: u64) -> Result<Box<dyn GuestFrame>, Errno> {
        let page = self.frames.get(&gfn).ok_or(Errno::EINVAL)?;
        self.live.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(CountedMapping {
            mapping: Mapping(page.clone()),
            live: self.live.clone(),
        }))
    }
}

/// Records kicks and poll wake-ups; checks the interrupt bracket balances.
#[derive(Default)]
pub struct FifoNotify {
    pub kicks: Mutex<Vec<(DomId, VcpuId)>>,
    pub poll_wakes: Mutex<Vec<(DomId, VcpuId)>>,
    pub interrupts_off: AtomicUsize,
    pub interrupts_on: AtomicUsize,
    /// `should_preempt` answers true on every n-th question (0: never).
    pub preempt_period: AtomicUsize,
    pub preempt_questions: AtomicUsize,
}

impl Notify for FifoNotify {
    fn kick_vcpu(&self, domain: DomId, vcpu: VcpuId) {
        self.kicks.lock().unwrap().push((domain, vcpu));
    }
    fn wake_poller(&self, domain: DomId, vcpu: VcpuId) {
        self.poll_wakes.lock().unwrap().push((domain, vcpu));
    }
    fn should_preempt(&self) -> bool {
        let period = self.preempt_period.load(Ordering::SeqCst);
        period != 0
            && (self.preempt_questions.fetch_add(1, Ordering::SeqCst) + 1).is_multiple_of(period)
    }
    fn disable_interrupts(&self) -> InterruptState {
        self.interrupts_off.fetch_add(1, Ordering::SeqCst);
        InterruptState::Enabled
    }
    fn restore_interrupts(&self, previous: InterruptState) {
        assert_eq!(previous, InterruptState::Enabled);
        self.interrupts_on.fetch_add(1, Ordering::SeqCst);
    }
}

pub type FifoDomains = Domains<FifoNotify, NoPirqs>;

pub const DOM1: DomId = DomId(1);
pub const DOM2: DomId = DomId(2);

/// A registry with dom1 (and optionally more domains) on heap memory.
pub struct FifoWorld {
    pub domains: FifoDomains,
    pub memory: BTreeMap<DomId, Arc<GuestMemory>>,
}

impl FifoWorld {
    /// dom1 with `vcpus` vcpus, 4 event-array frames, max port 1023.
    pub fn new(vcpus: u32) -> Self {
        let mut world = Self::empty();
        world.add(DomainConfig::new(DOM1, vcpus), 4);
        world
    }

    pub fn empty() -> Self {
        Self {
            domains: Domains::new(FifoNotify::default(), NoPirqs),
            memory: BTreeMap::new(),
        }
    }

    pub fn add(&mut self, config: DomainConfig, event_pages: u32) {
        let memory = Arc::new(GuestMemory::new(config.vcpus, event_pages));
        let view: Arc<dyn SharedInfoView> = memory.clone();
        self.domains.create_domain(config, view).unwrap();
        self.memory.insert(config.domid, memory);
    }

    pub fn memory(&self, domid: DomId) -> &GuestMemory {
        &self.memory[&domid]
    }

    /// init_control for `vcpu` with its own control frame at offset 0.
    pub fn init_control(&self, domid: DomId, vcpu: u32) -> Result<u8, Errno> {
        self.init_control_at(domid, vcpu, CONTROL_GFN + u64::from(vcpu), 0)
    }

    pub fn init_control_at(
        &self,
        domid: DomId,
        vcpu: u32,
        gfn: u64,
        offset: u32,
    ) -> Result<u8, Errno> {
        self.domains
            .init_control(
                domid,
                EvtchnInitControl {
                    control_gfn: gfn,
                    offset,
                    vcpu: VcpuId(vcpu),
                    ..EvtchnInitControl::default()
                },
            )
            .map(|reply| reply.link_bits)
    }

    /// expand_array with event frame `index`.
    pub fn expand(&self, domid: DomId, index: u64) -> Result<(), Errno> {
        self.domains.expand_array(domid, EVENT_GFN + index)
    }

    /// init_control on every vcpu and one event-array page.
    pub fn fifo_on(&self, domid: DomId, vcpus: u32) {
        for vcpu in 0..vcpus {
            assert_eq!(self.init_control(domid, vcpu), Ok(17));
        }
        self.expand(domid, 0).unwrap();
    }

    pub fn word_of(&self, domid: DomId, port: u32) -> &AtomicU32 {
        let page = self.memory(domid).page(EVENT_GFN + u64::from(port / 1024));
        &page.words[(port % 1024) as usize]
    }

    pub fn word(&self, domid: DomId, port: u32) -> u32 {
        self.word_of(domid, port).load(Ordering::SeqCst)
    }

    pub fn block(&self, domid: DomId, vcpu: u32) -> ControlBlockView<'_> {
        ControlBlockView {
            words: &self.memory(domid).page(CONTROL_GFN + u64::from(vcpu)).words,
            first: 0,
        }
    }

    pub fn ready(&self, domid: DomId, vcpu: u32) -> u32 {
        self.block(domid, vcpu).ready().load(Ordering::SeqCst)
    }

    pub fn head(&self, domid: DomId, vcpu: u32, queue: usize) -> u32 {
        self.block(domid, vcpu).head(queue).load(Ordering::SeqCst)
    }

    pub fn upcall_pending(&self, domid: DomId, vcpu: usize) -> u8 {
        self.memory(domid).shared.vcpu_info[vcpu]
            .evtchn_upcall_pending
            .load(Ordering::SeqCst)
    }

    pub fn clear_upcall_pending(&self, domid: DomId, vcpu: usize) {
        self.memory(domid).shared.vcpu_info[vcpu]
            .evtchn_upcall_pending
            .store(0, Ordering::SeqCst);
    }

    pub fn kicks(&self) -> Vec<(DomId, VcpuId)> {
        self.domains.notify().kicks.lock().unwrap().clone()
    }

    /// Drain `vcpu`'s queues as a guest would (spec §4.5): the ports handled.
    pub fn drain(&self, domid: DomId, vcpu: u32) -> Vec<u32> {
        let block = self.block(domid, vcpu);
        let mut consumer = Consumer::default();
        let mut handled = Vec::new();
        consumer.drain(
            &block,
            |port| self.word_of(domid, port),
            |port| {
                handled.push(port);
            },
        );
        handled
    }
}

/// A control block seen through its frame's words.
pub struct ControlBlockView<'a> {
    pub words: &'a [AtomicU32],
    pub first: usize,
}

impl ControlBlockView<'_> {
    pub fn ready(&self) -> &AtomicU32 {
        &self.words[self.first]
    }
    pub fn head(&self, queue: usize) -> &AtomicU32 {
        &self.words[self.first + 2 + queue]
    }
}

/// A guest consumer as Linux's events_fifo.c (spec §4.5): a local head per
/// queue, so a queue need not be emptied in one go.
#[derive(Default)]
pub struct Consumer {
    local_heads: [u32; 16],
}

impl Consumer {
    /// Unlink the head event of `queue`; returns (port, old word) or None
    /// if the queue is empty.
    pub fn consume_one<'w>(
        &mut self,
        block: &ControlBlockView<'_>,
        queue: usize,
        word_of: impl Fn(u32) -> &'w AtomicU32,
    ) -> Option<(u32, u32)> {
        let mut head = self.local_heads[queue];
        if head == 0 {
            head = block.head(queue).load(Ordering::SeqCst);
        }
        if head == 0 {
            return None;
        }
        let word = word_of(head);
        // Clear L and LINK atomically, learning the next port.
        let mut old = word.load(Ordering::SeqCst);
        loop {
            let new = old & !(L | LINK);
            match word.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(seen) => old = seen,
            }
        }
        self.local_heads[queue] = old & LINK;
        Some((head, old))
    }

    /// Drain every ready queue, highest priority first; `handle` gets each
    /// pending unmasked port (whose P this consumer clears first).
    pub fn drain<'w>(
        &mut self,
        block: &ControlBlockView<'_>,
        word_of: impl Fn(u32) -> &'w AtomicU32 + Copy,
        mut handle: impl FnMut(u32),
    ) {
        let mut ready = block.ready().swap(0, Ordering::SeqCst);
        while ready != 0 {
            let queue = ready.trailing_zeros() as usize;
            match self.consume_one(block, queue, word_of) {
                None => ready &= !(1 << queue),
                Some((port, old)) => {
                    if old & LINK == 0 {
                        ready &= !(1 << queue);
                    }
                    if old & P != 0 && old & M == 0 {
                        word_of(port).fetch_and(!P, Ordering::SeqCst);
                        handle(port);
                    }
                }
            }
            ready |= block.ready().swap(0, Ordering::SeqCst);
        }
    }
}
