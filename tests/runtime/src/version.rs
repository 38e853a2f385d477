//! `xen_version` (hypercall 17; spec §7.12).

use crate::hypercall::{hypercall2, nr};

/// XENVER_version: returns (major << 16) | minor.
pub const XENVER_VERSION: u64 = 0;
/// XENVER_extraversion: fills a char[16].
pub const XENVER_EXTRAVERSION: u64 = 1;

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
