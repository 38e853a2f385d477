//! A loom model of FIFO set_pending against a concurrent guest consumer
//! (spec §4.3, §4.5): every interleaving of the hypervisor linking events
//! onto a queue while the guest unlinks them. Run with
//! `RUSTFLAGS="--cfg loom" cargo test -p evtchn-core --test fifo_loom --release`.
//!
//! A third model has the guest mask and unmask the tail while the next
//! event is linked behind it (the BUSY protocol). A fourth sends on a
//! 2-level port while the domain switches to FIFO: 2-level senders take
//! no ABI lock, so the event must survive the switch's copy of the
//! 2-level pending bits (`tests/abi_switch_race.rs` forces the one bad
//! instant deterministically).
//!
//! Checked in each interleaving: every event sent is handled exactly once,
//! every word the consumer reaches through the queue is LINKED and links
//! only to a port that was sent, and at the end no word is left LINKED or
//! pending and no queue is ready.
#![cfg(loom)]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "a panic in a model run is a failed interleaving"
)]

use std::sync::Arc;

use evtchn_core::abi::{
    EVTCHN_FIFO_BUSY, EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_LINKED, EVTCHN_FIFO_MASKED,
    EVTCHN_FIFO_PENDING, EvtchnInitControl, SharedInfo,
};
use evtchn_core::sync::{AtomicU32, Ordering};
use evtchn_core::{
    DomId, DomainConfig, Domains, Errno, GuestFrame, NoPirqs, Notify, Port, SharedInfoView, VcpuId,
};

const DOM1: DomId = DomId(1);
/// Event words modelled: ports 0..8 (the rest of the page is absent).
const WORDS: usize = 8;

struct Frame(Arc<Vec<AtomicU32>>);

impl GuestFrame for Frame {
    fn words(&self) -> &[AtomicU32] {
        &self.0
    }
}

struct Memory {
    shared: SharedInfo,
    control: Arc<Vec<AtomicU32>>,
    events: Arc<Vec<AtomicU32>>,
}

impl SharedInfoView for Memory {
    fn shared_info(&self) -> &SharedInfo {
        &self.shared
    }
    fn map_frame(&self, gfn: u64) -> Result<Box<dyn GuestFrame>, Errno> {
        match gfn {
            1 => Ok(Box::new(Frame(self.control.clone()))),
            2 => Ok(Box::new(Frame(self.events.clone()))),
            _ => Err(Errno::EINVAL),
        }
    }
}

struct Quiet;

impl Notify for Quiet {
    fn kick_vcpu(&self, _domain: DomId, _vcpu: VcpuId) {}
    fn wake_poller(&self, _domain: DomId, _vcpu: VcpuId) {}
}

struct World {
    domains: Domains<Quiet, NoPirqs>,
    memory: Arc<Memory>,
}

/// DOM1 with one vcpu, still on 2-level.
fn two_level_world() -> World {
    let memory = Arc::new(Memory {
        shared: SharedInfo::new(),
        control: Arc::new((0..18).map(|_| AtomicU32::new(0)).collect()),
        events: Arc::new((0..WORDS).map(|_| AtomicU32::new(0)).collect()),
    });
    let domains = Domains::new(Quiet, NoPirqs);
    let view: Arc<dyn SharedInfoView> = memory.clone();
    domains
        .create_domain(DomainConfig::new(DOM1, 1), view)
        .unwrap();
    World { domains, memory }
}

/// Switches DOM1 to FIFO: vcpu 0's control block in frame 1.
fn init_control_on_vcpu0(domains: &Domains<Quiet, NoPirqs>) {
    let request = EvtchnInitControl {
        control_gfn: 1,
        vcpu: VcpuId(0),
        ..EvtchnInitControl::default()
    };
    domains.init_control(DOM1, request).unwrap();
}

fn world(ports: usize) -> (World, Vec<Port>) {
    let world = two_level_world();
    init_control_on_vcpu0(&world.domains);
    world.domains.expand_array(DOM1, 2).unwrap();
    let bound = (0..ports)
        .map(|_| world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap())
        .collect();
    (world, bound)
}

/// One pass of the guest consumer over queue 7 (the default priority):
/// returns the ports handled. Panics on a corrupted queue.
fn consume(world: &World, local_head: &mut u32, sent: &[Port]) -> Vec<u32> {
    let control = &world.memory.control;
    let events = &world.memory.events;
    let mut handled = Vec::new();
    let mut ready = control[0].swap(0, Ordering::SeqCst);
    while ready & (1 << 7) != 0 {
        let mut head = *local_head;
        if head == 0 {
            head = control[2 + 7].load(Ordering::SeqCst);
        }
        if head == 0 {
            break;
        }
        let word = &events[head as usize];
        let mut old = word.load(Ordering::SeqCst);
        loop {
            let new = old & !(EVTCHN_FIFO_LINKED | EVTCHN_FIFO_LINK_MASK);
            match word.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(seen) => old = seen,
            }
        }
        assert_ne!(
            old & EVTCHN_FIFO_LINKED,
            0,
            "port {head} reached but not LINKED"
        );
        let next = old & EVTCHN_FIFO_LINK_MASK;
        assert!(
            next == 0 || sent.iter().any(|port| port.0 == next),
            "port {head} links to {next}"
        );
        *local_head = next;
        if next == 0 {
            ready &= !(1 << 7);
        }
        if old & EVTCHN_FIFO_PENDING != 0 && old & EVTCHN_FIFO_MASKED == 0 {
            word.fetch_and(!EVTCHN_FIFO_PENDING, Ordering::SeqCst);
            handled.push(head);
        }
        ready |= control[0].swap(0, Ordering::SeqCst);
    }
    // Give back what was not finished, as a guest re-arming its loop.
    control[0].fetch_or(ready, Ordering::SeqCst);
    handled
}

fn check_quiet(world: &World, ports: &[Port]) {
    for port in ports {
        let word = world.memory.events[port.0 as usize].load(Ordering::SeqCst);
        assert_eq!(
            word & (EVTCHN_FIFO_LINKED | EVTCHN_FIFO_PENDING),
            0,
            "port {}",
            port.0
        );
    }
    assert_eq!(world.memory.control[0].load(Ordering::SeqCst), 0);
}

#[test]
fn set_pending_of_two_ports_against_a_draining_guest() {
    loom::model(|| {
        let (world, ports) = world(2);
        let world = Arc::new(world);
        let sender = {
            let (world, ports) = (world.clone(), ports.clone());
            loom::thread::spawn(move || {
                for port in ports {
                    world.domains.send(DOM1, port).unwrap();
                }
            })
        };
        let mut local_head = 0;
        let mut handled = consume(&world, &mut local_head, &ports);
        sender.join().unwrap();
        handled.extend(consume(&world, &mut local_head, &ports));
        handled.sort_unstable();
        assert_eq!(handled, ports.iter().map(|port| port.0).collect::<Vec<_>>());
        check_quiet(&world, &ports);
    });
}

#[test]
fn a_resend_while_the_guest_unlinks_is_handled_again_or_coalesced() {
    loom::model(|| {
        let (world, ports) = world(1);
        let world = Arc::new(world);
        let port = ports[0];
        world.domains.send(DOM1, port).unwrap();
        let sender = {
            let world = world.clone();
            loom::thread::spawn(move || world.domains.send(DOM1, port).unwrap())
        };
        let mut local_head = 0;
        let mut handled = consume(&world, &mut local_head, &ports);
        sender.join().unwrap();
        handled.extend(consume(&world, &mut local_head, &ports));
        // The second send either met P still set (coalesced: one handling)
        // or came after the guest cleared P (handled again): never lost.
        assert!(matches!(handled.len(), 1 | 2), "{handled:?}");
        check_quiet(&world, &ports);
    });
}

/// The guest masks `port` and unmasks it again as Linux does: clear M only
/// while BUSY is clear, then ask the hypervisor to link a pending event.
fn guest_mask_then_unmask(world: &World, port: Port) {
    let word = &world.memory.events[port.0 as usize];
    word.fetch_or(EVTCHN_FIFO_MASKED, Ordering::SeqCst);
    let mut current = word.load(Ordering::SeqCst);
    loop {
        if current & EVTCHN_FIFO_BUSY != 0 {
            loom::thread::yield_now();
            current = word.load(Ordering::SeqCst);
            continue;
        }
        match word.compare_exchange(
            current,
            current & !EVTCHN_FIFO_MASKED,
            Ordering::SeqCst,
            Ordering::SeqCst,
        ) {
            Ok(_) => break,
            Err(seen) => current = seen,
        }
    }
    if word.load(Ordering::SeqCst) & EVTCHN_FIFO_PENDING != 0 {
        world.domains.unmask(DOM1, port).unwrap();
    }
}

#[test]
fn linking_behind_a_tail_the_guest_masks_and_unmasks() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let (world, ports) = world(2);
        let world = Arc::new(world);
        let (first, second) = (ports[0], ports[1]);
        let sender = {
            let world = world.clone();
            loom::thread::spawn(move || {
                world.domains.send(DOM1, first).unwrap();
                world.domains.send(DOM1, second).unwrap();
            })
        };
        guest_mask_then_unmask(&world, first);
        sender.join().unwrap();
        let mut local_head = 0;
        let mut handled = consume(&world, &mut local_head, &ports);
        handled.sort_unstable();
        assert_eq!(handled, [first.0, second.0]);
        check_quiet(&world, &ports);
    });
}

/// EVTCHNOP_send on a 2-level IPI port racing the domain's switch to FIFO
/// (init_control). The 2-level sender reads the ABI generation instead of
/// taking the ABI lock; whichever side of the switch's copy its pending
/// bit lands on, once expand_array adds the port's event word the port is
/// pending there, linked on its queue, and handled exactly once.
#[test]
fn a_send_racing_the_switch_to_fifo_is_not_lost() {
    // Two preemptions reach the bad instant (the sender stopped between
    // its generation read and its pending bit while the switch runs): the
    // model fails at once without the re-raise. Unbounded takes minutes.
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let world = Arc::new(two_level_world());
        let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
        let sender = {
            let world = world.clone();
            loom::thread::spawn(move || world.domains.send(DOM1, port).unwrap())
        };
        init_control_on_vcpu0(&world.domains);
        sender.join().unwrap();
        // The event page comes after the race: a send racing expand_array
        // is the sticky flag's protocol, not this one.
        world.domains.expand_array(DOM1, 2).unwrap();
        assert_eq!(world.domains.is_pending(DOM1, port), Some(true));
        let mut local_head = 0;
        let handled = consume(&world, &mut local_head, &[port]);
        assert_eq!(handled, [port.0]);
        check_quiet(&world, &[port]);
    });
}
