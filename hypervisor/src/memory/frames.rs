//! The physical frame allocator: one bit per 4 KiB frame, set when free.
//!
//! Built from the multiboot memory map's usable ranges, minus what is in
//! use at boot: everything below 1 MiB (BIOS data, the AP trampoline, the
//! loader's structures), the hypervisor image and the boot modules. It
//! hands out the lowest free frame first, which keeps page-table frames in
//! the part of the direct map the boot tables cover.
//!
//! This module opts out of `deny(unsafe_code)` for one thing: vouching to
//! `arch::paging` that its frames are unused (`FrameSource`). Freeing a
//! frame ([`free`]) is an `unsafe fn`: its caller vouches that nothing
//! uses the frame any more.
#![allow(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};

use crate::bootinfo::{MemoryRegion, RegionKind};

/// Physical memory the allocator can manage (frames above are ignored).
pub const MAX_PHYS: u64 = 16 << 30;
const FRAME_SIZE: u64 = 4096;
const WORDS: usize = (MAX_PHYS / FRAME_SIZE / 64) as usize;
/// Memory below this is never handed out.
pub const LOW_MEMORY_END: u64 = 1 << 20;

struct Bitmap {
    free: [u64; WORDS],
    free_frames: u64,
    managed_frames: u64,
    /// No word below this one has a free frame (freeing must lower it).
    first_candidate_word: usize,
}

static BITMAP: spin::Mutex<Bitmap> = spin::Mutex::new(Bitmap {
    free: [0; WORDS],
    free_frames: 0,
    managed_frames: 0,
    first_candidate_word: 0,
});

/// Frames at or above this are not yet reachable through the direct map.
static REACHABLE_LIMIT: AtomicU64 = AtomicU64::new(arch::layout::BOOT_DIRECT_MAP_SIZE);

/// Counts for the boot log.
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// Frames free now.
    pub free_frames: u64,
    /// Frames managed (free at init).
    pub managed_frames: u64,
}

fn overlaps(start: u64, end: u64, ranges: &[(u64, u64)]) -> bool {
    ranges.iter().any(|&(from, to)| start < to && from < end)
}

/// Fills the allocator from `regions`, leaving out `in_use` ranges.
pub fn init(regions: &[MemoryRegion], in_use: &[(u64, u64)]) -> Stats {
    let mut bitmap = BITMAP.lock();
    for region in regions
        .iter()
        .filter(|region| region.kind == RegionKind::Usable)
    {
        let start = region.start.div_ceil(FRAME_SIZE) * FRAME_SIZE;
        let end = (region.end / FRAME_SIZE * FRAME_SIZE).min(MAX_PHYS);
        let mut frame = start.max(LOW_MEMORY_END);
        while frame < end {
            if !overlaps(frame, frame + FRAME_SIZE, in_use) {
                let index = (frame / FRAME_SIZE) as usize;
                if let Some(word) = bitmap.free.get_mut(index / 64) {
                    let bit = 1u64 << (index % 64);
                    if *word & bit == 0 {
                        *word |= bit;
                        bitmap.free_frames += 1;
                        bitmap.managed_frames += 1;
                    }
                }
            }
            frame += FRAME_SIZE;
        }
    }
    Stats {
        free_frames: bitmap.free_frames,
        managed_frames: bitmap.managed_frames,
    }
}

/// Current counts.
pub fn stats() -> Stats {
    let bitmap = BITMAP.lock();
    Stats {
        free_frames: bitmap.free_frames,
        managed_frames: bitmap.managed_frames,
    }
}

/// Allows frames up to `limit` to be handed out as page-table frames (the
/// direct map now covers them).
pub fn set_reachable_limit(limit: u64) {
    REACHABLE_LIMIT.store(limit, Ordering::Relaxed);
}

/// The lowest free frame below the reachable limit.
pub fn allocate() -> Option<u64> {
    let limit = REACHABLE_LIMIT.load(Ordering::Relaxed);
    let mut bitmap = BITMAP.lock();
    let first = bitmap.first_candidate_word;
    let (word_index, word) = bitmap
        .free
        .iter_mut()
        .enumerate()
        .skip(first)
        .find(|(_, word)| **word != 0)?;
    let bit = u64::from(word.trailing_zeros());
    let phys = (word_index as u64 * 64 + bit) * FRAME_SIZE;
    if phys >= limit {
        return None;
    }
    *word &= !(1 << bit);
    bitmap.free_frames -= 1;
    bitmap.first_candidate_word = word_index;
    Some(phys)
}

/// `count` physically contiguous free frames (lowest fit), below the
/// reachable limit.
pub fn allocate_contiguous(count: u64) -> Option<u64> {
    let limit = REACHABLE_LIMIT.load(Ordering::Relaxed);
    let mut bitmap = BITMAP.lock();
    let is_free = |free: &[u64; WORDS], index: u64| {
        free.get((index / 64) as usize)
            .is_some_and(|word| word & (1 << (index % 64)) != 0)
    };
    let frames = limit.min(MAX_PHYS) / FRAME_SIZE;
    let mut run_start = 0;
    let mut run_length = 0;
    let mut index = 0;
    while index < frames {
        if is_free(&bitmap.free, index) {
            if run_length == 0 {
                run_start = index;
            }
            run_length += 1;
            if run_length == count {
                for taken in run_start..run_start + count {
                    if let Some(word) = bitmap.free.get_mut((taken / 64) as usize) {
                        *word &= !(1 << (taken % 64));
                    }
                }
                bitmap.free_frames -= count;
                return Some(run_start * FRAME_SIZE);
            }
        } else {
            run_length = 0;
        }
        index += 1;
    }
    None
}

/// Gives the frame at `phys` back; `false` (and nothing changes) if it
/// is not a managed frame that is allocated now.
///
/// # Safety
/// The frame came from [`allocate`] (or [`allocate_contiguous`]) and
/// nothing uses it any more: no reference or mapping through which it is
/// still read or written, no TLB entry on any CPU that maps it.
pub unsafe fn free(phys: u64) -> bool {
    if !phys.is_multiple_of(FRAME_SIZE) || !(LOW_MEMORY_END..MAX_PHYS).contains(&phys) {
        return false;
    }
    let index = (phys / FRAME_SIZE) as usize;
    let mut bitmap = BITMAP.lock();
    let Some(word) = bitmap.free.get_mut(index / 64) else {
        return false;
    };
    let bit = 1u64 << (index % 64);
    if *word & bit != 0 {
        return false;
    }
    *word |= bit;
    bitmap.free_frames += 1;
    bitmap.first_candidate_word = bitmap.first_candidate_word.min(index / 64);
    true
}

/// The allocator as a page-table frame source.
#[derive(Debug)]
pub struct Frames;

// SAFETY: `allocate` hands out each frame once (its bit is cleared under
// the lock), never a frame in use at boot (`init` left those out), and only
// below the reachable limit, i.e. inside the mapped part of the direct map.
unsafe impl arch::paging::FrameSource for Frames {
    fn allocate_frame(&mut self) -> Option<u64> {
        allocate()
    }
}
