//! `start_info`: the page the hypervisor hands a PV guest in `rsi` at entry
//! (spec §7.7; public/xen.h). Offsets asserted with the spec's numbers.

use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicPtr, Ordering};

/// The magic string prefix of a 64-bit PV start_info.
pub const MAGIC: &str = "xen-3.0-x86_64";

/// SIF flag: the domain is privileged.
pub const SIF_PRIVILEGED: u32 = 1 << 0;
/// SIF flag: the domain is the initial (control) domain.
pub const SIF_INITDOMAIN: u32 = 1 << 1;
/// SIF flag: `mod_start` is a PFN, not a virtual address.
pub const SIF_MOD_START_PFN: u32 = 1 << 3;

/// The start_info page (1168 bytes), as laid out by the hypervisor.
#[repr(C)]
pub struct StartInfo {
    /// "xen-3.0-x86_64", NUL-terminated.
    pub magic: [u8; 32],
    /// Total pages allocated to the domain.
    pub nr_pages: u64,
    /// Machine address of the shared_info page.
    pub shared_info: u64,
    /// SIF_* flags.
    pub flags: u32,
    /// Explicit padding before `store_mfn`.
    pub _pad0: [u8; 4],
    /// Machine frame of the xenstore ring (domU).
    pub store_mfn: u64,
    /// Event channel of the xenstore ring (domU).
    pub store_evtchn: u32,
    /// Explicit padding before the console union.
    pub _pad1: [u8; 4],
    /// The console union, as raw words: domU `{mfn: u64, evtchn: u32}`,
    /// dom0 `{info_off: u32, info_size: u32}`. See the accessors.
    pub console: [u32; 4],
    /// Virtual address of the top-level page table.
    pub pt_base: u64,
    /// Number of bootstrap page-table frames.
    pub nr_pt_frames: u64,
    /// Virtual address of the p2m array.
    pub mfn_list: u64,
    /// Virtual address (or PFN) of the module.
    pub mod_start: u64,
    /// Length of the module in bytes.
    pub mod_len: u64,
    /// The guest's command line, NUL-terminated.
    pub cmd_line: [u8; 1024],
    /// dom0: pages in the initial mapping.
    pub first_p2m_pfn: u64,
    /// dom0: p2m frames outside the initial mapping.
    pub nr_p2m_frames: u64,
}

const _: () = assert!(size_of::<StartInfo>() == 1168);
const _: () = assert!(offset_of!(StartInfo, magic) == 0);
const _: () = assert!(offset_of!(StartInfo, nr_pages) == 32);
const _: () = assert!(offset_of!(StartInfo, shared_info) == 40);
const _: () = assert!(offset_of!(StartInfo, flags) == 48);
const _: () = assert!(offset_of!(StartInfo, store_mfn) == 56);
const _: () = assert!(offset_of!(StartInfo, store_evtchn) == 64);
const _: () = assert!(offset_of!(StartInfo, console) == 72);
const _: () = assert!(offset_of!(StartInfo, pt_base) == 88);
const _: () = assert!(offset_of!(StartInfo, nr_pt_frames) == 96);
const _: () = assert!(offset_of!(StartInfo, mfn_list) == 104);
const _: () = assert!(offset_of!(StartInfo, mod_start) == 112);
const _: () = assert!(offset_of!(StartInfo, mod_len) == 120);
const _: () = assert!(offset_of!(StartInfo, cmd_line) == 128);
const _: () = assert!(offset_of!(StartInfo, first_p2m_pfn) == 1152);
const _: () = assert!(offset_of!(StartInfo, nr_p2m_frames) == 1160);

/// Bytes of a NUL-terminated array up to (not including) the first NUL.
fn until_nul(bytes: &[u8]) -> &[u8] {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    bytes.get(..end).unwrap_or(bytes)
}

impl StartInfo {
    /// The magic string, or "" if it is not valid UTF-8.
    pub fn magic_str(&self) -> &str {
        core::str::from_utf8(until_nul(&self.magic)).unwrap_or("")
    }

    /// Whether the magic starts with "xen-3.0-x86_64".
    pub fn has_valid_magic(&self) -> bool {
        self.magic_str().starts_with(MAGIC)
    }

    /// The command line, or "" if it is not valid UTF-8.
    pub fn cmd_line_str(&self) -> &str {
        core::str::from_utf8(until_nul(&self.cmd_line)).unwrap_or("")
    }

    /// Whether the space-separated command line contains `word`.
    pub fn has_arg(&self, word: &str) -> bool {
        self.cmd_line_str().split(' ').any(|w| w == word)
    }

    /// The value of a `key=value` word on the command line.
    pub fn arg_value(&self, key: &str) -> Option<&str> {
        self.cmd_line_str()
            .split(' ')
            .find_map(|w| w.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }

    /// Whether this is the initial domain (dom0 on Xen).
    pub fn is_initial_domain(&self) -> bool {
        self.flags & SIF_INITDOMAIN != 0
    }

    /// dom0 form of the console union: (info_off, info_size).
    pub fn dom0_console_info(&self) -> (u32, u32) {
        (self.console[0], self.console[1])
    }

    /// domU form of the console union: (mfn, evtchn).
    pub fn domu_console(&self) -> (u64, u32) {
        (
            u64::from(self.console[0]) | (u64::from(self.console[1]) << 32),
            self.console[2],
        )
    }
}

/// The start_info page handed to vcpu 0, once the runtime recorded it.
static START_INFO: AtomicPtr<StartInfo> = AtomicPtr::new(core::ptr::null_mut());

/// Records the start_info page (called once by the runtime at entry).
pub(crate) fn set(start_info: &'static StartInfo) {
    // Release pairs with the Acquire in `get`.
    START_INFO.store(
        (start_info as *const StartInfo).cast_mut(),
        Ordering::Release,
    );
}

/// The start_info page, after the runtime's entry recorded it.
pub fn get() -> Option<&'static StartInfo> {
    // Acquire pairs with the Release in `set`.
    let pointer = START_INFO.load(Ordering::Acquire);
    // SAFETY: non-null only once `set` stored a `&'static StartInfo`; the
    // runtime never writes through it.
    unsafe { pointer.as_ref() }
}
