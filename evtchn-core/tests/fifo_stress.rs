//! The FIFO queue protocol under real concurrency: sender threads (guest
//! sends and interrupt-context VIRQs) against one consumer thread per vcpu
//! that drains its queues as spec §4.5 describes, masks and unmasks ports
//! the way guests do (§4.4), while another thread closes linked ports and
//! allocates again.
//!
//! Checked: no lost event (after the last send of a port, some handling of
//! that port saw it), no event linked twice and no corrupted LINK (every
//! word reached through a queue is LINKED and links only to ports of the
//! domain), and a busy port never handed out again.

// Runs outside any loom model, on `tests/fifo_support`'s std atomics:
// built only without `--cfg loom` (the loom build is for the
// `#![cfg(loom)]` models).
#![cfg(not(loom))]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test threads: a panic is a failed test"
)]

mod fifo_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use evtchn_core::abi::EVTCHN_FIFO_BUSY;
use evtchn_core::{Errno, Port, VcpuId, Virq};
use fifo_support::*;

const VCPUS: u32 = 2;
const SENDER_PORTS: u32 = 48;
const SENDS_PER_THREAD: u32 = 20_000;
const CHURN_ROUNDS: u32 = 2_000;

/// Per port: how many times it was raised, and what the last handling saw.
struct Ledger {
    raised: Vec<AtomicU64>,
    seen: Vec<AtomicU64>,
    violations: AtomicU32,
}

impl Ledger {
    fn new(ports: usize) -> Self {
        Self {
            raised: (0..ports).map(|_| AtomicU64::new(0)).collect(),
            seen: (0..ports).map(|_| AtomicU64::new(0)).collect(),
            violations: AtomicU32::new(0),
        }
    }
}

/// One consumer pass over `vcpu`'s queues; checks each word reached.
fn consume(
    world: &FifoWorld,
    vcpu: u32,
    consumer: &mut Consumer,
    ledger: &Ledger,
    mask_tick: &mut u32,
) {
    let block = world.block(DOM1, vcpu);
    let word_of = |port: u32| world.word_of(DOM1, port);
    let mut ready = block.ready().swap(0, Ordering::SeqCst);
    while ready != 0 {
        let queue = ready.trailing_zeros() as usize;
        let Some((port, old)) = consumer.consume_one(&block, queue, word_of) else {
            ready &= !(1 << queue);
            ready |= block.ready().swap(0, Ordering::SeqCst);
            continue;
        };
        let next = old & LINK;
        if old & L == 0 || next >= 1024 || next == port {
            ledger.violations.fetch_add(1, Ordering::SeqCst);
        }
        if next == 0 {
            ready &= !(1 << queue);
        }
        if old & P != 0 && old & M == 0 {
            word_of(port).fetch_and(!P, Ordering::SeqCst);
            // Read after clearing P: a raise that set P before the clear
            // counted itself before that.
            if let Some(seen) = ledger.seen.get(port as usize) {
                let raised = ledger.raised[port as usize].load(Ordering::SeqCst);
                seen.fetch_max(raised, Ordering::SeqCst);
            }
            // Now and then mask the port and unmask it at once, as a guest
            // does: clear M only while BUSY is clear, then ask Xen to
            // re-raise a pending port.
            *mask_tick += 1;
            if (*mask_tick).is_multiple_of(7) {
                let word = word_of(port);
                word.fetch_or(M, Ordering::SeqCst);
                let mut current = word.load(Ordering::SeqCst);
                loop {
                    if current & EVTCHN_FIFO_BUSY != 0 {
                        std::hint::spin_loop();
                        current = word.load(Ordering::SeqCst);
                        continue;
                    }
                    match word.compare_exchange(
                        current,
                        current & !M,
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    ) {
                        Ok(_) => break,
                        Err(seen) => current = seen,
                    }
                }
                if word.load(Ordering::SeqCst) & P != 0 {
                    world.domains.unmask(DOM1, Port(port)).unwrap();
                }
            }
        }
        ready |= block.ready().swap(0, Ordering::SeqCst);
    }
}

/// EVTCHNOP_bind_ipi for the churn thread. A closed port stays busy until
/// a consumer takes it off its queue, and a busy port is not handed out
/// (Xen's `get_free_port()` skips it), so -ENOSPC is the right answer
/// while the consumers lag behind the churn with every free port still
/// linked (on a loaded machine they may not have run at all yet): wait
/// for them, but not forever, so a port that never stops being busy
/// still fails the test.
fn bind_when_a_port_is_free(world: &FifoWorld, vcpu: VcpuId) -> Port {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match world.domains.bind_ipi(DOM1, vcpu) {
            Err(Errno::ENOSPC) if Instant::now() < deadline => thread::yield_now(),
            result => return result.unwrap(),
        }
    }
}

#[test]
fn concurrent_senders_and_consumers_lose_nothing_and_corrupt_nothing() {
    let world = Arc::new(FifoWorld::new(VCPUS));
    world.fifo_on(DOM1, VCPUS);
    let mut sender_ports = Vec::new();
    for index in 0..SENDER_PORTS {
        let port = world.domains.bind_ipi(DOM1, VcpuId(index % VCPUS)).unwrap();
        world.domains.set_priority(DOM1, port, index % 16).unwrap();
        sender_ports.push(port);
    }
    let timers: Vec<Port> = (0..VCPUS)
        .map(|vcpu| world.domains.bind_virq(DOM1, 0, VcpuId(vcpu)).unwrap())
        .collect();
    let ledger = Arc::new(Ledger::new(1024));
    let stop_consumers = Arc::new(AtomicBool::new(false));

    let consumers: Vec<_> = (0..VCPUS)
        .map(|vcpu| {
            let (world, ledger, stop) = (world.clone(), ledger.clone(), stop_consumers.clone());
            thread::spawn(move || {
                let mut consumer = Consumer::default();
                let mut mask_tick = vcpu;
                while !stop.load(Ordering::SeqCst) {
                    consume(&world, vcpu, &mut consumer, &ledger, &mut mask_tick);
                }
                // Final passes once every sender is done.
                for _ in 0..4 {
                    consume(&world, vcpu, &mut consumer, &ledger, &mut mask_tick);
                }
            })
        })
        .collect();

    let senders: Vec<_> = (0..2u32)
        .map(|seed| {
            let (world, ledger, ports) = (world.clone(), ledger.clone(), sender_ports.clone());
            thread::spawn(move || {
                let mut state = 0x9e37_79b9u32.wrapping_mul(seed + 1);
                for _ in 0..SENDS_PER_THREAD {
                    state ^= state << 13;
                    state ^= state >> 17;
                    state ^= state << 5;
                    let port = ports[(state as usize) % ports.len()];
                    ledger.raised[port.0 as usize].fetch_add(1, Ordering::SeqCst);
                    world.domains.send(DOM1, port).unwrap();
                }
            })
        })
        .collect();

    let interrupts = {
        let (world, ledger, timers) = (world.clone(), ledger.clone(), timers.clone());
        thread::spawn(move || {
            for round in 0..SENDS_PER_THREAD / 4 {
                let vcpu = round % VCPUS;
                ledger.raised[timers[vcpu as usize].0 as usize].fetch_add(1, Ordering::SeqCst);
                world
                    .domains
                    .send_vcpu_virq(DOM1, VcpuId(vcpu), Virq::new(0).unwrap());
            }
        })
    };

    // Priorities change under the senders' feet: events move between
    // queues at their next linking (the last-queue logic of spec §4.3).
    let retune = {
        let (world, ports) = (world.clone(), sender_ports.clone());
        thread::spawn(move || {
            for round in 0..CHURN_ROUNDS {
                for (index, port) in ports.iter().enumerate() {
                    let priority = (round + index as u32) % 16;
                    world.domains.set_priority(DOM1, *port, priority).unwrap();
                }
            }
        })
    };

    let churn = {
        let (world, ledger) = (world.clone(), ledger.clone());
        thread::spawn(move || {
            let mut reused = BTreeSet::new();
            for round in 0..CHURN_ROUNDS {
                let port = bind_when_a_port_is_free(&world, VcpuId(round % VCPUS));
                // Only this thread sends on its ports, and they were closed
                // before: a port handed out must not be on a queue.
                if world.word(DOM1, port.0) & L != 0 {
                    ledger.violations.fetch_add(1, Ordering::SeqCst);
                }
                reused.insert(port.0);
                world.domains.send(DOM1, port).unwrap();
                world.domains.close(DOM1, port).unwrap();
            }
            reused
        })
    };

    for sender in senders {
        sender.join().unwrap();
    }
    interrupts.join().unwrap();
    retune.join().unwrap();
    let churned = churn.join().unwrap();
    stop_consumers.store(true, Ordering::SeqCst);
    for consumer in consumers {
        consumer.join().unwrap();
    }

    assert_eq!(ledger.violations.load(Ordering::SeqCst), 0);
    for port in sender_ports.iter().chain(&timers) {
        let index = port.0 as usize;
        assert_eq!(
            ledger.seen[index].load(Ordering::SeqCst),
            ledger.raised[index].load(Ordering::SeqCst),
            "port {} lost its last event",
            port.0
        );
        assert_eq!(world.word(DOM1, port.0) & (P | L), 0, "port {}", port.0);
    }
    for vcpu in 0..VCPUS {
        assert_eq!(world.ready(DOM1, vcpu), 0);
    }
    assert!(
        churned.len() >= 2,
        "the churn thread had to skip busy ports"
    );
    let notify = world.domains.notify();
    assert_eq!(
        notify.interrupts_off.load(Ordering::SeqCst),
        notify.interrupts_on.load(Ordering::SeqCst)
    );
}
