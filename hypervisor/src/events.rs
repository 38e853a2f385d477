//! The hypervisor's side of evtchn-core: the one [`Domains`] registry, the
//! [`Notify`] implementation that wakes and kicks vcpus, and the
//! shared_info view handed to each domain.

use alloc::sync::Arc;

use evtchn_core::abi::SharedInfo;
use evtchn_core::{DomId, Domains, NoPirqs, Notify, SharedInfoView, VcpuId};

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
    // Interrupt context possible (timer VIRQ): never spin on the registry.
    if let Some(domain) = crate::domain::try_get(domain)
        && let Some(vcpu) = domain.vcpu(vcpu)
    {
        crate::sched::kick(vcpu);
    }
}

/// A domain's shared_info frame, as evtchn-core sees it.
struct SharedPage(&'static SharedInfo);

impl SharedInfoView for SharedPage {
    fn shared_info(&self) -> &SharedInfo {
        self.0
    }
}

/// The view evtchn-core gets of a domain's shared_info page.
pub fn shared_view(page: &'static SharedInfo) -> Arc<dyn SharedInfoView> {
    Arc::new(SharedPage(page))
}

static DOMAINS: spin::Once<Domains<VcpuNotify, NoPirqs>> = spin::Once::new();

/// The event-channel registry.
pub fn domains() -> &'static Domains<VcpuNotify, NoPirqs> {
    DOMAINS.call_once(|| Domains::new(VcpuNotify, NoPirqs))
}
