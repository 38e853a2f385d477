//! Raw access to frames that belong to guests, through the direct map: the
//! domain builder fills them, the hypervisor edits a guest's page tables and
//! views a shared_info frame as [`SharedInfo`].
//!
//! This module opts out of `deny(unsafe_code)`: it is the only place the
//! hypervisor forms pointers into guest frames. Every frame it is given
//! was handed out by the frame allocator (so it lies in the mapped part of
//! the direct map) and is owned by one domain for that domain's life (frames
//! are never freed while any vcpu of the domain can run).
#![allow(unsafe_code)]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use arch::layout::{PAGE_SIZE, phys_to_virt};
use evtchn_core::abi::{SharedInfo, VcpuInfo};

/// A frame the hypervisor allocated for a guest (its physical address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GuestFrame(u64);

impl GuestFrame {
    /// Takes a frame fresh from the frame allocator and zeroes it.
    pub fn from_allocator(phys: u64) -> Option<Self> {
        if !phys.is_multiple_of(PAGE_SIZE) {
            return None;
        }
        let frame = Self(phys);
        // SAFETY: `phys` came from the frame allocator (the caller's
        // contract, and the only constructor), so it is an unused 4 KiB
        // frame inside the mapped direct map; nothing else references it.
        unsafe { core::ptr::write_bytes(phys_to_virt(phys) as *mut u8, 0, PAGE_SIZE as usize) };
        Some(frame)
    }

    /// Its physical address.
    pub fn phys(self) -> u64 {
        self.0
    }

    /// Its machine frame number.
    pub fn mfn(self) -> u64 {
        self.0 / PAGE_SIZE
    }

    /// Copies `bytes` into the frame at `offset` (clipped to the frame).
    pub fn write(self, offset: usize, bytes: &[u8]) {
        let Some(end) = offset.checked_add(bytes.len()) else {
            return;
        };
        if end > PAGE_SIZE as usize {
            return;
        }
        let target = (phys_to_virt(self.0) as *mut u8).wrapping_add(offset);
        // SAFETY: the range lies inside this frame (checked above), which is
        // mapped writable in the direct map; the guest may access the frame
        // concurrently only after it runs, and the builder writes before.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), target, bytes.len()) };
    }

    /// The 64-bit word `index` (0..512) of the frame, as an atomic: page-table
    /// entries and the p2m are read and written this way (the guest or
    /// another CPU may look at them concurrently).
    pub fn word(self, index: usize) -> Option<&'static AtomicU64> {
        if index >= (PAGE_SIZE / 8) as usize {
            return None;
        }
        let address = phys_to_virt(self.0) + index as u64 * 8;
        // SAFETY: the address is an aligned u64 inside this frame, mapped
        // for good in the direct map; the frame stays allocated to the domain
        // for the hypervisor's life, and every access is atomic.
        Some(unsafe { &*(address as *const AtomicU64) })
    }

    /// Reads word `index` (0 if out of range).
    pub fn read_word(self, index: usize) -> u64 {
        self.word(index)
            .map_or(0, |word| word.load(Ordering::Relaxed))
    }

    /// Writes word `index` (ignored if out of range).
    pub fn write_word(self, index: usize, value: u64) {
        if let Some(word) = self.word(index) {
            word.store(value, Ordering::Relaxed);
        }
    }

    /// The frame as 1024 atomic 32-bit words (a FIFO control block or
    /// event-array page the guest handed over).
    pub fn words(self) -> &'static [AtomicU32; 1024] {
        // SAFETY: the frame is 4 KiB, page aligned, mapped for good in the
        // direct map and never freed while the hypervisor runs; the guest
        // writes it concurrently, which atomics allow, and any bit pattern
        // is a valid u32.
        unsafe { &*(phys_to_virt(self.0) as *const [AtomicU32; 1024]) }
    }

    /// The 64-byte vcpu_info at byte `offset` of the frame (a registered
    /// vcpu_info area), if it fits and is 8-aligned.
    pub fn vcpu_info_at(self, offset: u64) -> Option<&'static VcpuInfo> {
        const _: () = assert!(core::mem::size_of::<VcpuInfo>() == 64);
        if offset > PAGE_SIZE - 64 || !offset.is_multiple_of(8) {
            return None;
        }
        let address = phys_to_virt(self.0) + offset;
        // SAFETY: the 64 bytes lie inside this frame (checked above), 8-aligned
        // as VcpuInfo's atomics need; the frame stays mapped in the direct
        // map and allocated for the hypervisor's life; VcpuInfo is all
        // atomics, so the guest's concurrent writes and any bit pattern are
        // fine.
        Some(unsafe { &*(address as *const VcpuInfo) })
    }

    /// The frame as a shared_info page.
    pub fn as_shared_info(self) -> &'static SharedInfo {
        const _: () = assert!(core::mem::size_of::<SharedInfo>() <= PAGE_SIZE as usize);
        // SAFETY: the frame is 4 KiB, page aligned (so aligned for the
        // atomics of SharedInfo, which fits in it), mapped for good in the
        // direct map, and never freed (the hypervisor keeps a domain's
        // shared_info frame for its whole life). SharedInfo is all atomics,
        // so the guest writing the same memory concurrently is fine, and any
        // bit pattern is a valid value.
        unsafe { &*(phys_to_virt(self.0) as *const SharedInfo) }
    }
}
