//! Concurrency smoke tests of the lock hierarchy: operations that take two
//! domains' locks in opposite orders, sends racing closes, and interrupt
//! style delivery racing binds. They assert that every thread finishes
//! (no deadlock) and that the tables end consistent. The bounded loops keep
//! them quick; a dedicated stress test goes further.

mod common;

use std::sync::Arc;
use std::thread;

use common::*;
use evtchn_core::{ChannelState, DomId, Errno, Port, VcpuId, Virq};

const ROUNDS: usize = 2_000;

/// Every interdomain end must point at a peer that points back.
#[expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test helper: a panic is a failure"
)]
fn assert_pairs_consistent(world: &World) {
    for domid in world.domains.domain_ids() {
        world.domains.for_each_channel(domid, |port, info| {
            if let ChannelState::Interdomain {
                remote,
                remote_port,
                ..
            } = info.state
            {
                let peer = world.domains.channel_info(remote, remote_port).unwrap();
                match peer.state {
                    ChannelState::Interdomain {
                        remote: back,
                        remote_port: back_port,
                        ..
                    } => assert_eq!((back, back_port), (domid, port)),
                    other => panic!("{domid} {port} -> {remote} {remote_port}: {other:?}"),
                }
            }
        });
    }
}

#[test]
fn closing_both_ends_of_pairs_at_once_never_deadlocks() {
    let world = Arc::new(World::new());
    let workers: Vec<_> = [(DOM1, DOM2), (DOM2, DOM1)]
        .into_iter()
        .map(|(me, peer)| {
            let world = world.clone();
            thread::spawn(move || {
                for _ in 0..ROUNDS {
                    // Bind to whatever the peer left unbound for us, or
                    // offer a port; close random-ish ends.
                    if let Ok(port) = world.domains.alloc_unbound(me, DomId::SELF, peer) {
                        match world.domains.bind_interdomain(peer, me, port) {
                            Ok(peer_port) => {
                                // Both ends closed, the two threads in
                                // opposite domain orders.
                                let _ = world.domains.close(me, port);
                                let _ = world.domains.close(peer, peer_port);
                            }
                            Err(_) => {
                                let _ = world.domains.close(me, port);
                            }
                        }
                    }
                    for port in 1..8 {
                        let _ = world.domains.send(me, Port(port));
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    assert_pairs_consistent(&world);
}

#[test]
fn sends_racing_close_and_rebind_stay_defined() {
    let world = Arc::new(World::new());
    let (a, _) = world.connect(DOM1, DOM2);
    let sender = {
        let world = world.clone();
        thread::spawn(move || {
            for _ in 0..ROUNDS * 5 {
                let result = world.domains.send(DOM1, a);
                assert!(matches!(result, Ok(()) | Err(Errno::EINVAL)), "{result:?}");
                let result = world.domains.send(DOM2, Port(1));
                assert!(matches!(result, Ok(()) | Err(Errno::EINVAL)), "{result:?}");
            }
        })
    };
    for _ in 0..ROUNDS {
        if world.domains.close(DOM2, Port(1)).is_ok() {
            world.domains.bind_interdomain(DOM2, DOM1, a).unwrap();
        }
    }
    sender.join().unwrap();
    assert_pairs_consistent(&world);
}

#[test]
fn interrupt_style_virq_delivery_racing_bind_and_close() {
    let world = Arc::new(World::new());
    let raiser = {
        let world = world.clone();
        thread::spawn(move || {
            for _ in 0..ROUNDS * 5 {
                world.domains.send_vcpu_virq(DOM1, VcpuId(1), Virq::TIMER);
                world.domains.send_global_virq(Virq::CONSOLE);
            }
        })
    };
    world.domains.set_virq_handler(Virq::CONSOLE, DOM1).unwrap();
    for _ in 0..ROUNDS {
        let timer = world
            .domains
            .bind_virq(DOM1, Virq::TIMER.number(), VcpuId(1))
            .unwrap();
        let console = world
            .domains
            .bind_virq(DOM1, Virq::CONSOLE.number(), VcpuId(0))
            .unwrap();
        world.domains.close(DOM1, timer).unwrap();
        world.domains.close(DOM1, console).unwrap();
    }
    raiser.join().unwrap();
    assert_eq!(active(&world, DOM1), 0);
}

#[test]
fn domain_destruction_racing_peer_operations() {
    for _ in 0..50 {
        let world = Arc::new(World::new());
        for _ in 0..20 {
            world.connect(DOM1, DOM2);
        }
        let peer = {
            let world = world.clone();
            thread::spawn(move || {
                for port in 1..=20 {
                    let _ = world.domains.send(DOM2, Port(port));
                    let _ = world.domains.close(DOM2, Port(port));
                }
            })
        };
        world.domains.destroy_domain(DOM1).unwrap();
        peer.join().unwrap();
        // Every DOM2 channel is free or waits for the dead domain.
        world.domains.for_each_channel(DOM2, |port, info| {
            assert!(
                matches!(info.state, ChannelState::Unbound { remote, .. } if remote == DOM1),
                "{port}: {:?}",
                info.state
            );
        });
    }
}

#[test]
fn close_of_peer_port_completes_during_a_send_flood() {
    let world = Arc::new(World::new());
    let (flooded, _) = world.connect(DOM1, DOM2);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..2)
        .map(|_| {
            let world = world.clone();
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = world.domains.send(DOM1, flooded);
                }
            })
        })
        .collect();
    // DOM2 closes and re-binds its end: each close needs the write lock of
    // the flooded channel.
    for _ in 0..500 {
        world.domains.close(DOM2, Port(1)).unwrap();
        world.domains.bind_interdomain(DOM2, DOM1, flooded).unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for flooder in flooders {
        flooder.join().unwrap();
    }
    assert_pairs_consistent(&world);
}
