//! How evtchn-core reaches a domain's guest-visible pages.

use crate::abi::{SharedInfo, VcpuId, VcpuInfo};

/// A domain's shared_info page and its vcpus' vcpu_info areas, supplied by
/// the hypervisor (which maps the guest frames) or, in host tests, by a
/// [`SharedInfo`] on the heap.
///
/// Implementations return references to atomics only: the guest writes the
/// same memory concurrently, so nothing else may be formed over it.
pub trait SharedInfoView: Send + Sync {
    /// The shared_info page (its 2-level bitmaps and legacy vcpu_info slots).
    fn shared_info(&self) -> &SharedInfo;

    /// The vcpu_info currently in use by `vcpu`: the registered area if the
    /// guest moved it (VCPUOP_register_vcpu_info), else the legacy slot in
    /// shared_info; `None` for a vcpu ≥ 32 that registered nothing (events
    /// then set pending bits but raise no upcall).
    fn vcpu_info(&self, vcpu: VcpuId) -> Option<&VcpuInfo> {
        self.shared_info().vcpu_info.get(vcpu.0 as usize)
    }
}

impl SharedInfoView for SharedInfo {
    fn shared_info(&self) -> &SharedInfo {
        self
    }
}
