//! The FIFO event-channel ABI from the guest's side (spec §4): the event
//! word and control block layouts, pages handed to the hypervisor, and the
//! queue consumer (spec §4.5) that [`crate::upcall`]'s demultiplexer runs
//! instead of the 2-level one once [`init_control`] switched the domain.
//!
//! The consumer follows spec §4.5: take `ready` with an exchange; while a
//! queue is ready, take the highest-priority one (lowest bit), consume one
//! event from its local head (or `head[q]` when the local head is 0):
//! clear LINKED and LINK together, remember LINK as the next head, clear
//! the queue's bit once LINK is 0, and hand the port to its handler if it
//! was pending and not masked (clearing P first); then merge `ready` again.
//! One event at a time, so a higher-priority event raised meanwhile is
//! handled next.

use core::cell::UnsafeCell;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::errno::Errno;
use crate::evtchn;
use crate::smp::{self, MAX_VCPUS};

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
/// Default priority of a newly bound port.
pub const DEFAULT_PRIORITY: u32 = 7;
/// Event words per event-array page.
pub const WORDS_PER_PAGE: usize = 1024;
/// Event-array pages the runtime tracks (ports 0..8191).
pub const MAX_ARRAY_PAGES: usize = 8;

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
        // consists of atomics; the page lives as long as `self`.
        Some(unsafe { &*pointer })
    }
}

impl Default for GuestPage {
    fn default() -> GuestPage {
        GuestPage::new()
    }
}

/// Whether the domain is on FIFO as far as the runtime knows.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Each vcpu's control block address (0 = none).
static BLOCKS: [AtomicU64; MAX_VCPUS] = [const { AtomicU64::new(0) }; MAX_VCPUS];
/// Event-array page addresses in order (0 = not added).
static ARRAY: [AtomicU64; MAX_ARRAY_PAGES] = [const { AtomicU64::new(0) }; MAX_ARRAY_PAGES];
/// Each vcpu's local queue heads (spec §4.5).
static LOCAL_HEADS: [[AtomicU32; QUEUES]; MAX_VCPUS] =
    [const { [const { AtomicU32::new(0) }; QUEUES] }; MAX_VCPUS];

/// Whether the runtime's upcall uses the FIFO consumer.
pub fn active() -> bool {
    ACTIVE.load(Ordering::SeqCst)
}

/// EVTCHNOP_init_control for `vcpu` with its control block at `offset` of
/// `page`; on success the upcall demultiplexer switches to the FIFO
/// consumer. Returns `link_bits`.
pub fn init_control(page: &'static GuestPage, offset: u32, vcpu: u32) -> Result<u8, Errno> {
    let block = page.control_block(offset as usize).ok_or(Errno::EINVAL)?;
    let slot = BLOCKS.get(vcpu as usize).ok_or(Errno::EINVAL)?;
    let frame = smp::machine_frame(page.address()).ok_or(Errno::EFAULT)?;
    let link_bits = evtchn::init_control(frame, offset, vcpu)?;
    for head in LOCAL_HEADS.get(vcpu as usize).into_iter().flatten() {
        head.store(0, Ordering::SeqCst);
    }
    slot.store(block as *const ControlBlock as u64, Ordering::SeqCst);
    ACTIVE.store(true, Ordering::SeqCst);
    Ok(link_bits)
}

/// EVTCHNOP_expand_array with `page` as the next event-array page; the
/// runtime then reads those ports' words from it.
pub fn expand_array(page: &'static GuestPage) -> Result<(), Errno> {
    let index = ARRAY
        .iter()
        .position(|slot| slot.load(Ordering::SeqCst) == 0)
        .ok_or(Errno::ENOSPC)?;
    let frame = smp::machine_frame(page.address()).ok_or(Errno::EFAULT)?;
    evtchn::expand_array(frame)?;
    if let Some(slot) = ARRAY.get(index) {
        slot.store(page.address(), Ordering::SeqCst);
    }
    Ok(())
}

/// Forgets every control block and array page: the domain is 2-level again
/// (after EVTCHNOP_reset of itself).
pub fn forget() {
    ACTIVE.store(false, Ordering::SeqCst);
    for slot in BLOCKS.iter().chain(ARRAY.iter()) {
        slot.store(0, Ordering::SeqCst);
    }
    for head in LOCAL_HEADS.iter().flatten() {
        head.store(0, Ordering::SeqCst);
    }
}

/// `vcpu`'s control block, if it has one.
pub fn control_block(vcpu: u32) -> Option<&'static ControlBlock> {
    let address = BLOCKS.get(vcpu as usize)?.load(Ordering::SeqCst);
    if address == 0 {
        return None;
    }
    // SAFETY: only `init_control` stores non-zero addresses, of control
    // blocks inside `'static` pages.
    Some(unsafe { &*(address as *const ControlBlock) })
}

/// The event word of `port`, if its page was added.
pub fn event_word(port: u32) -> Option<&'static AtomicU32> {
    let page = ARRAY
        .get(port as usize / WORDS_PER_PAGE)?
        .load(Ordering::SeqCst);
    if page == 0 {
        return None;
    }
    // SAFETY: only `expand_array` stores non-zero addresses, of `'static`
    // pages.
    let page = unsafe { &*(page as *const GuestPage) };
    page.word(port as usize % WORDS_PER_PAGE)
}

/// Clears LINKED and LINK of `word` in one step; returns the old word.
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

/// Consumes `vcpu`'s ready queues (spec §4.5), calling `handle` for each
/// pending, unmasked event after clearing its P. Returns the events handed
/// over. Called with events masked.
pub fn consume(vcpu: u32, mut handle: impl FnMut(u32)) -> u64 {
    let (Some(block), Some(heads)) = (control_block(vcpu), LOCAL_HEADS.get(vcpu as usize)) else {
        return 0;
    };
    let mut handled = 0;
    let mut ready = block.ready.swap(0, Ordering::SeqCst);
    while ready != 0 {
        let queue = ready.trailing_zeros() as usize;
        let (Some(local), Some(shared_head)) = (heads.get(queue), block.head.get(queue)) else {
            break;
        };
        let mut port = local.load(Ordering::SeqCst);
        if port == 0 {
            port = shared_head.load(Ordering::SeqCst);
        }
        let Some(word) = event_word(port).filter(|_| port != 0) else {
            // Nothing to walk (or a port beyond the pages handed over): the
            // queue is done as far as this consumer can tell.
            local.store(0, Ordering::SeqCst);
            ready &= !(1 << queue);
            ready |= block.ready.swap(0, Ordering::SeqCst);
            continue;
        };
        let old = unlink(word);
        let next = old & LINK_MASK;
        if next == 0 {
            ready &= !(1 << queue);
        }
        local.store(next, Ordering::SeqCst);
        if old & PENDING != 0 && old & MASKED == 0 {
            word.fetch_and(!PENDING, Ordering::SeqCst);
            handled += 1;
            handle(port);
        }
        ready |= block.ready.swap(0, Ordering::SeqCst);
    }
    handled
}
