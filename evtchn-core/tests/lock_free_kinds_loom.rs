//! loom models of the lock-free send (crate doc, "Lock-free send") for the
//! kind of port `tests/loom.rs` and `tests/fifo_loom.rs` cover least: the
//! loopback interdomain port (interdomain to another port of its own
//! domain, whose peer is a guest port). Its binding word names the *peer*
//! port, where the sender sets the pending bit; a switch to FIFO revokes
//! the word before copying the 2-level pending bits, and a close of either
//! end write-locks both channels, so the sender's reload of its word sees
//! every such change. Run with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p evtchn-core --test lock_free_kinds_loom --release
//! ```
//!
//! (`cargo xtask test` does.) The IPI kind's models are in those files:
//! send against close, against close and rebind (`loom.rs`), against the
//! switch to FIFO (`fifo_loom.rs`); the loopback send against a close of
//! the sender's own port is in `loom.rs`. Here: a loopback send against
//! the switch to FIFO, against a close of the peer port, and against a
//! close of the peer and a new binding that reuses its port. Each fails
//! when what it checks is taken away: the revoke (or the fences that order
//! it against the copy), or the writer's store of the word at lock
//! (checked by hand: see the models' docs). The close models need no
//! fence: the close clears the pending bit with a read-modify-write, which
//! a late sender's test-and-set reads from, and that orders the store at
//! lock before the sender's reload.
#![cfg(loom)]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed model run"
)]

mod loom_support;
use loom_support::check_bounded;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

use evtchn_core::abi::{
    EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_LINKED, EVTCHN_FIFO_MASKED, EVTCHN_FIFO_PENDING,
    EvtchnInitControl, SharedInfo,
};
use evtchn_core::sync::AtomicU32;
use evtchn_core::{
    ChannelState, DomId, DomainConfig, Domains, Errno, GuestFrame, NoPirqs, Notify, Port,
    SharedInfoView, VcpuId,
};

const DOM1: DomId = DomId(1);
const VCPUS: u32 = 2;
/// FIFO event words modelled: ports 0..8.
const WORDS: usize = 8;
/// The control block's frame and the event array's.
const CONTROL_GFN: u64 = 1;
const EVENT_GFN: u64 = 2;
/// The default FIFO priority's queue.
const QUEUE: usize = 7;

/// Counts kicks per vcpu of DOM1.
struct Kicks([AtomicUsize; VCPUS as usize]);

impl Kicks {
    fn of(&self, vcpu: VcpuId) -> usize {
        self.0[vcpu.0 as usize].load(Ordering::SeqCst)
    }
}

impl Notify for Kicks {
    fn kick_vcpu(&self, _domain: DomId, vcpu: VcpuId) {
        self.0[vcpu.0 as usize].fetch_add(1, Ordering::SeqCst);
    }
    fn wake_poller(&self, _domain: DomId, _vcpu: VcpuId) {}
}

struct Frame(std::sync::Arc<Vec<AtomicU32>>);

impl GuestFrame for Frame {
    fn words(&self) -> &[AtomicU32] {
        &self.0
    }
}

/// DOM1's shared page, control block and event array, kept by the test
/// so that it reads what the guest would.
struct Memory {
    shared: SharedInfo,
    control: std::sync::Arc<Vec<AtomicU32>>,
    events: std::sync::Arc<Vec<AtomicU32>>,
}

impl SharedInfoView for Memory {
    fn shared_info(&self) -> &SharedInfo {
        &self.shared
    }
    fn map_frame(&self, gfn: u64) -> Result<Box<dyn GuestFrame>, Errno> {
        match gfn {
            CONTROL_GFN => Ok(Box::new(Frame(self.control.clone()))),
            EVENT_GFN => Ok(Box::new(Frame(self.events.clone()))),
            _ => Err(Errno::EINVAL),
        }
    }
}

struct World {
    domains: Domains<Kicks, NoPirqs>,
    memory: std::sync::Arc<Memory>,
}

impl World {
    /// DOM1, two vcpus, 2-level, ports 1..=3 only.
    fn new() -> Self {
        let memory = std::sync::Arc::new(Memory {
            shared: SharedInfo::new(),
            control: std::sync::Arc::new((0..18).map(|_| AtomicU32::new(0)).collect()),
            events: std::sync::Arc::new((0..WORDS).map(|_| AtomicU32::new(0)).collect()),
        });
        let domains = Domains::new(Kicks(std::array::from_fn(|_| AtomicUsize::new(0))), NoPirqs);
        let view: std::sync::Arc<dyn SharedInfoView> = memory.clone();
        let config = DomainConfig {
            max_evtchn_port: 3,
            ..DomainConfig::new(DOM1, VCPUS)
        };
        domains.create_domain(config, view).unwrap();
        World { domains, memory }
    }

    /// A loopback pair: `(sender, peer)`, the peer notifying `vcpu`. The
    /// sender's binding word is the lock-free `LOOPBACK` kind naming the
    /// peer. Setup noise is acknowledged.
    fn loopback(&self, vcpu: VcpuId) -> (Port, Port) {
        let peer = self
            .domains
            .alloc_unbound(DOM1, DomId::SELF, DomId::SELF)
            .unwrap();
        self.domains.bind_vcpu(DOM1, peer, vcpu).unwrap();
        let sender = self
            .domains
            .bind_interdomain(DOM1, DomId::SELF, peer)
            .unwrap();
        self.quiesce();
        (sender, peer)
    }

    fn is_pending(&self, port: Port) -> bool {
        self.memory.shared.evtchn_pending[0].load(Ordering::SeqCst) & (1 << port.0) != 0
    }

    fn state(&self, port: Port) -> ChannelState {
        self.domains.channel_info(DOM1, port).unwrap().state
    }

    /// Guest acknowledgement of everything, as after handling setup noise.
    fn quiesce(&self) {
        let page = &self.memory.shared;
        page.evtchn_pending[0].store(0, Ordering::SeqCst);
        for info in &page.vcpu_info {
            info.evtchn_upcall_pending.store(0, Ordering::SeqCst);
            info.evtchn_pending_sel.store(0, Ordering::SeqCst);
        }
    }

    /// 2-level: every pending, unmasked port is bound, has its selector
    /// bit and `upcall_pending` on its notify vcpu, and that vcpu was
    /// kicked.
    fn assert_no_lost_notification(&self) {
        let page = &self.memory.shared;
        let pending = page.evtchn_pending[0].load(Ordering::SeqCst);
        let mask = page.evtchn_mask[0].load(Ordering::SeqCst);
        for port in 1..64u32 {
            if (pending & !mask) & (1 << port) == 0 {
                continue;
            }
            let info = self.domains.channel_info(DOM1, Port(port)).unwrap();
            assert_ne!(
                info.state,
                ChannelState::Free,
                "port {port} pending but free"
            );
            let vcpu_info = &page.vcpu_info[info.notify_vcpu.0 as usize];
            assert_ne!(
                vcpu_info.evtchn_pending_sel.load(Ordering::SeqCst) & 1,
                0,
                "port {port}: selector bit clear on {}",
                info.notify_vcpu
            );
            assert_eq!(
                vcpu_info.evtchn_upcall_pending.load(Ordering::SeqCst),
                1,
                "port {port}: upcall_pending clear on {}",
                info.notify_vcpu
            );
            assert!(
                self.domains.notify().of(info.notify_vcpu) > 0,
                "port {port}: {} never kicked",
                info.notify_vcpu
            );
        }
    }

    /// Switches DOM1 to FIFO (vcpu 0's control block).
    fn switch_to_fifo(&self) {
        let request = EvtchnInitControl {
            control_gfn: CONTROL_GFN,
            vcpu: VcpuId(0),
            ..EvtchnInitControl::default()
        };
        self.domains.init_control(DOM1, request).unwrap();
    }

    /// The ports linked on vcpu 0's default queue, in order, each
    /// unlinked and its pending bit cleared as a guest consumer would.
    /// Panics on a word reached but not LINKED.
    fn consume_fifo(&self) -> Vec<u32> {
        let (control, events) = (&self.memory.control, &self.memory.events);
        let mut handled = Vec::new();
        if control[0].swap(0, Ordering::SeqCst) & (1 << QUEUE) == 0 {
            return handled;
        }
        let mut head = control[2 + QUEUE].load(Ordering::SeqCst);
        while head != 0 {
            let word = &events[head as usize];
            let old = word.fetch_and(
                !(EVTCHN_FIFO_LINKED | EVTCHN_FIFO_LINK_MASK),
                Ordering::SeqCst,
            );
            assert_ne!(
                old & EVTCHN_FIFO_LINKED,
                0,
                "port {head} reached but not LINKED"
            );
            if old & EVTCHN_FIFO_PENDING != 0 && old & EVTCHN_FIFO_MASKED == 0 {
                word.fetch_and(!EVTCHN_FIFO_PENDING, Ordering::SeqCst);
                handled.push(head);
            }
            head = old & EVTCHN_FIFO_LINK_MASK;
        }
        handled
    }
}

/// A loopback send racing the domain's switch to FIFO (init_control). The
/// sender sets the *peer's* 2-level pending bit without the lock; the
/// switch revokes the sender's word before it copies the 2-level pending
/// bits, so a sender whose bit landed after the copy sees the revoke on
/// its reload and raises the peer again through FIFO. Once the event
/// array exists the peer port is pending there, linked on its queue and
/// handled exactly once; the sender's own port never is.
///
/// Fails (the event is lost) with `Channel::revoke_lock_free` emptied,
/// and with either `sync::after_test_and_set` fence it depends on taken
/// out (the switch's, between the revokes and the copy; the sender's,
/// between its test-and-set and its reload): loom models `SeqCst`
/// accesses only as acquire/release, so those fences stand for the single
/// order here.
#[test]
fn loopback_send_racing_the_switch_to_fifo_is_not_lost() {
    // As `fifo_loom`'s IPI model: two preemptions reach the bad instant
    // (the sender stopped between its word's load and its pending bit
    // while the whole switch runs).
    check_bounded(
        "loopback_send_racing_the_switch_to_fifo_is_not_lost",
        Some(2),
        || {
            let world = loom::sync::Arc::new(World::new());
            // The peer notifies vcpu 0, whose control block the switch
            // sets up.
            let (sender_port, peer) = world.loopback(VcpuId(0));
            let sender = {
                let world = world.clone();
                thread::spawn(move || world.domains.send(DOM1, sender_port).unwrap())
            };
            world.switch_to_fifo();
            sender.join().unwrap();
            world.domains.expand_array(DOM1, EVENT_GFN).unwrap();
            assert_eq!(world.domains.is_pending(DOM1, peer), Some(true));
            assert_eq!(world.domains.is_pending(DOM1, sender_port), Some(false));
            assert_eq!(world.consume_fifo(), [peer.0]);
            assert_eq!(world.domains.is_pending(DOM1, peer), Some(false));
        },
    );
}

/// A loopback send racing EVTCHNOP_close of the *peer* port (the one the
/// send raises). The close write-locks both ends, so the sender's word
/// changes; the send linearises before the close (its bit, if any, is
/// cleared with the peer) or after it (the sender's end is unbound then:
/// the send is dropped with rc 0). Either way the freed peer ends not
/// pending, and the sender's end is unbound toward its own domain.
///
/// Fails (a stale pending bit on the free port) with the writer's store of
/// the `LOCKED` word at lock taken out of `Channel::write_as`.
#[test]
fn loopback_send_racing_close_of_the_peer_leaves_no_stale_bit() {
    check_bounded(
        "loopback_send_racing_close_of_the_peer_leaves_no_stale_bit",
        None,
        || {
            let world = loom::sync::Arc::new(World::new());
            let (sender_port, peer) = world.loopback(VcpuId(1));
            let sender = {
                let world = world.clone();
                thread::spawn(move || world.domains.send(DOM1, sender_port))
            };
            world.domains.close(DOM1, peer).unwrap();
            assert_eq!(sender.join().unwrap(), Ok(()));
            assert_eq!(world.state(peer), ChannelState::Free);
            assert!(!world.is_pending(peer), "stale pending bit on a free port");
            assert!(!world.is_pending(sender_port));
            assert!(matches!(
                world.state(sender_port),
                ChannelState::Unbound { .. }
            ));
            world.assert_no_lost_notification();
        },
    );
}

/// A loopback send racing a close of the peer port, a bind_ipi that gets
/// the peer's port number (toward vcpu 1) and a send on the new binding.
/// The old sender's bit may land on the new binding, and the new send may
/// find it already set and stop: the old sender then sees its word
/// changed and raises the port under its lock. The new binding's event is
/// never lost: its port ends pending and notified on vcpu 1.
///
/// Fails (the new event lost, or a stale bit on the sender's port) with
/// the writer's store of the `LOCKED` word at lock taken out of
/// `Channel::write_as`.
#[test]
fn loopback_send_racing_close_and_rebind_of_the_peer_loses_no_new_event() {
    check_bounded(
        "loopback_send_racing_close_and_rebind_of_the_peer_loses_no_new_event",
        None,
        || {
            let world = loom::sync::Arc::new(World::new());
            let (sender_port, peer) = world.loopback(VcpuId(1));
            let sender = {
                let world = world.clone();
                thread::spawn(move || world.domains.send(DOM1, sender_port))
            };
            world.domains.close(DOM1, peer).unwrap();
            let rebound = world.domains.bind_ipi(DOM1, VcpuId(1)).unwrap();
            assert_eq!(rebound, peer, "the lowest free port is reused");
            world.domains.send(DOM1, rebound).unwrap();
            assert_eq!(sender.join().unwrap(), Ok(()));
            assert!(
                world.is_pending(rebound),
                "the new binding's event was lost"
            );
            assert!(!world.is_pending(sender_port));
            world.assert_no_lost_notification();
            assert!(world.domains.notify().of(VcpuId(1)) > 0);
        },
    );
}
