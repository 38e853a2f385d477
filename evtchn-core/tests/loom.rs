//! loom model checks of evtchn-core's delivery paths against each other and
//! against a guest reading its shared page concurrently. Run with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p evtchn-core --test loom --release
//! ```
//!
//! (`cargo xtask test` does.) Under `cfg(loom)` the crate's `sync` module
//! hands out loom's atomics, locks and `Arc`, so loom explores every
//! interleaving of the threads below (no preemption bound: the models are
//! small enough to be exhaustive in seconds) and checks each for deadlock,
//! leaks and the property asserted at the end.
//!
//! The property is "no lost notification" (spec §3.3, §3.7): once a port is
//! pending and unmasked in the shared page, the selector bit of its word is
//! set in its notify vcpu's vcpu_info, `evtchn_upcall_pending` is set, and
//! the hypervisor was asked to kick that vcpu — so with the vcpu's upcall
//! mask clear the event will be delivered on its next entry.
#![cfg(loom)]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed model run"
)]

mod loom_support;
use loom_support::check;

use loom::sync::atomic::{AtomicUsize, Ordering, fence};
use loom::thread;

use evtchn_core::abi::SharedInfo;
use evtchn_core::{
    ChannelState, DomId, DomainConfig, Domains, NoPirqs, Notify, Port, SharedInfoView, VcpuId,
};

const DOM1: DomId = DomId(1);
const DOM2: DomId = DomId(2);
const VCPUS: u32 = 2;

/// Counts kicks per (domain 1 or 2, vcpu 0 or 1).
struct Kicks {
    counts: [AtomicUsize; 4],
}

impl Kicks {
    fn index(domain: DomId, vcpu: VcpuId) -> usize {
        (usize::from(domain.0) - 1) * 2 + vcpu.0 as usize
    }

    fn of(&self, domain: DomId, vcpu: VcpuId) -> usize {
        self.counts[Self::index(domain, vcpu)].load(Ordering::SeqCst)
    }
}

impl Notify for Kicks {
    fn kick_vcpu(&self, domain: DomId, vcpu: VcpuId) {
        self.counts[Self::index(domain, vcpu)].fetch_add(1, Ordering::SeqCst);
    }
    fn wake_poller(&self, _domain: DomId, _vcpu: VcpuId) {}
}

/// A heap shared page that the test keeps a handle to, so the "guest"
/// thread can read and write it while evtchn-core does.
struct Page(std::sync::Arc<SharedInfo>);

impl SharedInfoView for Page {
    fn shared_info(&self) -> &SharedInfo {
        &self.0
    }
}

struct World {
    domains: Domains<Kicks, NoPirqs>,
    pages: [std::sync::Arc<SharedInfo>; 2],
}

impl World {
    /// Domains 1 and 2, two vcpus each, at most 3 ports (one bucket).
    fn new() -> Self {
        let domains = Domains::new(
            Kicks {
                counts: std::array::from_fn(|_| AtomicUsize::new(0)),
            },
            NoPirqs,
        );
        let pages = [
            std::sync::Arc::new(SharedInfo::new()),
            std::sync::Arc::new(SharedInfo::new()),
        ];
        for (domid, page) in [DOM1, DOM2].into_iter().zip(&pages) {
            let view: std::sync::Arc<dyn SharedInfoView> = std::sync::Arc::new(Page(page.clone()));
            let config = DomainConfig {
                max_evtchn_port: 3,
                ..DomainConfig::new(domid, VCPUS)
            };
            domains.create_domain(config, view).unwrap();
        }
        World { domains, pages }
    }

    fn page(&self, domid: DomId) -> &SharedInfo {
        &self.pages[usize::from(domid.0) - 1]
    }

    fn is_pending(&self, domid: DomId, port: Port) -> bool {
        self.page(domid).evtchn_pending[0].load(Ordering::SeqCst) & (1 << port.0) != 0
    }

    fn mask(&self, domid: DomId, port: Port) {
        self.page(domid).evtchn_mask[0].fetch_or(1 << port.0, Ordering::SeqCst);
    }

    /// Guest acknowledgement of everything, as after handling setup noise.
    fn quiesce(&self, domid: DomId) {
        let page = self.page(domid);
        page.evtchn_pending[0].store(0, Ordering::SeqCst);
        for info in &page.vcpu_info {
            info.evtchn_upcall_pending.store(0, Ordering::SeqCst);
            info.evtchn_pending_sel.store(0, Ordering::SeqCst);
        }
    }

    /// The property: every pending, unmasked, allocated port of `domid` has
    /// reached its notify vcpu (selector bit, upcall_pending) and that vcpu
    /// was kicked at least once.
    fn assert_no_lost_notification(&self, domid: DomId) {
        let page = self.page(domid);
        let pending = page.evtchn_pending[0].load(Ordering::SeqCst);
        let mask = page.evtchn_mask[0].load(Ordering::SeqCst);
        for port in 1..64u32 {
            if (pending & !mask) & (1 << port) == 0 {
                continue;
            }
            let info = self.domains.channel_info(domid, Port(port)).unwrap();
            assert_ne!(
                info.state,
                ChannelState::Free,
                "{domid} port {port} is pending but free"
            );
            let vcpu = info.notify_vcpu;
            let vcpu_info = &page.vcpu_info[vcpu.0 as usize];
            assert_ne!(
                vcpu_info.evtchn_pending_sel.load(Ordering::SeqCst) & 1,
                0,
                "{domid} port {port}: selector bit of word 0 clear on {vcpu}"
            );
            assert_eq!(
                vcpu_info.evtchn_upcall_pending.load(Ordering::SeqCst),
                1,
                "{domid} port {port}: upcall_pending clear on {vcpu}"
            );
            assert!(
                self.domains.notify().of(domid, vcpu) > 0,
                "{domid} port {port}: {vcpu} never kicked"
            );
            assert!(self.domains.vcpu_has_deliverable_event(domid, vcpu));
        }
    }
}

/// EVTCHNOP_send on an IPI port racing EVTCHNOP_unmask of the same port
/// (the guest had masked it): whichever runs second must raise the upcall.
#[test]
fn send_racing_unmask_loses_no_notification() {
    check("send_racing_unmask_loses_no_notification", || {
        let world = loom::sync::Arc::new(World::new());
        let port = world.domains.bind_ipi(DOM1, VcpuId(1)).unwrap();
        world.mask(DOM1, port);
        let sender = {
            let world = world.clone();
            thread::spawn(move || world.domains.send(DOM1, port).unwrap())
        };
        world.domains.unmask(DOM1, port).unwrap();
        sender.join().unwrap();
        assert!(world.is_pending(DOM1, port));
        world.assert_no_lost_notification(DOM1);
        assert_eq!(world.domains.notify().of(DOM1, VcpuId(1)), 1);
        assert_eq!(world.domains.notify().of(DOM1, VcpuId(0)), 0);
    });
}

/// A send on one end of an interdomain pair racing close of the other end:
/// the send succeeds either way; afterwards the closed port is free and not
/// pending, the sender's end is unbound waiting for the closer, and no
/// pending bit is left on a free port.
#[test]
fn send_racing_close_of_peer_leaves_consistent_ends() {
    check("send_racing_close_of_peer_leaves_consistent_ends", || {
        let world = loom::sync::Arc::new(World::new());
        let dom2_port = world
            .domains
            .alloc_unbound(DOM2, DomId::SELF, DOM1)
            .unwrap();
        let dom1_port = world
            .domains
            .bind_interdomain(DOM1, DOM2, dom2_port)
            .unwrap();
        world.quiesce(DOM1);
        let sender = {
            let world = world.clone();
            thread::spawn(move || world.domains.send(DOM1, dom1_port))
        };
        world.domains.close(DOM2, dom2_port).unwrap();
        assert_eq!(sender.join().unwrap(), Ok(()));
        assert_eq!(
            world.domains.channel_info(DOM2, dom2_port).unwrap().state,
            ChannelState::Free
        );
        assert!(!world.is_pending(DOM2, dom2_port));
        assert!(matches!(
            world.domains.channel_info(DOM1, dom1_port).unwrap().state,
            ChannelState::Unbound { remote: DOM2, .. }
        ));
        assert_eq!(world.domains.active_channels(DOM2), Some(0));
        assert_eq!(world.domains.active_channels(DOM1), Some(1));
        world.assert_no_lost_notification(DOM1);
        world.assert_no_lost_notification(DOM2);
    });
}

/// Two senders (domain 2, over two interdomain channels) to two ports of
/// domain 1 that notify the same vcpu: both ports end pending, the shared
/// selector bit and upcall_pending are set, and the vcpu is kicked exactly
/// once (only the 0 → 1 edge of upcall_pending kicks).
#[test]
fn two_senders_to_one_vcpu_kick_it_exactly_once() {
    check("two_senders_to_one_vcpu_kick_it_exactly_once", || {
        let world = loom::sync::Arc::new(World::new());
        let mut pairs = Vec::new();
        for _ in 0..2 {
            let dom1_port = world
                .domains
                .alloc_unbound(DOM1, DomId::SELF, DOM2)
                .unwrap();
            let dom2_port = world
                .domains
                .bind_interdomain(DOM2, DOM1, dom1_port)
                .unwrap();
            world.domains.bind_vcpu(DOM1, dom1_port, VcpuId(1)).unwrap();
            pairs.push((dom1_port, dom2_port));
        }
        world.quiesce(DOM2);
        let senders: Vec<_> = pairs
            .iter()
            .map(|&(_, dom2_port)| {
                let world = world.clone();
                thread::spawn(move || world.domains.send(DOM2, dom2_port).unwrap())
            })
            .collect();
        for sender in senders {
            sender.join().unwrap();
        }
        for &(dom1_port, _) in &pairs {
            assert!(world.is_pending(DOM1, dom1_port));
        }
        world.assert_no_lost_notification(DOM1);
        assert_eq!(world.domains.notify().of(DOM1, VcpuId(1)), 1);
        assert_eq!(world.domains.notify().of(DOM1, VcpuId(0)), 0);
    });
}

/// A send on an IPI port racing the hypervisor's own
/// `vcpu_mark_events_pending` of the same vcpu (register_vcpu_info's
/// upcall): both test-and-set `evtchn_upcall_pending`, and only its 0 → 1
/// edge kicks, so the vcpu is kicked exactly once and the event is not
/// lost.
#[test]
fn send_racing_mark_events_pending_kicks_exactly_once() {
    check("send_racing_mark_events_pending_kicks_exactly_once", || {
        let world = loom::sync::Arc::new(World::new());
        let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
        world.quiesce(DOM1);
        let sender = {
            let world = world.clone();
            thread::spawn(move || world.domains.send(DOM1, port).unwrap())
        };
        world.domains.vcpu_mark_events_pending(DOM1, VcpuId(0));
        sender.join().unwrap();
        assert!(world.is_pending(DOM1, port));
        world.assert_no_lost_notification(DOM1);
        assert_eq!(world.domains.notify().of(DOM1, VcpuId(0)), 1);
    });
}

/// The guest's upcall handler (spec §3.7: clear upcall_pending, then take
/// the selector, then clear and handle each pending unmasked port) running
/// while the hypervisor sends on an IPI port twice. Every send is either
/// handled by the guest or still pending with the vcpu notified.
#[test]
fn guest_consumer_racing_sends_loses_no_event() {
    check("guest_consumer_racing_sends_loses_no_event", || {
        let world = loom::sync::Arc::new(World::new());
        let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
        let sender = {
            let world = world.clone();
            thread::spawn(move || {
                world.domains.send(DOM1, port).unwrap();
                world.domains.send(DOM1, port).unwrap();
            })
        };
        // The guest, on vcpu 0.
        let page = world.page(DOM1);
        let info = &page.vcpu_info[0];
        let mut handled = 0;
        info.evtchn_upcall_pending.store(0, Ordering::SeqCst);
        let words = info.evtchn_pending_sel.swap(0, Ordering::SeqCst);
        if words & 1 != 0 {
            let ready = page.evtchn_pending[0].load(Ordering::SeqCst)
                & !page.evtchn_mask[0].load(Ordering::SeqCst);
            if ready & (1 << port.0) != 0 {
                page.evtchn_pending[0].fetch_and(!(1 << port.0), Ordering::SeqCst);
                handled += 1;
            }
        }
        sender.join().unwrap();
        assert!(
            handled > 0 || world.is_pending(DOM1, port),
            "both sends vanished"
        );
        world.assert_no_lost_notification(DOM1);
    });
}

/// The guest unmasking a port itself, Linux-style (clear the mask bit, then
/// if pending set the selector and upcall_pending), racing a send: the
/// event ends up notified by one side or the other.
#[test]
fn guest_unmask_racing_send_loses_no_notification() {
    check("guest_unmask_racing_send_loses_no_notification", || {
        let world = loom::sync::Arc::new(World::new());
        let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
        world.mask(DOM1, port);
        let sender = {
            let world = world.clone();
            thread::spawn(move || world.domains.send(DOM1, port).unwrap())
        };
        let page = world.page(DOM1);
        let info = &page.vcpu_info[0];
        page.evtchn_mask[0].fetch_and(!(1 << port.0), Ordering::SeqCst);
        // The guest's locked bit clear is a full barrier (see
        // evtchn_core::sync::after_test_and_set for why loom needs this).
        fence(Ordering::SeqCst);
        let guest_raised = page.evtchn_pending[0].load(Ordering::SeqCst) & (1 << port.0) != 0
            && info.evtchn_pending_sel.fetch_or(1, Ordering::SeqCst) & 1 == 0
            && info.evtchn_upcall_pending.swap(1, Ordering::SeqCst) == 0;
        sender.join().unwrap();
        assert!(world.is_pending(DOM1, port));
        let selector_set = info.evtchn_pending_sel.load(Ordering::SeqCst) & 1 != 0;
        let upcall_set = info.evtchn_upcall_pending.load(Ordering::SeqCst) == 1;
        assert!(
            selector_set && upcall_set,
            "event pending but not signalled"
        );
        // The guest raised it itself (no kick needed: it is running), or the
        // hypervisor did and kicked.
        assert!(guest_raised || world.domains.notify().of(DOM1, VcpuId(0)) == 1);
    });
}

/// A lock-free send on an IPI port racing EVTCHNOP_close of that port
/// (crate doc, "Lock-free send"). The send linearises before the close
/// (rc 0; its bit, if any, is cleared by the close) or after it (-EINVAL);
/// either way the freed port ends not pending. A sender that set its bit
/// after the close cleared it must take it back.
#[test]
fn lock_free_send_racing_close_leaves_no_stale_bit() {
    check("lock_free_send_racing_close_leaves_no_stale_bit", || {
        let world = loom::sync::Arc::new(World::new());
        let port = world.domains.bind_ipi(DOM1, VcpuId(1)).unwrap();
        world.quiesce(DOM1);
        let sender = {
            let world = world.clone();
            thread::spawn(move || world.domains.send(DOM1, port))
        };
        world.domains.close(DOM1, port).unwrap();
        let sent = sender.join().unwrap();
        assert!(sent == Ok(()) || sent == Err(evtchn_core::Errno::EINVAL));
        assert_eq!(
            world.domains.channel_info(DOM1, port).unwrap().state,
            ChannelState::Free
        );
        assert!(
            !world.is_pending(DOM1, port),
            "stale pending bit on a free port"
        );
        world.assert_no_lost_notification(DOM1);
    });
}

/// A lock-free send on a loopback port racing close of that port: its
/// event lands on the peer port, which close leaves unbound with its
/// pending bit untouched. Whatever the interleaving, the closed port is not
/// pending, and if the peer is pending its vcpu was notified (a sender that
/// found the binding changed after its bit went in raises it under the
/// peer's lock).
#[test]
fn lock_free_loopback_send_racing_close_loses_no_notification() {
    check(
        "lock_free_loopback_send_racing_close_loses_no_notification",
        || {
            let world = loom::sync::Arc::new(World::new());
            let unbound = world
                .domains
                .alloc_unbound(DOM1, DomId::SELF, DomId::SELF)
                .unwrap();
            world.domains.bind_vcpu(DOM1, unbound, VcpuId(1)).unwrap();
            let local = world
                .domains
                .bind_interdomain(DOM1, DomId::SELF, unbound)
                .unwrap();
            world.quiesce(DOM1);
            let sender = {
                let world = world.clone();
                thread::spawn(move || world.domains.send(DOM1, local))
            };
            world.domains.close(DOM1, local).unwrap();
            let sent = sender.join().unwrap();
            assert!(sent == Ok(()) || sent == Err(evtchn_core::Errno::EINVAL));
            assert!(!world.is_pending(DOM1, local));
            assert!(matches!(
                world.domains.channel_info(DOM1, unbound).unwrap().state,
                ChannelState::Unbound { .. }
            ));
            world.assert_no_lost_notification(DOM1);
        },
    );
}

/// A lock-free send on an IPI port racing a close of the port, a new
/// bind_ipi that gets the same port (toward another vcpu) and a send on
/// the new binding. The new binding's event is never lost: its port ends
/// pending and notified on the new vcpu, also when the old sender's bit
/// landed on the new binding and the new send found it already set.
#[test]
fn lock_free_send_racing_close_and_rebind_loses_no_new_event() {
    check(
        "lock_free_send_racing_close_and_rebind_loses_no_new_event",
        || {
            let world = loom::sync::Arc::new(World::new());
            let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
            world.quiesce(DOM1);
            let sender = {
                let world = world.clone();
                thread::spawn(move || world.domains.send(DOM1, port))
            };
            world.domains.close(DOM1, port).unwrap();
            let rebound = world.domains.bind_ipi(DOM1, VcpuId(1)).unwrap();
            assert_eq!(rebound, port, "the lowest free port is reused");
            world.domains.send(DOM1, rebound).unwrap();
            let _ = sender.join().unwrap();
            assert!(
                world.is_pending(DOM1, rebound),
                "the new binding's event was lost"
            );
            world.assert_no_lost_notification(DOM1);
            assert!(world.domains.notify().of(DOM1, VcpuId(1)) > 0);
        },
    );
}
