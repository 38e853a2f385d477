//! The lock-free send (IPI and loopback ports of a 2-level domain, crate
//! doc "Lock-free send") racing close and rebinding of the port it raises.
//!
//! Two kinds of test. Gated ones hold a sender at exactly the bad instant —
//! after it read the channel's binding word, before its pending
//! test-and-set — run a close (and a rebind) meanwhile, then let the sender
//! finish: its bit lands after the close cleared the port, and the sender
//! must take it back (port left free) or raise it on the new binding.
//! Stress ones run senders flat out against close, rebind and send, many
//! rounds, and check after each round that no free port is pending and
//! that the live binding's event is pending and notified.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed test"
)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::{self, ThreadId};

use evtchn_core::abi::SharedInfo;
use evtchn_core::{
    ChannelState, DomId, DomainConfig, Domains, Errno, NoPirqs, Notify, Port, SharedInfoView,
    VcpuId,
};

const DOM1: DomId = DomId(1);
const VCPUS: usize = 2;

/// Counts kicks per vcpu of DOM1.
#[derive(Default)]
struct Kicks([AtomicUsize; VCPUS]);

impl Notify for Kicks {
    fn kick_vcpu(&self, _domain: DomId, vcpu: VcpuId) {
        self.0[vcpu.0 as usize].fetch_add(1, Ordering::SeqCst);
    }
    fn wake_poller(&self, _domain: DomId, _vcpu: VcpuId) {}
}

/// DOM1's shared page; one chosen thread stops at chosen page lookups
/// until the test lets it go. A lock-free sender's lookups: 0 (shared_info)
/// after it read the binding word and before its test-and-set (its vcpu,
/// on its legacy slot, needs no lookup); 1 in the settling of a late bit,
/// under the port's lock, just before it clears or raises the bit.
struct GatedPage {
    page: SharedInfo,
    gated: Mutex<Option<ThreadId>>,
    stop_at: Mutex<Vec<usize>>,
    calls: AtomicUsize,
    reached: Barrier,
    release: Barrier,
}

impl SharedInfoView for GatedPage {
    fn shared_info(&self) -> &SharedInfo {
        let is_gated = *self.gated.lock().unwrap() == Some(thread::current().id());
        if is_gated {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            if self.stop_at.lock().unwrap().contains(&call) {
                self.reached.wait();
                self.release.wait();
            }
        }
        &self.page
    }
}

type TestDomains = Domains<Kicks, NoPirqs>;

struct World {
    domains: TestDomains,
    page: Arc<GatedPage>,
}

impl World {
    fn new() -> Arc<Self> {
        let page = Arc::new(GatedPage {
            page: SharedInfo::new(),
            gated: Mutex::new(None),
            stop_at: Mutex::new(vec![0]),
            calls: AtomicUsize::new(0),
            reached: Barrier::new(2),
            release: Barrier::new(2),
        });
        let domains = Domains::new(Kicks::default(), NoPirqs);
        let view: Arc<dyn SharedInfoView> = page.clone();
        domains
            .create_domain(DomainConfig::new(DOM1, VCPUS as u32), view)
            .unwrap();
        Arc::new(Self { domains, page })
    }

    fn shared(&self) -> &SharedInfo {
        &self.page.page
    }

    fn is_pending(&self, port: Port) -> bool {
        self.shared().evtchn_pending[0].load(Ordering::SeqCst) & (1 << port.0) != 0
    }

    fn state(&self, port: Port) -> ChannelState {
        self.domains.channel_info(DOM1, port).unwrap().state
    }

    fn kicks(&self, vcpu: VcpuId) -> usize {
        self.domains.notify().0[vcpu.0 as usize].load(Ordering::SeqCst)
    }

    /// The guest handled everything: no pending bit, selector or upcall.
    fn quiesce(&self) {
        let page = self.shared();
        page.evtchn_pending[0].store(0, Ordering::SeqCst);
        for info in &page.vcpu_info[..VCPUS] {
            info.evtchn_upcall_pending.store(0, Ordering::SeqCst);
            info.evtchn_pending_sel.store(0, Ordering::SeqCst);
        }
    }

    /// `port` is pending and reached `vcpu`: selector bit of word 0,
    /// upcall_pending, and at least `kicks_before + 1` kicks.
    fn assert_notified(&self, port: Port, vcpu: VcpuId, kicks_before: usize) {
        assert!(self.is_pending(port), "{port} lost its event");
        let info = &self.shared().vcpu_info[vcpu.0 as usize];
        assert_ne!(
            info.evtchn_pending_sel.load(Ordering::SeqCst) & 1,
            0,
            "{port} pending but the selector of {vcpu} is clear"
        );
        assert_eq!(info.evtchn_upcall_pending.load(Ordering::SeqCst), 1);
        assert!(self.kicks(vcpu) > kicks_before, "{vcpu} never kicked");
    }

    /// Start a sender on `port` that stops before its test-and-set; returns
    /// once it stands there.
    fn gated_sender(self: &Arc<Self>, port: Port) -> thread::JoinHandle<Result<(), Errno>> {
        let sender = {
            let world = self.clone();
            thread::spawn(move || {
                *world.page.gated.lock().unwrap() = Some(thread::current().id());
                world.domains.send(DOM1, port)
            })
        };
        self.page.reached.wait();
        sender
    }
}

#[test]
fn a_send_whose_bit_lands_after_close_takes_it_back() {
    let world = World::new();
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.quiesce();
    let sender = world.gated_sender(port);
    world.domains.close(DOM1, port).unwrap();
    world.page.release.wait();
    assert_eq!(sender.join().unwrap(), Ok(()));
    assert_eq!(world.state(port), ChannelState::Free);
    assert!(!world.is_pending(port), "stale pending bit on a free port");
}

#[test]
fn a_send_whose_bit_lands_on_a_new_binding_raises_it_there() {
    let world = World::new();
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.quiesce();
    let sender = world.gated_sender(port);
    world.domains.close(DOM1, port).unwrap();
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(1)).unwrap(), port);
    let kicks_before = world.kicks(VcpuId(1));
    world.page.release.wait();
    assert_eq!(sender.join().unwrap(), Ok(()));
    // The old binding's late bit is now the new binding's (a spurious event,
    // which the ABI allows): a send on the new binding that finds it set
    // stops there, so it must have been raised toward the new vcpu.
    world.domains.send(DOM1, port).unwrap();
    world.assert_notified(port, VcpuId(1), kicks_before);
}

/// The late sender settles its bit while a send on the new binding finds
/// it set and stops there: the late sender, holding the port's lock, sees
/// the binding and raises the bit rather than clearing it.
#[test]
fn a_send_that_relies_on_a_late_bit_of_the_old_binding_is_not_lost() {
    let world = World::new();
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.quiesce();
    *world.page.stop_at.lock().unwrap() = vec![0, 1];
    let sender = world.gated_sender(port);
    world.domains.close(DOM1, port).unwrap();
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(1)).unwrap(), port);
    let kicks_before = world.kicks(VcpuId(1));
    world.page.release.wait();
    // The old sender set the bit after the close and stands in its
    // settling, before touching it again.
    world.page.reached.wait();
    assert!(world.is_pending(port));
    world.domains.send(DOM1, port).unwrap();
    world.page.release.wait();
    assert_eq!(sender.join().unwrap(), Ok(()));
    world.assert_notified(port, VcpuId(1), kicks_before);
}

#[test]
fn a_loopback_send_whose_bit_lands_after_the_peer_closed_takes_it_back() {
    let world = World::new();
    let unbound = world
        .domains
        .alloc_unbound(DOM1, DomId::SELF, DomId::SELF)
        .unwrap();
    let local = world
        .domains
        .bind_interdomain(DOM1, DomId::SELF, unbound)
        .unwrap();
    world.quiesce();
    let sender = world.gated_sender(local);
    world.domains.close(DOM1, unbound).unwrap();
    world.page.release.wait();
    assert_eq!(sender.join().unwrap(), Ok(()));
    assert_eq!(world.state(unbound), ChannelState::Free);
    assert!(matches!(world.state(local), ChannelState::Unbound { .. }));
    assert!(
        !world.is_pending(unbound),
        "stale pending bit on a free port"
    );
}

const ROUNDS: usize = 3000;

/// The race both stress tests run, `ROUNDS` times: a sender thread sends
/// on `sent` flat out while this thread closes `target` (the port those
/// sends raise), binds it again as an IPI toward vcpu 1 (on odd rounds) and
/// sends on the new binding. After the sender stops: a free `target` is not
/// pending; a rebound one is pending and notified on vcpu 1. `reset` then
/// restores the binding the next round starts from (its argument: whether
/// `target` was rebound).
fn race_close_rebind_and_send(
    world: &Arc<World>,
    sent: Port,
    target: Port,
    mut reset: impl FnMut(bool),
) {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(2));
    let done = Arc::new(Barrier::new(2));
    let sender = {
        let (world, stop, start, done) = (world.clone(), stop.clone(), start.clone(), done.clone());
        thread::spawn(move || {
            for _ in 0..ROUNDS {
                start.wait();
                while !stop.load(Ordering::SeqCst) {
                    let result = world.domains.send(DOM1, sent);
                    assert!(matches!(result, Ok(()) | Err(Errno::EINVAL)), "{result:?}");
                }
                done.wait();
            }
        })
    };
    for round in 0..ROUNDS {
        world.quiesce();
        stop.store(false, Ordering::SeqCst);
        start.wait();
        world.domains.close(DOM1, target).unwrap();
        let rebound = round % 2 == 1;
        let kicks_before = world.kicks(VcpuId(1));
        if rebound {
            assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(1)).unwrap(), target);
            world.domains.send(DOM1, target).unwrap();
        }
        stop.store(true, Ordering::SeqCst);
        done.wait();
        if rebound {
            world.assert_notified(target, VcpuId(1), kicks_before);
        } else {
            assert_eq!(world.state(target), ChannelState::Free);
            assert!(
                !world.is_pending(target),
                "round {round}: stale pending bit on a free port"
            );
        }
        reset(rebound);
    }
    sender.join().unwrap();
}

/// IPI ports: the sends raise the port being closed and rebound.
#[test]
fn sends_racing_close_rebind_and_send_leave_no_stale_bit_and_lose_no_event() {
    let world = World::new();
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    race_close_rebind_and_send(&world, port, port, |rebound| {
        if rebound {
            world.domains.close(DOM1, port).unwrap();
        }
        assert!(!world.is_pending(port));
        assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap(), port);
    });
}

/// Loopback pairs: the sends go out on one end while the other (the port
/// they raise) is closed and rebound.
#[test]
fn loopback_sends_racing_close_of_the_peer_and_rebind_lose_nothing() {
    let world = World::new();
    let connect = || {
        let unbound = world
            .domains
            .alloc_unbound(DOM1, DomId::SELF, DomId::SELF)
            .unwrap();
        let local = world
            .domains
            .bind_interdomain(DOM1, DomId::SELF, unbound)
            .unwrap();
        (unbound, local)
    };
    let (target, local) = connect();
    race_close_rebind_and_send(&world, local, target, |rebound| {
        // Back to a connected pair at the same ports.
        if rebound {
            world.domains.close(DOM1, target).unwrap();
        }
        world.domains.close(DOM1, local).unwrap();
        assert_eq!(connect(), (target, local));
    });
}
