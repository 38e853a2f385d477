//! `xen_version` (hypercall 17; spec §7.12).

use crate::hypercall::{hypercall2, nr};

/// XENVER_version: returns (major << 16) | minor.
pub const XENVER_VERSION: u64 = 0;
/// XENVER_extraversion: fills a char[16].
pub const XENVER_EXTRAVERSION: u64 = 1;
/// XENVER_get_features: fills a xen_feature_info.
pub const XENVER_GET_FEATURES: u64 = 6;
/// XENVER_pagesize: returns the page size.
pub const XENVER_PAGESIZE: u64 = 7;

/// struct xen_feature_info (8 bytes).
#[repr(C)]
pub struct XenFeatureInfo {
    /// IN: which 32-bit word of the feature bitmap.
    pub submap_idx: u32,
    /// OUT: the word.
    pub submap: u32,
}
const _: () = assert!(core::mem::size_of::<XenFeatureInfo>() == 8);
const _: () = assert!(core::mem::offset_of!(XenFeatureInfo, submap) == 4);

/// XENVER_get_features for word `submap_idx` of the XENFEAT bitmap.
pub fn features(submap_idx: u32) -> Result<u32, crate::Errno> {
    let mut info = XenFeatureInfo {
        submap_idx,
        submap: 0,
    };
    // SAFETY: the hypervisor reads and writes the 8-byte local.
    let rc = unsafe { hypercall2(nr::XEN_VERSION, XENVER_GET_FEATURES, (&raw mut info) as u64) };
    crate::Errno::unit(rc).map(|()| info.submap)
}

/// XENVER_pagesize.
pub fn page_size() -> i64 {
    // SAFETY: XENVER_pagesize ignores its pointer argument.
    unsafe { hypercall2(nr::XEN_VERSION, XENVER_PAGESIZE, 0) }
}

/// Issues `xen_version(command, null)`; for tests of unknown commands.
pub fn raw(command: u64) -> i64 {
    // SAFETY: a null argument: a command that used it would fault in the
    // hypervisor's copy and return -EFAULT, never touch guest memory.
    unsafe { hypercall2(nr::XEN_VERSION, command, 0) }
}

/// The hypervisor's version as (major, minor).
pub fn version() -> (u32, u32) {
    // SAFETY: XENVER_version ignores its pointer argument.
    let rc = unsafe { hypercall2(nr::XEN_VERSION, XENVER_VERSION, 0) };
    let raw = rc as u64;
    (((raw >> 16) & 0xffff) as u32, (raw & 0xffff) as u32)
}

/// The extra-version string (e.g. ".7"), NUL-terminated in a 16-byte array.
pub fn extraversion() -> [u8; 16] {
    let mut buffer = [0u8; 16];
    // SAFETY: the hypervisor writes at most 16 bytes into the local array.
    unsafe {
        hypercall2(
            nr::XEN_VERSION,
            XENVER_EXTRAVERSION,
            buffer.as_mut_ptr() as u64,
        )
    };
    buffer
}

/// A cheap hypercall whose only purpose is the return path: the hypervisor
/// delivers a pending upcall on the way back (spec §3.4; Linux uses the same
/// call after unmasking).
pub fn touch() {
    // SAFETY: XENVER_version with a null pointer reads and writes nothing.
    unsafe { hypercall2(nr::XEN_VERSION, XENVER_VERSION, 0) };
}
