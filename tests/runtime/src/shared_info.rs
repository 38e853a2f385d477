//! The shared_info page and vcpu_info (spec §3.1, §3.2), and mapping it.
//!
//! The hypervisor writes this page while the guest runs, so every field is an
//! atomic: the guest never holds a plain reference to memory that changes
//! underneath it. The 2-level bitmaps follow the spec's bit layout: port `p`
//! is bit `p % 64` of word `p / 64`, and selector bit `p / 64`.
//!
//! Orderings: the hypervisor updates these words with locked
//! read-modify-writes (full barriers on x86), and the tests reason about the
//! order in which bits appear, so the runtime uses `SeqCst` throughout: the
//! strongest order costs nothing that matters in a test guest.

use core::cell::UnsafeCell;
use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicU64, Ordering};

use crate::errno::Errno;
use crate::hypercall::{UVMF_INVLPG, update_va_mapping};
use crate::smp::MAX_VCPUS;
use crate::start_info::StartInfo;

/// vcpu_info slots in shared_info (XEN_LEGACY_MAX_VCPUS).
pub const LEGACY_MAX_VCPUS: usize = 32;
/// Ports of the 2-level ABI for a 64-bit guest (EVTCHN_2L_NR_CHANNELS).
pub const NR_2L_PORTS: u32 = 4096;
/// Words in each 2-level bitmap.
pub const BITMAP_WORDS: usize = 64;

/// Per-vcpu time (vcpu_time_info, 32 bytes).
#[repr(C)]
pub struct VcpuTimeInfo {
    /// Seqlock: odd while the hypervisor updates the record.
    pub version: AtomicU32,
    /// Padding in the ABI.
    pub pad0: AtomicU32,
    /// TSC at the last update.
    pub tsc_timestamp: AtomicU64,
    /// System time in ns at the last update.
    pub system_time: AtomicU64,
    /// TSC to ns multiplier (32.32 fixed point).
    pub tsc_to_system_mul: AtomicU32,
    /// Shift applied to TSC deltas before the multiply (signed).
    pub tsc_shift: AtomicU8,
    /// Bit 0 TSC_STABLE, bit 1 GUEST_STOPPED.
    pub flags: AtomicU8,
    /// Padding in the ABI.
    pub pad1: [AtomicU8; 2],
}

/// One vcpu's event-delivery state (vcpu_info, 64 bytes).
#[repr(C)]
pub struct VcpuInfo {
    /// Set by the hypervisor when an event is pending; cleared by the guest.
    pub evtchn_upcall_pending: AtomicU8,
    /// The guest's "interrupts disabled" flag.
    pub evtchn_upcall_mask: AtomicU8,
    /// Padding in the ABI.
    pub pad: [AtomicU8; 6],
    /// Bit i: word i of `evtchn_pending` may have work.
    pub evtchn_pending_sel: AtomicU64,
    /// PV page-fault address.
    pub arch_cr2: AtomicU64,
    /// Padding in the ABI.
    pub arch_pad: AtomicU64,
    /// Time record.
    pub time: VcpuTimeInfo,
}

/// The shared_info page (3136 bytes used).
#[repr(C)]
pub struct SharedInfo {
    /// vcpu n's vcpu_info at 64 * n.
    pub vcpu_info: [VcpuInfo; LEGACY_MAX_VCPUS],
    /// 2-level pending bitmap.
    pub evtchn_pending: [AtomicU64; BITMAP_WORDS],
    /// 2-level mask bitmap.
    pub evtchn_mask: [AtomicU64; BITMAP_WORDS],
    /// Wall-clock seqlock.
    pub wc_version: AtomicU32,
    /// Wall-clock seconds (low 32 bits).
    pub wc_sec: AtomicU32,
    /// Wall-clock nanoseconds.
    pub wc_nsec: AtomicU32,
    /// Wall-clock seconds (high 32 bits).
    pub wc_sec_hi: AtomicU32,
    /// Highest PFN.
    pub arch_max_pfn: AtomicU64,
    /// Frame list list of the p2m.
    pub arch_pfn_to_mfn_frame_list_list: AtomicU64,
    /// NMI reason.
    pub arch_nmi_reason: AtomicU64,
    /// p2m CR3.
    pub arch_p2m_cr3: AtomicU64,
    /// p2m virtual address.
    pub arch_p2m_vaddr: AtomicU64,
    /// p2m generation.
    pub arch_p2m_generation: AtomicU64,
}

const _: () = assert!(size_of::<VcpuTimeInfo>() == 32);
const _: () = assert!(size_of::<VcpuInfo>() == 64);
const _: () = assert!(offset_of!(VcpuInfo, evtchn_upcall_pending) == 0);
const _: () = assert!(offset_of!(VcpuInfo, evtchn_upcall_mask) == 1);
const _: () = assert!(offset_of!(VcpuInfo, evtchn_pending_sel) == 8);
const _: () = assert!(offset_of!(VcpuInfo, arch_cr2) == 16);
const _: () = assert!(offset_of!(VcpuInfo, arch_pad) == 24);
const _: () = assert!(offset_of!(VcpuInfo, time) == 32);
const _: () = assert!(offset_of!(VcpuInfo, time) + offset_of!(VcpuTimeInfo, tsc_timestamp) == 40);
const _: () = assert!(offset_of!(VcpuInfo, time) + offset_of!(VcpuTimeInfo, system_time) == 48);
const _: () =
    assert!(offset_of!(VcpuInfo, time) + offset_of!(VcpuTimeInfo, tsc_to_system_mul) == 56);
const _: () = assert!(offset_of!(VcpuInfo, time) + offset_of!(VcpuTimeInfo, tsc_shift) == 60);
const _: () = assert!(offset_of!(VcpuInfo, time) + offset_of!(VcpuTimeInfo, flags) == 61);
const _: () = assert!(offset_of!(SharedInfo, vcpu_info) == 0);
const _: () = assert!(offset_of!(SharedInfo, evtchn_pending) == 2048);
const _: () = assert!(offset_of!(SharedInfo, evtchn_mask) == 2560);
const _: () = assert!(offset_of!(SharedInfo, wc_version) == 3072);
const _: () = assert!(offset_of!(SharedInfo, wc_sec) == 3076);
const _: () = assert!(offset_of!(SharedInfo, wc_nsec) == 3080);
const _: () = assert!(offset_of!(SharedInfo, wc_sec_hi) == 3084);
const _: () = assert!(offset_of!(SharedInfo, arch_max_pfn) == 3088);
const _: () = assert!(offset_of!(SharedInfo, arch_pfn_to_mfn_frame_list_list) == 3096);
const _: () = assert!(offset_of!(SharedInfo, arch_nmi_reason) == 3104);
const _: () = assert!(offset_of!(SharedInfo, arch_p2m_cr3) == 3112);
const _: () = assert!(offset_of!(SharedInfo, arch_p2m_vaddr) == 3120);
const _: () = assert!(offset_of!(SharedInfo, arch_p2m_generation) == 3128);
const _: () = assert!(size_of::<SharedInfo>() == 3136);

/// One page of the image, reserved so that the shared_info frame can be
/// mapped over it. Only ever touched through raw pointers and atomics.
#[repr(C, align(4096))]
struct ReservedPage(UnsafeCell<[u8; 4096]>);

// SAFETY: the page's contents are only accessed through the atomics of
// `SharedInfo` once mapped; before that nobody reads or writes it.
unsafe impl Sync for ReservedPage {}

/// The virtual page the shared_info frame is mapped over (a .bss page).
static SHARED_INFO_PAGE: ReservedPage = ReservedPage(UnsafeCell::new([0; 4096]));

/// The mapped shared_info, or null before [`map`] succeeded.
static SHARED_INFO: AtomicPtr<SharedInfo> = AtomicPtr::new(core::ptr::null_mut());

/// Pages a vcpu's vcpu_info can be moved to with [`register_vcpu_info`], one
/// per vcpu the runtime runs.
static VCPU_INFO_PAGES: [ReservedPage; MAX_VCPUS] =
    [const { ReservedPage(UnsafeCell::new([0; 4096])) }; MAX_VCPUS];

/// Where each vcpu's vcpu_info lives after registration (null = its slot
/// in shared_info).
static REGISTERED: [AtomicPtr<VcpuInfo>; MAX_VCPUS] =
    [const { AtomicPtr::new(core::ptr::null_mut()) }; MAX_VCPUS];

/// VCPUOP_register_vcpu_info.
pub const VCPUOP_REGISTER_VCPU_INFO: u64 = 10;

/// struct vcpu_register_vcpu_info (16 bytes; spec §7.11).
#[repr(C)]
pub struct VcpuRegisterVcpuInfo {
    /// Frame holding the new vcpu_info.
    pub mfn: u64,
    /// Byte offset in that frame.
    pub offset: u32,
    /// Reserved.
    pub rsvd: u32,
}
const _: () = assert!(size_of::<VcpuRegisterVcpuInfo>() == 16);
const _: () = assert!(offset_of!(VcpuRegisterVcpuInfo, offset) == 8);

/// Moves `vcpu`'s vcpu_info to byte `offset` of the runtime's page for that
/// vcpu with VCPUOP_register_vcpu_info (spec §3.6). The hypervisor checks
/// `offset`; on success the runtime uses the new place from then on.
pub fn register_vcpu_info(vcpu: u32, offset: u32) -> Result<(), Errno> {
    let page = VCPU_INFO_PAGES.get(vcpu as usize).ok_or(Errno::EINVAL)?;
    let slot = REGISTERED.get(vcpu as usize).ok_or(Errno::EINVAL)?;
    let base = page.0.get();
    let mfn = crate::smp::machine_frame(base as u64).ok_or(Errno::EINVAL)?;
    let mut arg = VcpuRegisterVcpuInfo {
        mfn,
        offset,
        rsvd: 0,
    };
    // SAFETY: the hypervisor reads 16 bytes from a live local; the page it
    // then writes is the runtime's reserved page for this vcpu, which only
    // the atomics of `VcpuInfo` ever touch.
    let rc = unsafe {
        crate::hypercall::hypercall3(
            crate::hypercall::nr::VCPU_OP,
            VCPUOP_REGISTER_VCPU_INFO,
            u64::from(vcpu),
            (&raw mut arg) as u64,
        )
    };
    Errno::unit(rc)?;
    // The hypervisor accepted `offset`, so the area lies inside the page and
    // is 8-aligned (spec §3.6).
    let info = base
        .cast::<u8>()
        .wrapping_add(offset as usize)
        .cast::<VcpuInfo>();
    // Release pairs with the Acquire in `vcpu_info`.
    slot.store(info, Ordering::Release);
    Ok(())
}

/// `vcpu`'s vcpu_info: where it was registered, else its shared_info slot.
pub fn vcpu_info(vcpu: u32) -> Option<&'static VcpuInfo> {
    // Acquire pairs with the Release in `register_vcpu_info`.
    let registered = REGISTERED.get(vcpu as usize)?.load(Ordering::Acquire);
    // SAFETY: non-null only after the hypervisor accepted the area inside
    // the runtime's static page for this vcpu; VcpuInfo is all atomics.
    match unsafe { registered.as_ref() } {
        Some(info) => Some(info),
        None => get()?.vcpu(vcpu as usize),
    }
}

/// Page-table entry bits for the mapping: present, writable, accessed, dirty.
const PTE_FLAGS: u64 = 0x1 | 0x2 | 0x20 | 0x40;

/// Maps the frame at `start_info.shared_info` (a machine address) over the
/// reserved page with `update_va_mapping(va, ma | P|RW|A|D, UVMF_INVLPG)`.
pub fn map(start_info: &StartInfo) -> Result<&'static SharedInfo, Errno> {
    let page = SHARED_INFO_PAGE.0.get();
    let va = page as u64;
    let pte = (start_info.shared_info & !0xfff) | PTE_FLAGS;
    // SAFETY: the reserved page is used for nothing but this mapping; no
    // reference to its old contents exists (it is only reached through
    // `SHARED_INFO`, which is still null).
    let rc = unsafe { update_va_mapping(va, pte, UVMF_INVLPG) };
    Errno::unit(rc)?;
    let shared = page.cast::<SharedInfo>();
    // Release pairs with the Acquire in `get`.
    SHARED_INFO.store(shared, Ordering::Release);
    // SAFETY: `shared` points at a page now backed by the shared_info frame,
    // mapped for the rest of the guest's life; SharedInfo is 3136 bytes of
    // atomics, 4096-aligned, so any bytes are valid values.
    Ok(unsafe { &*shared })
}

/// The mapped shared_info page, if [`map`] has run.
pub fn get() -> Option<&'static SharedInfo> {
    // Acquire pairs with the Release in `map`.
    let shared = SHARED_INFO.load(Ordering::Acquire);
    // SAFETY: non-null only after `map` succeeded; the mapping lives forever
    // and the type is all atomics.
    unsafe { shared.as_ref() }
}

/// Word index and bit mask of `port` in the 2-level bitmaps.
pub fn port_bit(port: u32) -> (usize, u64) {
    ((port / 64) as usize, 1u64 << (port % 64))
}

impl SharedInfo {
    /// vcpu `vcpu`'s vcpu_info, if it has a slot.
    pub fn vcpu(&self, vcpu: usize) -> Option<&VcpuInfo> {
        self.vcpu_info.get(vcpu)
    }

    /// vcpu 0's vcpu_info (always present).
    pub fn vcpu0(&self) -> &VcpuInfo {
        &self.vcpu_info[0]
    }

    fn word(bitmap: &[AtomicU64; BITMAP_WORDS], port: u32) -> Option<(&AtomicU64, u64)> {
        let (word, bit) = port_bit(port);
        bitmap.get(word).map(|w| (w, bit))
    }

    /// Whether `port`'s pending bit is set (false beyond the bitmap).
    pub fn is_pending(&self, port: u32) -> bool {
        Self::word(&self.evtchn_pending, port)
            .is_some_and(|(w, bit)| w.load(Ordering::SeqCst) & bit != 0)
    }

    /// Whether `port`'s mask bit is set (true beyond the bitmap, as in Xen).
    pub fn is_masked(&self, port: u32) -> bool {
        Self::word(&self.evtchn_mask, port)
            .is_none_or(|(w, bit)| w.load(Ordering::SeqCst) & bit != 0)
    }

    /// Sets `port`'s mask bit (guest-side mask, as Linux does).
    pub fn mask(&self, port: u32) {
        if let Some((w, bit)) = Self::word(&self.evtchn_mask, port) {
            w.fetch_or(bit, Ordering::SeqCst);
        }
    }

    /// Clears `port`'s mask bit without asking the hypervisor to re-raise.
    pub fn clear_mask(&self, port: u32) {
        if let Some((w, bit)) = Self::word(&self.evtchn_mask, port) {
            w.fetch_and(!bit, Ordering::SeqCst);
        }
    }

    /// Clears `port`'s pending bit.
    pub fn clear_pending(&self, port: u32) {
        if let Some((w, bit)) = Self::word(&self.evtchn_pending, port) {
            w.fetch_and(!bit, Ordering::SeqCst);
        }
    }
}

impl VcpuInfo {
    /// Whether selector bit `port / 64` is set.
    pub fn selector_has(&self, port: u32) -> bool {
        let (word, _) = port_bit(port);
        self.evtchn_pending_sel.load(Ordering::SeqCst) & (1u64 << word) != 0
    }

    /// Whether `evtchn_upcall_pending` is set.
    pub fn upcall_pending(&self) -> bool {
        self.evtchn_upcall_pending.load(Ordering::SeqCst) != 0
    }

    /// Whether `evtchn_upcall_mask` is set.
    pub fn upcall_masked(&self) -> bool {
        self.evtchn_upcall_mask.load(Ordering::SeqCst) != 0
    }
}
