//! The hypervisor's side of evtchn-core: the one [`Domains`] registry, the
//! [`Notify`] implementation that wakes and kicks vcpus, and the
//! shared_info view handed to each domain.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::AtomicU32;

use evtchn_core::abi::{SharedInfo, VcpuInfo};
use evtchn_core::{DomId, Domains, Errno, Notify, SharedInfoView, VcpuId};

use crate::domain::Domain;
use crate::memory::guest_frames::GuestFrame;
use crate::pirq::HostPirqs;

/// Waking vcpus for evtchn-core. A leaf: it sets a flag and sends an IPI.
pub struct VcpuNotify;

impl Notify for VcpuNotify {
    fn kick_vcpu(&self, domain: DomId, vcpu: VcpuId) {
        wake(domain, vcpu);
    }

    fn wake_poller(&self, domain: DomId, vcpu: VcpuId) {
        wake(domain, vcpu);
    }
}

fn wake(domain: DomId, vcpu: VcpuId) {
    // Most wake-ups go to the domain running on this pCPU (a send to
    // itself, its own timer VIRQ): no registry lookup for those.
    let is_done = crate::running::with(|running, _| {
        if running.id != domain {
            return false;
        }
        if let Some(vcpu) = running.vcpu(vcpu) {
            crate::sched::kick(vcpu);
        }
        true
    });
    if is_done == Some(true) {
        return;
    }
    // Interrupt context possible (timer VIRQ): never spin on the registry.
    if let Some(domain) = crate::domain::try_get(domain)
        && let Some(vcpu) = domain.vcpu(vcpu)
    {
        crate::sched::kick(vcpu);
    }
}

/// A domain's shared_info frame, and the frames a FIFO guest may hand
/// over, as evtchn-core sees them.
struct SharedPage {
    shared_info: &'static SharedInfo,
    /// Registered vcpu_info areas (the domain's).
    vcpu_info_areas: Arc<[core::sync::atomic::AtomicU64]>,
    /// The domain's memory frames that may become FIFO pages (its own, not
    /// its page tables), sorted by address.
    mappable: Box<[GuestFrame]>,
}

impl SharedInfoView for SharedPage {
    fn shared_info(&self) -> &SharedInfo {
        self.shared_info
    }

    fn vcpu_info(&self, vcpu: VcpuId) -> Option<&VcpuInfo> {
        crate::domain::vcpu_info_in(
            self.shared_info,
            &self.vcpu_info_areas,
            &self.mappable,
            vcpu,
        )
    }

    /// The shared_info frame stays mapped for good.
    fn fixed_shared_info(&self) -> Option<&'static SharedInfo> {
        Some(self.shared_info)
    }

    /// A registered vcpu_info never moves again (register_vcpu_info
    /// refuses a second one, and calls `vcpu_mark_events_pending` after
    /// the move, when evtchn-core asks); a legacy slot may still move.
    fn settled_vcpu_info(&self, vcpu: VcpuId) -> Option<&'static VcpuInfo> {
        // Acquire: pairs with the Release that published the area.
        let area = self.vcpu_info_areas.get(vcpu.0 as usize)?;
        if area.load(core::sync::atomic::Ordering::Acquire) == 0 {
            return None;
        }
        crate::domain::vcpu_info_in(
            self.shared_info,
            &self.vcpu_info_areas,
            &self.mappable,
            vcpu,
        )
    }

    /// A PV guest names its own machine frame (gfn = mfn). Sluice's guest
    /// frames stay mapped in the direct map for good, so "mapping" one is
    /// finding it; -EINVAL if it is not the domain's or holds a page table.
    fn map_frame(&self, gfn: u64) -> Result<Box<dyn evtchn_core::GuestFrame>, Errno> {
        let phys = gfn.checked_mul(4096).ok_or(Errno::EINVAL)?;
        let index = self
            .mappable
            .binary_search_by_key(&phys, |frame| frame.phys())
            .map_err(|_| Errno::EINVAL)?;
        let frame = *self.mappable.get(index).ok_or(Errno::EINVAL)?;
        Ok(Box::new(FifoPage(frame)))
    }
}

/// A guest frame handed over for the FIFO ABI.
struct FifoPage(GuestFrame);

impl evtchn_core::GuestFrame for FifoPage {
    fn words(&self) -> &[AtomicU32] {
        self.0.words()
    }
}

/// The view evtchn-core gets of a domain's shared_info page and frames.
pub fn shared_view(domain: &Domain) -> Arc<dyn SharedInfoView> {
    let mut mappable: Vec<GuestFrame> = domain
        .memory_frames()
        .filter(|frame| !domain.is_page_table_frame(frame.phys()))
        .collect();
    mappable.sort_unstable();
    Arc::new(SharedPage {
        shared_info: domain.shared_info,
        vcpu_info_areas: domain.vcpu_info_areas.clone(),
        mappable: mappable.into_boxed_slice(),
    })
}

static DOMAINS: spin::Once<Domains<VcpuNotify, HostPirqs>> = spin::Once::new();

/// The event-channel registry.
pub fn domains() -> &'static Domains<VcpuNotify, HostPirqs> {
    DOMAINS.call_once(|| Domains::new(VcpuNotify, HostPirqs))
}
