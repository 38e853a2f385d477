//! Views with a fixed shared_info page and settled vcpu_infos
//! (`SharedInfoView::fixed_shared_info`, `settled_vcpu_info`): senders
//! reach them with plain loads, and must still find a vcpu_info that moved
//! once (as VCPUOP_register_vcpu_info moves it: announced with
//! `DomainHandle::vcpu_info_moves`, then settled by the hypervisor's
//! `vcpu_mark_events_pending` of that vcpu).
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test setup: a panic is a failed test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use evtchn_core::abi::{SharedInfo, VcpuInfo};
use evtchn_core::{DomId, DomainConfig, Domains, NoPirqs, Notify, SharedInfoView, VcpuId};

const DOM1: DomId = DomId(1);

#[derive(Default)]
struct Kicks(AtomicU32);

impl Notify for Kicks {
    fn kick_vcpu(&self, _domain: DomId, _vcpu: VcpuId) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_poller(&self, _domain: DomId, _vcpu: VcpuId) {}
}

/// A fixed page whose vcpu 1 moves its vcpu_info once, to `area`, when
/// `moved` is set: settled only from then on (vcpu 0 keeps its legacy
/// slot and is never settled, as in the hypervisor).
struct MovingView {
    page: &'static SharedInfo,
    area: &'static VcpuInfo,
    moved: AtomicBool,
}

impl SharedInfoView for MovingView {
    fn shared_info(&self) -> &SharedInfo {
        self.page
    }
    fn vcpu_info(&self, vcpu: VcpuId) -> Option<&VcpuInfo> {
        self.settled_vcpu_info(vcpu)
            .or_else(|| self.page.vcpu_info.get(vcpu.0 as usize))
    }
    fn fixed_shared_info(&self) -> Option<&'static SharedInfo> {
        Some(self.page)
    }
    fn settled_vcpu_info(&self, vcpu: VcpuId) -> Option<&'static VcpuInfo> {
        (vcpu == VcpuId(1) && self.moved.load(Ordering::SeqCst)).then_some(self.area)
    }
}

fn selector(info: &VcpuInfo) -> u64 {
    info.evtchn_pending_sel.swap(0, Ordering::SeqCst)
}

#[test]
fn sends_follow_a_vcpu_info_that_moved_once() {
    let view = Arc::new(MovingView {
        page: Box::leak(Box::new(SharedInfo::new())),
        area: Box::leak(Box::new(VcpuInfo::new())),
        moved: AtomicBool::new(false),
    });
    let domains = Domains::new(Kicks::default(), NoPirqs);
    let shared: Arc<dyn SharedInfoView> = view.clone();
    domains
        .create_domain(DomainConfig::new(DOM1, 2), shared)
        .unwrap();
    let handle = domains.handle(DOM1).unwrap();
    let on_vcpu1 = domains.bind_ipi(DOM1, VcpuId(1)).unwrap();
    let on_vcpu0 = domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    let clear = |port: evtchn_core::Port| {
        view.page.evtchn_pending[0].fetch_and(!(1 << port.0), Ordering::SeqCst);
    };

    // Before the move: the legacy slot of vcpu 1.
    domains.send_from(&handle, on_vcpu1).unwrap();
    assert_eq!(selector(&view.page.vcpu_info[1]), 1);
    assert_eq!(selector(view.area), 0);
    clear(on_vcpu1);

    // The hypervisor announces the move, moves it and raises the upcall
    // Xen raises then.
    handle.vcpu_info_moves(VcpuId(1));
    view.moved.store(true, Ordering::SeqCst);
    domains.vcpu_mark_events_pending(DOM1, VcpuId(1));
    assert_eq!(view.area.evtchn_upcall_pending.load(Ordering::SeqCst), 1);
    view.area.evtchn_upcall_pending.store(0, Ordering::SeqCst);

    // From now on every send toward vcpu 1 reaches the new area.
    let kicks_before = domains.notify().0.load(Ordering::SeqCst);
    domains.send_from(&handle, on_vcpu1).unwrap();
    assert_eq!(selector(view.area), 1);
    assert_eq!(view.area.evtchn_upcall_pending.load(Ordering::SeqCst), 1);
    assert_eq!(selector(&view.page.vcpu_info[1]), 0);
    assert_eq!(domains.notify().0.load(Ordering::SeqCst), kicks_before + 1);

    // vcpu 0 (never settled) still gets its legacy slot, through the view.
    domains.send_from(&handle, on_vcpu0).unwrap();
    assert_eq!(selector(&view.page.vcpu_info[0]), 1);
    assert_eq!(
        view.page.evtchn_pending[0].load(Ordering::SeqCst),
        (1 << on_vcpu0.0) | (1 << on_vcpu1.0)
    );
}

#[test]
fn a_static_page_is_fixed_and_its_legacy_slots_settled() {
    let page: &'static SharedInfo = Box::leak(Box::new(SharedInfo::new()));
    // Called on the reference (`&page`): `page.method()` would pick the
    // heap page's implementation, which fixes nothing.
    assert!(SharedInfoView::fixed_shared_info(&page).is_some());
    assert!(std::ptr::eq(
        SharedInfoView::settled_vcpu_info(&page, VcpuId(3)).unwrap(),
        &page.vcpu_info[3]
    ));
    assert!(SharedInfoView::settled_vcpu_info(&page, VcpuId(32)).is_none());

    let domains = Domains::new(Kicks::default(), NoPirqs);
    domains
        .create_domain(DomainConfig::new(DOM1, 4), Arc::new(page))
        .unwrap();
    let port = domains.bind_ipi(DOM1, VcpuId(3)).unwrap();
    page.vcpu_info[3]
        .evtchn_pending_sel
        .store(0, Ordering::SeqCst);
    page.evtchn_pending[0].store(0, Ordering::SeqCst);
    page.vcpu_info[3]
        .evtchn_upcall_pending
        .store(0, Ordering::SeqCst);
    domains.send(DOM1, port).unwrap();
    assert_eq!(selector(&page.vcpu_info[3]), 1);
    assert_eq!(
        page.vcpu_info[3]
            .evtchn_upcall_pending
            .load(Ordering::SeqCst),
        1
    );
}

/// A fixed page that counts the lookups of vcpu_info through the view.
struct CountingView {
    page: &'static SharedInfo,
    lookups: AtomicU32,
}

impl SharedInfoView for CountingView {
    fn shared_info(&self) -> &SharedInfo {
        self.page
    }
    fn vcpu_info(&self, vcpu: VcpuId) -> Option<&VcpuInfo> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.page.vcpu_info.get(vcpu.0 as usize)
    }
    fn fixed_shared_info(&self) -> Option<&'static SharedInfo> {
        Some(self.page)
    }
}

#[test]
fn a_vcpu_is_on_its_legacy_slot_without_asking_the_view_until_its_move_is_announced() {
    let view = Arc::new(CountingView {
        page: Box::leak(Box::new(SharedInfo::new())),
        lookups: AtomicU32::new(0),
    });
    let domains = Domains::new(Kicks::default(), NoPirqs);
    let shared: Arc<dyn SharedInfoView> = view.clone();
    domains
        .create_domain(DomainConfig::new(DOM1, 2), shared)
        .unwrap();
    let handle = domains.handle(DOM1).unwrap();
    let port = domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    let rearm = || {
        view.page.evtchn_pending[0].store(0, Ordering::SeqCst);
        view.page.vcpu_info[0]
            .evtchn_upcall_pending
            .store(0, Ordering::SeqCst);
        selector(&view.page.vcpu_info[0])
    };
    rearm();

    domains.send_from(&handle, port).unwrap();
    assert_eq!(rearm(), 1, "the legacy slot's selector");
    assert_eq!(view.lookups.load(Ordering::SeqCst), 0);

    // A hostile or confused caller: a vcpu the domain does not have.
    handle.vcpu_info_moves(VcpuId(7));
    domains.send_from(&handle, port).unwrap();
    assert_eq!(rearm(), 1);
    assert_eq!(view.lookups.load(Ordering::SeqCst), 0);

    // Announced (and not settled: the view gives no settled vcpu_info):
    // every raise asks the view, after the test-and-set.
    handle.vcpu_info_moves(VcpuId(0));
    handle.vcpu_info_moves(VcpuId(0));
    domains.send_from(&handle, port).unwrap();
    assert_eq!(rearm(), 1);
    assert_eq!(view.lookups.load(Ordering::SeqCst), 1);
    domains.send(DOM1, port).unwrap();
    assert_eq!(rearm(), 1);
    assert_eq!(view.lookups.load(Ordering::SeqCst), 2);
}
