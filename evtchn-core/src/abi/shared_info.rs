//! The guest-visible shared_info page and vcpu_info, as atomics (spec §3.1,
//! §3.2).
//!
//! Every field is an atomic because the guest reads and writes the page
//! concurrently with the hypervisor; the 2-level bitmaps stay raw `AtomicU64`
//! words, as the ABI has them. The hypervisor views its mapped frame as a
//! [`SharedInfo`] (one cast in its shared-page module); host tests keep one
//! on the heap. Offsets are asserted against the spec's numbers.

#[cfg(not(loom))]
use core::mem::{offset_of, size_of};

use crate::sync::{AtomicU8, AtomicU32, AtomicU64};

/// `struct vcpu_info` (64 bytes): the per-vcpu event flags and time area.
#[repr(C)]
pub struct VcpuInfo {
    /// Set by the hypervisor when an event reaches this vcpu; cleared only by
    /// the guest. Bit 0 is the flag.
    pub evtchn_upcall_pending: AtomicU8,
    /// The guest's "events disabled" flag; the hypervisor tests it only on the
    /// way back into the guest.
    pub evtchn_upcall_mask: AtomicU8,
    /// Padding.
    pub _pad: [AtomicU8; 6],
    /// Bit i: word i of `evtchn_pending` may hold work for this vcpu.
    pub evtchn_pending_sel: AtomicU64,
    /// `arch.cr2`: the PV page-fault address.
    pub arch_cr2: AtomicU64,
    /// `arch.pad`.
    pub arch_pad: AtomicU64,
    /// `time.version` (seqlock: odd while an update is in progress).
    pub time_version: AtomicU32,
    /// `time.pad0`.
    pub time_pad0: AtomicU32,
    /// `time.tsc_timestamp`.
    pub time_tsc_timestamp: AtomicU64,
    /// `time.system_time` (ns since boot).
    pub time_system_time: AtomicU64,
    /// `time.tsc_to_system_mul`.
    pub time_tsc_to_system_mul: AtomicU32,
    /// `time.tsc_shift` (an i8 stored as its byte).
    pub time_tsc_shift: AtomicU8,
    /// `time.flags`.
    pub time_flags: AtomicU8,
    /// `time.pad1`.
    pub time_pad1: [AtomicU8; 2],
}

#[cfg(not(loom))]
const _: () = {
    assert!(size_of::<VcpuInfo>() == 64);
    assert!(offset_of!(VcpuInfo, evtchn_upcall_pending) == 0);
    assert!(offset_of!(VcpuInfo, evtchn_upcall_mask) == 1);
    assert!(offset_of!(VcpuInfo, _pad) == 2);
    assert!(offset_of!(VcpuInfo, evtchn_pending_sel) == 8);
    assert!(offset_of!(VcpuInfo, arch_cr2) == 16);
    assert!(offset_of!(VcpuInfo, arch_pad) == 24);
    assert!(offset_of!(VcpuInfo, time_version) == 32);
    assert!(offset_of!(VcpuInfo, time_pad0) == 36);
    assert!(offset_of!(VcpuInfo, time_tsc_timestamp) == 40);
    assert!(offset_of!(VcpuInfo, time_system_time) == 48);
    assert!(offset_of!(VcpuInfo, time_tsc_to_system_mul) == 56);
    assert!(offset_of!(VcpuInfo, time_tsc_shift) == 60);
    assert!(offset_of!(VcpuInfo, time_flags) == 61);
    assert!(offset_of!(VcpuInfo, time_pad1) == 62);
};

impl VcpuInfo {
    /// A zeroed vcpu_info.
    pub fn new() -> Self {
        Self {
            evtchn_upcall_pending: AtomicU8::new(0),
            evtchn_upcall_mask: AtomicU8::new(0),
            _pad: core::array::from_fn(|_| AtomicU8::new(0)),
            evtchn_pending_sel: AtomicU64::new(0),
            arch_cr2: AtomicU64::new(0),
            arch_pad: AtomicU64::new(0),
            time_version: AtomicU32::new(0),
            time_pad0: AtomicU32::new(0),
            time_tsc_timestamp: AtomicU64::new(0),
            time_system_time: AtomicU64::new(0),
            time_tsc_to_system_mul: AtomicU32::new(0),
            time_tsc_shift: AtomicU8::new(0),
            time_flags: AtomicU8::new(0),
            time_pad1: core::array::from_fn(|_| AtomicU8::new(0)),
        }
    }
}

impl Default for VcpuInfo {
    fn default() -> Self {
        Self::new()
    }
}

/// `struct shared_info` (3136 bytes used of its page), x86_64 layout.
#[repr(C)]
pub struct SharedInfo {
    /// The legacy vcpu_info slots: vcpu n at 64·n.
    pub vcpu_info: [VcpuInfo; SharedInfo::LEGACY_MAX_VCPUS],
    /// 2-level pending bitmap: port p is word p/64, bit p%64.
    pub evtchn_pending: [AtomicU64; SharedInfo::BITMAP_WORDS],
    /// 2-level mask bitmap, same indexing.
    pub evtchn_mask: [AtomicU64; SharedInfo::BITMAP_WORDS],
    /// `wc_version`.
    pub wc_version: AtomicU32,
    /// `wc_sec`.
    pub wc_sec: AtomicU32,
    /// `wc_nsec`.
    pub wc_nsec: AtomicU32,
    /// `wc_sec_hi`.
    pub wc_sec_hi: AtomicU32,
    /// `arch.max_pfn`.
    pub arch_max_pfn: AtomicU64,
    /// `arch.pfn_to_mfn_frame_list_list`.
    pub arch_pfn_to_mfn_frame_list_list: AtomicU64,
    /// `arch.nmi_reason`.
    pub arch_nmi_reason: AtomicU64,
    /// `arch.p2m_cr3`.
    pub arch_p2m_cr3: AtomicU64,
    /// `arch.p2m_vaddr`.
    pub arch_p2m_vaddr: AtomicU64,
    /// `arch.p2m_generation`.
    pub arch_p2m_generation: AtomicU64,
}

#[cfg(not(loom))]
const _: () = {
    assert!(size_of::<SharedInfo>() == 3136);
    assert!(offset_of!(SharedInfo, vcpu_info) == 0);
    assert!(offset_of!(SharedInfo, evtchn_pending) == 2048);
    assert!(offset_of!(SharedInfo, evtchn_mask) == 2560);
    assert!(offset_of!(SharedInfo, wc_version) == 3072);
    assert!(offset_of!(SharedInfo, wc_sec) == 3076);
    assert!(offset_of!(SharedInfo, wc_nsec) == 3080);
    assert!(offset_of!(SharedInfo, wc_sec_hi) == 3084);
    assert!(offset_of!(SharedInfo, arch_max_pfn) == 3088);
    assert!(offset_of!(SharedInfo, arch_pfn_to_mfn_frame_list_list) == 3096);
    assert!(offset_of!(SharedInfo, arch_nmi_reason) == 3104);
    assert!(offset_of!(SharedInfo, arch_p2m_cr3) == 3112);
    assert!(offset_of!(SharedInfo, arch_p2m_vaddr) == 3120);
    assert!(offset_of!(SharedInfo, arch_p2m_generation) == 3128);
};

impl SharedInfo {
    /// XEN_LEGACY_MAX_VCPUS: vcpu_info slots inside shared_info.
    pub const LEGACY_MAX_VCPUS: usize = 32;
    /// Words in each 2-level bitmap (64 × 64 = 4096 ports).
    pub const BITMAP_WORDS: usize = 64;

    /// A zeroed page: every port unmasked and not pending, every
    /// `evtchn_upcall_mask` 0 (domain builders then set the masks to 1).
    pub fn new() -> Self {
        Self {
            vcpu_info: core::array::from_fn(|_| VcpuInfo::new()),
            evtchn_pending: core::array::from_fn(|_| AtomicU64::new(0)),
            evtchn_mask: core::array::from_fn(|_| AtomicU64::new(0)),
            wc_version: AtomicU32::new(0),
            wc_sec: AtomicU32::new(0),
            wc_nsec: AtomicU32::new(0),
            wc_sec_hi: AtomicU32::new(0),
            arch_max_pfn: AtomicU64::new(0),
            arch_pfn_to_mfn_frame_list_list: AtomicU64::new(0),
            arch_nmi_reason: AtomicU64::new(0),
            arch_p2m_cr3: AtomicU64::new(0),
            arch_p2m_vaddr: AtomicU64::new(0),
            arch_p2m_generation: AtomicU64::new(0),
        }
    }
}

impl Default for SharedInfo {
    fn default() -> Self {
        Self::new()
    }
}
