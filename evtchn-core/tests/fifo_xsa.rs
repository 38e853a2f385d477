//! The FIFO properties of spec §8, one named test each: XSA-107, 343, 344
//! (under FIFO), 358, 359, 505, and "don't reuse ports that are still busy".

// Runs outside any loom model, on `tests/fifo_support`'s std atomics:
// built only without `--cfg loom` (the loom build is for the
// `#![cfg(loom)]` models).
#![cfg(not(loom))]
mod fifo_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use evtchn_core::{DomId, DomainConfig, Errno, Port, ResetMode, VcpuId, Virq};
use fifo_support::*;

#[test]
fn xsa107_event_for_a_vcpu_without_control_block_is_dropped() {
    let world = FifoWorld::new(3);
    world.fifo_on(DOM1, 1);
    let ipi = world.domains.bind_ipi(DOM1, VcpuId(2)).unwrap();
    let timer = world.domains.bind_virq(DOM1, 0, VcpuId(2)).unwrap();
    world.domains.send(DOM1, ipi).unwrap();
    world
        .domains
        .send_vcpu_virq(DOM1, VcpuId(2), Virq::new(0).unwrap());
    assert_eq!((world.word(DOM1, ipi.0), world.word(DOM1, timer.0)), (0, 0));
    assert!(world.kicks().is_empty());
    // A vcpu that gets its block later receives events from then on.
    world.init_control(DOM1, 2).unwrap();
    world.domains.send(DOM1, ipi).unwrap();
    assert_eq!(world.drain(DOM1, 2), [ipi.0]);
}

#[test]
fn xsa358_set_pending_racing_init_control_of_its_vcpu_never_sees_a_half_set_up_block() {
    for _ in 0..50 {
        let world = Arc::new(FifoWorld::new(2));
        world.fifo_on(DOM1, 1);
        let port = world.domains.bind_ipi(DOM1, VcpuId(1)).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let sender = {
            let (world, stop) = (world.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    world.domains.send(DOM1, port).unwrap();
                }
            })
        };
        world.init_control(DOM1, 1).unwrap();
        // Once the block is there, an event reaches vcpu 1's queue 7.
        world.domains.send(DOM1, port).unwrap();
        stop.store(true, Ordering::SeqCst);
        sender.join().unwrap();
        assert_eq!(world.word(DOM1, port.0) & (P | L), P | L);
        assert_eq!(world.head(DOM1, 1, 7), port.0);
        assert_eq!(world.ready(DOM1, 1), 1 << 7);
    }
}

#[test]
fn xsa359_events_racing_the_switch_to_fifo_are_never_lost() {
    for _ in 0..50 {
        let world = Arc::new(FifoWorld::new(1));
        let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
        let started = Arc::new(AtomicBool::new(false));
        let sender = {
            let (world, started) = (world.clone(), started.clone());
            thread::spawn(move || {
                started.store(true, Ordering::SeqCst);
                for _ in 0..200 {
                    world.domains.send(DOM1, port).unwrap();
                }
            })
        };
        while !started.load(Ordering::SeqCst) {
            thread::yield_now();
        }
        world.init_control(DOM1, 0).unwrap();
        sender.join().unwrap();
        // Every send either set the 2-level bit before the switch (carried
        // over) or reached the FIFO ops (kept for the page): the event is
        // delivered once the page arrives.
        world.expand(DOM1, 0).unwrap();
        assert_eq!(world.drain(DOM1, 0), [port.0]);
    }
}

#[test]
fn xsa505_expand_array_racing_init_control_sees_fifo_whole_or_not_at_all() {
    for _ in 0..50 {
        let world = Arc::new(FifoWorld::new(1));
        let expander = {
            let world = world.clone();
            thread::spawn(move || {
                let mut results = Vec::new();
                for _ in 0..100 {
                    let result = world.expand(DOM1, 0);
                    results.push(result);
                    if result.is_ok() {
                        break;
                    }
                }
                results
            })
        };
        world.init_control(DOM1, 0).unwrap();
        let results = expander.join().unwrap();
        for result in &results {
            assert!(
                matches!(result, Ok(()) | Err(Errno::EOPNOTSUPP)),
                "{result:?}"
            );
        }
        if results.last() != Some(&Ok(())) {
            world.expand(DOM1, 0).unwrap();
        }
        // One control block and exactly one page, whatever the interleaving.
        assert_eq!(world.memory(DOM1).mapped(), 2);
    }
}

#[test]
fn xsa505_expand_array_racing_reset_never_touches_released_state() {
    for _ in 0..50 {
        let world = Arc::new(FifoWorld::new(1));
        world.fifo_on(DOM1, 1);
        let expander = {
            let world = world.clone();
            thread::spawn(move || {
                (1..4)
                    .map(|index| world.expand(DOM1, index))
                    .collect::<Vec<_>>()
            })
        };
        world
            .domains
            .reset(DOM1, DomId::SELF, ResetMode::Start)
            .unwrap();
        for result in expander.join().unwrap() {
            assert!(
                matches!(result, Ok(()) | Err(Errno::EOPNOTSUPP)),
                "{result:?}"
            );
        }
        // Whatever the interleaving, FIFO is gone and with it every
        // mapping: an expand after the reset meets 2-level and is refused.
        assert_eq!(world.memory(DOM1).mapped(), 0);
    }
}

#[test]
fn xsa343_sends_racing_a_reset_under_fifo_stay_defined() {
    for _ in 0..20 {
        let world = Arc::new(FifoWorld::new(2));
        world.fifo_on(DOM1, 2);
        let ports: Vec<Port> = (0..100)
            .map(|index| world.domains.bind_ipi(DOM1, VcpuId(index % 2)).unwrap())
            .collect();
        let sender = {
            let world = world.clone();
            thread::spawn(move || {
                for _ in 0..5 {
                    for &port in &ports {
                        // Sends on closed ports fail with -EINVAL; never panic.
                        let result = world.domains.send(DOM1, port);
                        assert!(matches!(result, Ok(()) | Err(Errno::EINVAL)));
                    }
                }
            })
        };
        let reset = world.domains.reset(DOM1, DomId::SELF, ResetMode::Start);
        sender.join().unwrap();
        assert_eq!(reset, Ok(()));
        assert_eq!(world.memory(DOM1).mapped(), 0);
    }
}

#[test]
fn xsa344_reset_of_131071_fifo_ports_runs_in_64_port_chunks() {
    let mut world = FifoWorld::empty();
    world.add(
        DomainConfig {
            max_evtchn_port: i32::MAX as u32,
            ..DomainConfig::new(DOM1, 1)
        },
        128,
    );
    world.init_control(DOM1, 0).unwrap();
    for _ in 1..131_072 {
        world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    }
    world
        .domains
        .notify()
        .preempt_period
        .store(2, Ordering::SeqCst);
    let mut result = world.domains.reset(DOM1, DomId::SELF, ResetMode::Start);
    let mut continuations = 0;
    while result == Err(Errno::ERESTART) {
        continuations += 1;
        result = world.domains.reset(DOM1, DomId::SELF, ResetMode::Continue);
    }
    assert_eq!(result, Ok(()));
    // Every second 64-port check asks to stop: about one continuation per
    // 64 ports closed.
    assert!(continuations >= 131_072 / 64 - 2, "{continuations}");
    assert_eq!(world.domains.active_channels(DOM1), Some(0));
    assert_eq!(
        world.domains.set_priority(DOM1, Port(1), 3),
        Err(Errno::ENOSYS)
    );
    // XSA-338: back on 2-level, every once-valid port stays valid.
    assert_eq!(world.domains.valid_ports(DOM1), Some(131_072));
    assert_eq!(world.domains.unmask(DOM1, Port(131_071)), Ok(()));
    assert_eq!(world.domains.close(DOM1, Port(131_071)), Err(Errno::EINVAL));
}

#[test]
fn dont_reuse_busy_ports_a_linked_free_port_is_not_handed_out() {
    let world = FifoWorld::new(1);
    world.fifo_on(DOM1, 1);
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.domains.send(DOM1, port).unwrap();
    world.domains.close(DOM1, port).unwrap();
    for _ in 0..10 {
        assert_ne!(world.domains.bind_ipi(DOM1, VcpuId(0)), Ok(port));
    }
    // Unlinked by the guest: reused by the next allocation.
    assert_eq!(world.drain(DOM1, 0), Vec::<u32>::new());
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(0)), Ok(port));
    // On the reused port the first event links normally.
    world.domains.send(DOM1, port).unwrap();
    assert_eq!(world.drain(DOM1, 0), [port.0]);
}
