//! The FIFO event-channel ABI from the guest's side (spec §4): pages handed
//! to the hypervisor, the per-vcpu control blocks and local queue heads,
//! and the queue consumer that [`crate::upcall`]'s demultiplexer runs
//! instead of the 2-level one once [`init_control`] switched the domain.
//!
//! The word-level protocol (the queue walk of spec §4.5, and the mask and
//! unmask rules around the hypervisor's BUSY bit) lives in [`consumer`],
//! free of hypercalls and statics so that a host test can drive it; this
//! file binds it to the runtime's pages, vcpus and hypercalls.

use core::cell::UnsafeCell;
use core::mem::size_of;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::errno::Errno;
use crate::evtchn;
use crate::smp::{self, MAX_VCPUS};

pub mod consumer;

pub use consumer::{
    BUSY, ControlBlock, LINK_MASK, LINKED, MASKED, MaskCleared, PENDING, QUEUES, Unmasked,
};

/// Default priority of a newly bound port.
pub const DEFAULT_PRIORITY: u32 = 7;
/// Event words per event-array page.
pub const WORDS_PER_PAGE: usize = 1024;
/// Event-array pages the runtime tracks (ports 0..8191).
pub const MAX_ARRAY_PAGES: usize = 8;

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
    let previous = slot.load(Ordering::SeqCst);
    if previous == 0 {
        // Publish the block before the hypercall: once the hypervisor has
        // mapped it, an event for `vcpu` may be linked and upcalled on that
        // vcpu at once, and its consumer must find the block.
        for head in LOCAL_HEADS.get(vcpu as usize).into_iter().flatten() {
            head.store(0, Ordering::SeqCst);
        }
        slot.store(block as *const ControlBlock as u64, Ordering::SeqCst);
    }
    let link_bits = evtchn::init_control(frame, offset, vcpu).inspect_err(|_| {
        // A refused call leaves whatever block the vcpu had.
        slot.store(previous, Ordering::SeqCst);
    })?;
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

/// Consumes `vcpu`'s ready queues ([`consumer::consume`], spec §4.5),
/// calling `handle` for each pending, unmasked event after clearing its P.
/// Returns the events handed over. Called with events masked.
pub fn consume(vcpu: u32, handle: impl FnMut(u32)) -> u64 {
    let (Some(block), Some(heads)) = (control_block(vcpu), LOCAL_HEADS.get(vcpu as usize)) else {
        return 0;
    };
    consumer::consume(block, heads, event_word, handle)
}

/// Times [`unmask`] found the hypervisor holding BUSY on a word.
static BUSY_WAITS: AtomicU64 = AtomicU64::new(0);

/// Failed exchanges of [`unmask`] that saw BUSY set, since boot.
pub fn busy_waits() -> u64 {
    BUSY_WAITS.load(Ordering::SeqCst)
}

/// Masks `port` in its event word; -EINVAL if its page was not added.
pub fn mask(port: u32) -> Result<(), Errno> {
    consumer::set_mask(event_word(port).ok_or(Errno::EINVAL)?);
    Ok(())
}

/// Unmasks `port` as a guest kernel does (spec §4.4): clear M itself,
/// waiting while the hypervisor holds BUSY, or, when the port is pending,
/// leave M to EVTCHNOP_unmask, which links the event. Returns what
/// happened; -EINVAL if the port's page was not added.
pub fn unmask(port: u32) -> Result<MaskCleared, Errno> {
    let unmasked = consumer::clear_mask(event_word(port).ok_or(Errno::EINVAL)?);
    BUSY_WAITS.fetch_add(u64::from(unmasked.busy_waits), Ordering::SeqCst);
    if unmasked.outcome == MaskCleared::Pending {
        evtchn::unmask(port)?;
    }
    Ok(unmasked.outcome)
}

/// Whether `port`'s event word has P set (false if its page was not added).
pub fn is_pending(port: u32) -> bool {
    event_word(port).is_some_and(|word| word.load(Ordering::SeqCst) & PENDING != 0)
}

/// Clears P of `port`'s event word (an atomic and-not: M, L, B and LINK
/// stay); -EINVAL if its page was not added.
pub fn clear_pending(port: u32) -> Result<(), Errno> {
    event_word(port)
        .ok_or(Errno::EINVAL)?
        .fetch_and(!PENDING, Ordering::SeqCst);
    Ok(())
}
