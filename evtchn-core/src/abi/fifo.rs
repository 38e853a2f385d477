//! The FIFO ABI's guest-visible layout (spec §4.1; event_channel.h): the
//! event word's bits and the per-vcpu control block.
//!
//! Both live in guest frames the hypervisor maps for evtchn-core (see
//! [`crate::GuestFrame`]); evtchn-core reaches them only as `AtomicU32`
//! words of a frame, so the control block is addressed by word index. The
//! indices come from [`EvtchnFifoControlBlock`]'s asserted layout.

#[cfg(not(loom))]
use core::mem::{offset_of, size_of};

use crate::sync::AtomicU32;

/// EVTCHN_FIFO_PENDING: bit 31 of an event word.
pub const EVTCHN_FIFO_PENDING: u32 = 1 << 31;
/// EVTCHN_FIFO_MASKED: bit 30.
pub const EVTCHN_FIFO_MASKED: u32 = 1 << 30;
/// EVTCHN_FIFO_LINKED: bit 29, the event is on a queue.
pub const EVTCHN_FIFO_LINKED: u32 = 1 << 29;
/// EVTCHN_FIFO_BUSY: bit 28, the hypervisor is writing LINK (the guest
/// must not clear M meanwhile).
pub const EVTCHN_FIFO_BUSY: u32 = 1 << 28;
/// EVTCHN_FIFO_LINK_MASK: bits 0..=16, the next port of the queue (0 = end).
pub const EVTCHN_FIFO_LINK_MASK: u32 = (1 << 17) - 1;
/// EVTCHN_FIFO_MAX_QUEUES: one queue per priority, 0 (highest) ..= 15.
pub const EVTCHN_FIFO_MAX_QUEUES: usize = 16;
/// Event words per 4 KiB event-array page.
pub const EVTCHN_FIFO_WORDS_PER_PAGE: u32 = 1024;
/// Most event-array pages a domain can add (131072 ports / 1024).
pub const EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES: u32 = 128;

/// `struct evtchn_fifo_control_block` (72 bytes, 8-aligned, inside one
/// page; one per vcpu).
#[repr(C)]
pub struct EvtchnFifoControlBlock {
    /// Bit q: queue q became non-empty. The hypervisor sets bits; the guest
    /// exchanges the word with 0.
    pub ready: AtomicU32,
    /// Reserved.
    pub _rsvd: AtomicU32,
    /// First port of queue q; written by the hypervisor only when the queue
    /// was empty.
    pub head: [AtomicU32; EVTCHN_FIFO_MAX_QUEUES],
}

#[cfg(not(loom))]
const _: () = {
    assert!(size_of::<EvtchnFifoControlBlock>() == 72);
    assert!(offset_of!(EvtchnFifoControlBlock, ready) == 0);
    assert!(offset_of!(EvtchnFifoControlBlock, _rsvd) == 4);
    assert!(offset_of!(EvtchnFifoControlBlock, head) == 8);
};

impl EvtchnFifoControlBlock {
    /// Size in bytes.
    pub const SIZE: u32 = 72;
    /// Word index of `ready` from the start of the block.
    pub const READY_WORD: usize = 0;
    /// Word index of `head[0]` from the start of the block.
    pub const HEAD_WORD: usize = 2;
    /// Length of the block in 32-bit words.
    pub const WORDS: usize = 18;
}

#[cfg(not(loom))]
const _: () = {
    assert!(EvtchnFifoControlBlock::READY_WORD * 4 == offset_of!(EvtchnFifoControlBlock, ready));
    assert!(EvtchnFifoControlBlock::HEAD_WORD * 4 == offset_of!(EvtchnFifoControlBlock, head));
    assert!(EvtchnFifoControlBlock::WORDS * 4 == size_of::<EvtchnFifoControlBlock>());
};
