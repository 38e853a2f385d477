//! loom model checks of a send racing VCPUOP_register_vcpu_info of its
//! notify vcpu (spec §3.6). Run with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p evtchn-core --test register_vcpu_info_loom --release
//! ```
//!
//! (`cargo xtask test` does.) Senders reach a vcpu that never started to
//! move its vcpu_info at its legacy slot in shared_info, without asking the
//! view (`Domain::vcpu_info_after_raise` has the argument). The hypervisor
//! announces a move (`DomainHandle::vcpu_info_moves`) before it copies the
//! old vcpu_info into the new area, publishes the area, stores
//! `evtchn_pending_sel = ~0` there and raises the upcall. Here vcpu 0 of
//! domain 1 registers its own vcpu_info that way and then, back in the
//! guest, takes the upcall in the new area (spec §3.7: clear
//! upcall_pending, take the selector, handle each pending unmasked port),
//! while another thread sends toward vcpu 0 (lock-free on an IPI port, or
//! through the locked path from another domain). The property: the event
//! is handled by that upcall, or it is still pending with the selector bit
//! of its word and upcall_pending set in the new area (so the guest's next
//! upcall gets it).
//!
//! The model fails, as it should, if a sender looks the vcpu_info up (reads
//! the announcement) before its pending test-and-set, as the 2-level
//! set_pending did before: the guest can then rescan between the lookup and
//! the bit. The hypervisor-side order (announcement before the publication
//! and the `~0` store, a SeqCst publication) does not show here: with the
//! guest taking the upcall on the registering vcpu after the hypercall, its
//! own locked exchange orders the rescan after the whole registration, and
//! the model passes with the announcement moved after the `~0` store or
//! without the publication's barrier. That order matters for a guest that
//! reads the new area from another vcpu while the registration runs; a
//! three-thread model of that is too large for loom here (no result in ten
//! minutes), so the argument at `Domain::vcpu_info_after_raise` stands for
//! it alone.
#![cfg(loom)]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed model run"
)]

mod loom_support;
use loom_support::check;

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use loom::thread;

use evtchn_core::abi::{SharedInfo, VcpuInfo};
use evtchn_core::{DomId, DomainConfig, Domains, NoPirqs, Notify, Port, SharedInfoView, VcpuId};

const DOM1: DomId = DomId(1);
const DOM2: DomId = DomId(2);

/// Counts kicks of domain 1's vcpu 0.
#[derive(Default)]
struct Kicks(AtomicUsize);

impl Notify for Kicks {
    fn kick_vcpu(&self, domain: DomId, vcpu: VcpuId) {
        if (domain, vcpu) == (DOM1, VcpuId(0)) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn wake_poller(&self, _domain: DomId, _vcpu: VcpuId) {}
}

/// A heap shared page whose vcpu 0 moves its vcpu_info to `area` once
/// `published` is set (the hypervisor's registered-area word).
struct MovablePage {
    page: std::sync::Arc<SharedInfo>,
    area: std::sync::Arc<VcpuInfo>,
    published: std::sync::Arc<AtomicBool>,
}

impl SharedInfoView for MovablePage {
    fn shared_info(&self) -> &SharedInfo {
        &self.page
    }

    fn vcpu_info(&self, vcpu: VcpuId) -> Option<&VcpuInfo> {
        // SeqCst, as the hypervisor's `vcpu_info_in`.
        if vcpu == VcpuId(0) && self.published.load(Ordering::SeqCst) {
            return Some(&self.area);
        }
        self.page.vcpu_info.get(vcpu.0 as usize)
    }
}

/// A plain heap page (domain 2, the interdomain sender).
struct Page(std::sync::Arc<SharedInfo>);

impl SharedInfoView for Page {
    fn shared_info(&self) -> &SharedInfo {
        &self.0
    }
}

struct World {
    domains: Domains<Kicks, NoPirqs>,
    page: std::sync::Arc<SharedInfo>,
    area: std::sync::Arc<VcpuInfo>,
    published: std::sync::Arc<AtomicBool>,
}

impl World {
    /// Domain 1 (one vcpu, on the movable page) and domain 2.
    fn new() -> Self {
        let domains = Domains::new(Kicks::default(), NoPirqs);
        let page = std::sync::Arc::new(SharedInfo::new());
        let area = std::sync::Arc::new(VcpuInfo::new());
        let published = std::sync::Arc::new(AtomicBool::new(false));
        let view: std::sync::Arc<dyn SharedInfoView> = std::sync::Arc::new(MovablePage {
            page: page.clone(),
            area: area.clone(),
            published: published.clone(),
        });
        let config = |domid| DomainConfig {
            max_evtchn_port: 3,
            ..DomainConfig::new(domid, 1)
        };
        domains.create_domain(config(DOM1), view).unwrap();
        let other: std::sync::Arc<dyn SharedInfoView> =
            std::sync::Arc::new(Page(std::sync::Arc::new(SharedInfo::new())));
        domains.create_domain(config(DOM2), other).unwrap();
        World {
            domains,
            page,
            area,
            published,
        }
    }

    /// Guest acknowledgement of the setup's events on domain 1.
    fn quiesce(&self) {
        self.page.evtchn_pending[0].store(0, Ordering::SeqCst);
        let legacy = &self.page.vcpu_info[0];
        legacy.evtchn_upcall_pending.store(0, Ordering::SeqCst);
        legacy.evtchn_pending_sel.store(0, Ordering::SeqCst);
    }

    /// VCPUOP_register_vcpu_info of vcpu 0 by itself, in the hypervisor's
    /// order and orderings (`hypercall::vcpu_op::register_vcpu_info`).
    fn register_vcpu_info(&self) {
        self.domains
            .handle(DOM1)
            .unwrap()
            .vcpu_info_moves(VcpuId(0));
        let (old, new) = (&self.page.vcpu_info[0], &*self.area);
        let copy = |from: &loom::sync::atomic::AtomicU8, to: &loom::sync::atomic::AtomicU8| {
            to.store(from.load(Ordering::SeqCst), Ordering::SeqCst);
        };
        copy(&old.evtchn_upcall_pending, &new.evtchn_upcall_pending);
        copy(&old.evtchn_upcall_mask, &new.evtchn_upcall_mask);
        new.evtchn_pending_sel.store(
            old.evtchn_pending_sel.load(Ordering::SeqCst),
            Ordering::SeqCst,
        );
        self.published.store(true, Ordering::SeqCst);
        // The hypervisor publishes with a locked compare-and-swap, a full
        // barrier; loom models SeqCst accesses only as acquire/release (see
        // `evtchn_core::sync::after_test_and_set`), its fences fully.
        fence(Ordering::SeqCst);
        new.evtchn_pending_sel.store(u64::MAX, Ordering::SeqCst);
        self.domains.vcpu_mark_events_pending(DOM1, VcpuId(0));
    }

    /// The guest on vcpu 0 takes the upcall in its new vcpu_info: whether
    /// it handled `port`.
    fn take_upcall(&self, port: Port) -> bool {
        let info = &*self.area;
        info.evtchn_upcall_pending.store(0, Ordering::SeqCst);
        let words = info.evtchn_pending_sel.swap(0, Ordering::SeqCst);
        // The guest's exchange is a locked instruction, a full barrier
        // (see `evtchn_core::sync::after_test_and_set` for why loom needs
        // this fence).
        fence(Ordering::SeqCst);
        if words & 1 == 0 {
            return false;
        }
        let ready = self.page.evtchn_pending[0].load(Ordering::SeqCst)
            & !self.page.evtchn_mask[0].load(Ordering::SeqCst);
        let bit = 1 << port.0;
        ready & bit != 0 && self.page.evtchn_pending[0].fetch_and(!bit, Ordering::SeqCst) & bit != 0
    }

    /// The property (see the module doc).
    fn assert_not_lost(&self, port: Port, handled: bool) {
        if handled {
            return;
        }
        assert_ne!(
            self.page.evtchn_pending[0].load(Ordering::SeqCst) & (1 << port.0),
            0,
            "the send vanished"
        );
        assert_ne!(
            self.area.evtchn_pending_sel.load(Ordering::SeqCst) & 1,
            0,
            "pending, but the selector bit is clear in the new vcpu_info"
        );
        assert_eq!(
            self.area.evtchn_upcall_pending.load(Ordering::SeqCst),
            1,
            "pending, but upcall_pending is clear in the new vcpu_info"
        );
        assert!(self.domains.notify().0.load(Ordering::SeqCst) > 0);
    }
}

/// Run `send` on one thread while vcpu 0 registers its vcpu_info and then,
/// back in the guest, takes the upcall in the new area; then check the
/// property.
fn race(world: &loom::sync::Arc<World>, port: Port, send: fn(&World)) {
    let sender = {
        let world = world.clone();
        thread::spawn(move || send(&world))
    };
    world.register_vcpu_info();
    let handled = world.take_upcall(port);
    sender.join().unwrap();
    world.assert_not_lost(port, handled);
}

/// A lock-free send on an IPI port of vcpu 0 (`Domain::send_lock_free`)
/// racing the registration of vcpu 0's vcpu_info and the guest's upcall
/// handler in the new area.
#[test]
fn lock_free_send_racing_register_vcpu_info_is_not_lost() {
    check(
        "lock_free_send_racing_register_vcpu_info_is_not_lost",
        || {
            let world = loom::sync::Arc::new(World::new());
            let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
            assert_eq!(port, Port(1));
            world.quiesce();
            race(&world, port, |world| {
                world.domains.send(DOM1, Port(1)).unwrap();
            });
        },
    );
}

/// An interdomain send from domain 2 to a port of vcpu 0 (the locked path,
/// `Domain::set_pending`) racing the same registration and handler.
#[test]
fn interdomain_send_racing_register_vcpu_info_is_not_lost() {
    check(
        "interdomain_send_racing_register_vcpu_info_is_not_lost",
        || {
            let world = loom::sync::Arc::new(World::new());
            let unbound = world
                .domains
                .alloc_unbound(DOM1, DomId::SELF, DOM2)
                .unwrap();
            let remote = world.domains.bind_interdomain(DOM2, DOM1, unbound).unwrap();
            assert_eq!(remote, Port(1));
            world.quiesce();
            race(&world, unbound, |world| {
                world.domains.send(DOM2, Port(1)).unwrap();
            });
        },
    );
}
