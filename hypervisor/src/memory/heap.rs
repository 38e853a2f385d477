//! The hypervisor heap: one physically contiguous region, reached through
//! the direct map, managed by talc.
//!
//! talc (the design's choice, used by Hermit) is a small no_std allocator
//! that takes a region with one `claim` call and locks with any
//! `lock_api` mutex, here spin's. The heap serves boot-time and per-CPU
//! structures; interrupt handlers never allocate, so a spin lock suffices.
#![allow(unsafe_code)]

use talc::TalcLock;
use talc::source::Manual;

use super::frames;

/// Heap size: room for per-CPU tables (60 KiB each) and boot data.
pub const HEAP_SIZE: u64 = 8 << 20;

#[global_allocator]
static HEAP: TalcLock<spin::Mutex<()>, Manual> = TalcLock::new(Manual);

/// Why the heap could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapError {
    /// No contiguous free region of `HEAP_SIZE`.
    NoRegion,
    /// The allocator refused the region.
    Refused,
}

/// Takes `HEAP_SIZE` of contiguous frames and gives them to the allocator.
/// Returns the physical range.
pub fn init() -> Result<(u64, u64), HeapError> {
    let phys = frames::allocate_contiguous(HEAP_SIZE / 4096).ok_or(HeapError::NoRegion)?;
    let virt = arch::layout::phys_to_virt(phys);
    // SAFETY: the frames were just taken from the frame allocator, so
    // nothing else uses them; they are mapped read-write through the direct
    // map for the life of the system; the heap is claimed once.
    let claimed = unsafe { HEAP.lock().claim(virt as *mut u8, HEAP_SIZE as usize) };
    claimed
        .map(|_| (phys, phys + HEAP_SIZE))
        .ok_or(HeapError::Refused)
}
