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
    /// Inlined into the senders: the kick of the vcpu this pCPU runs is
    /// two loads and two compares (see [`wake`]), less than a call.
    #[inline(always)]
    fn kick_vcpu(&self, domain: DomId, vcpu: VcpuId) {
        wake(domain, vcpu);
    }

    #[inline]
    fn wake_poller(&self, domain: DomId, vcpu: VcpuId) {
        wake(domain, vcpu);
    }
}

/// Xen's vcpu_kick(), for an event sent to `vcpu` of `domain` (and the
/// wake-up of a poller, done the same way).
///
/// Most wake-ups go to the vcpu this pCPU runs (a send to itself, its own
/// timer VIRQ). For that one nothing is needed beyond the bits the caller
/// already set, as in Xen, which kicks the current vcpu only from
/// interrupt context (Sluice's interrupt return path checks anyway). Why:
/// the vcpu's flow is live on this pCPU (a suspended flow leaves the
/// running slot before interrupts are on again: `sched::suspend` keeps
/// them off into the loop, which clears the slot; and the loop, after
/// setting the slot, only resumes or enters the vcpu). So after this call
/// the flow passes a check of its own, in this pCPU's program order: the
/// upcall check on its way back to the guest, or `sched::block_until`'s
/// readiness check after its `has_wakeup` swap (that section runs with
/// interrupts off: no wake-up from this pCPU falls inside it). The
/// `has_wakeup` store of `sched::kick` would be cleared by that swap
/// before anyone reads it (it is read only while the vcpu is blocked and
/// suspended), and `kick` sends no IPI to its own pCPU: this path skips
/// both, and with them the registry and the scheduler's state (no locked
/// instruction: two loads from the per-CPU block and two compares).
#[inline(always)]
fn wake(domain: DomId, vcpu: VcpuId) {
    let is_done = crate::running::with(|running, running_vcpu| {
        if running.id != domain {
            return false;
        }
        // The vcpu this pCPU runs: nothing to do (above). Another vcpu of
        // its domain (a send to a sibling): no registry lookup.
        if running_vcpu.id != vcpu {
            kick_sibling(running, vcpu);
        }
        true
    });
    if is_done != Some(true) {
        kick_in_other_domain(domain, vcpu);
    }
}

/// [`wake`] for another vcpu of the domain this pCPU runs.
#[inline(never)]
fn kick_sibling(domain: &Domain, vcpu: VcpuId) {
    if let Some(vcpu) = domain.vcpu(vcpu) {
        crate::sched::kick(vcpu);
    }
}

/// [`wake`] for a vcpu of a domain this pCPU does not run.
#[inline(never)]
fn kick_in_other_domain(domain: DomId, vcpu: VcpuId) {
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
        Ok(Box::new(FifoPage(frame.words())))
    }
}

/// A guest frame handed over for the FIFO ABI, as its words (found once:
/// every FIFO send reads them).
struct FifoPage(&'static [AtomicU32; 1024]);

impl evtchn_core::GuestFrame for FifoPage {
    fn words(&self) -> &[AtomicU32] {
        self.0
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
