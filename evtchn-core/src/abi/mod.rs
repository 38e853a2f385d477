//! Xen's public event-channel ABI: numbers, identifiers, argument structs and
//! the shared_info layout, exactly as a guest sees them.
//!
//! Nothing here has behaviour beyond encoding: the ops live in
//! [`crate::ops`], the bit manipulation of the shared page in
//! `crate::port_ops` (the 2-level bitmaps and the FIFO event words).

mod errno;
mod fifo;
mod ids;
mod op;
mod shared_info;
mod structs;
mod virq;

pub use errno::Errno;
pub use fifo::{
    EVTCHN_FIFO_BUSY, EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_LINKED, EVTCHN_FIFO_MASKED,
    EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES, EVTCHN_FIFO_MAX_QUEUES, EVTCHN_FIFO_PENDING,
    EVTCHN_FIFO_WORDS_PER_PAGE, EvtchnFifoControlBlock,
};
pub use ids::{DomId, Port, VcpuId};
pub use op::{EvtchnOp, EvtchnStat};
pub use shared_info::{SharedInfo, VcpuInfo};
pub use structs::{
    EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindPirq, EvtchnBindVcpu,
    EvtchnBindVirq, EvtchnClose, EvtchnExpandArray, EvtchnInitControl, EvtchnReset, EvtchnSend,
    EvtchnSetPriority, EvtchnStatus, EvtchnUnmask,
};
pub use virq::{Virq, VirqClass};

/// EVTCHN_2L_NR_CHANNELS for a 64-bit guest: 8·8·64 ports.
pub const EVTCHN_2L_NR_CHANNELS: u32 = 4096;
/// EVTCHN_FIFO_NR_CHANNELS: 1 << 17 ports.
pub const EVTCHN_FIFO_NR_CHANNELS: u32 = 1 << 17;
/// EVTCHN_FIFO_LINK_BITS, returned by init_control.
pub const EVTCHN_FIFO_LINK_BITS: u8 = 17;
/// EVTCHN_FIFO_PRIORITY_MAX (highest).
pub const EVTCHN_FIFO_PRIORITY_MAX: u8 = 0;
/// EVTCHN_FIFO_PRIORITY_DEFAULT, set at every bind.
pub const EVTCHN_FIFO_PRIORITY_DEFAULT: u8 = 7;
/// EVTCHN_FIFO_PRIORITY_MIN (lowest).
pub const EVTCHN_FIFO_PRIORITY_MIN: u8 = 15;
/// Ports per storage bucket (EVTCHNS_PER_BUCKET); port validity grows in
/// these steps.
pub const EVTCHNS_PER_BUCKET: u32 = 64;
