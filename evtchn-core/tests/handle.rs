//! The [`DomainHandle`] entry points give the same answers and set the same
//! bits as the by-domid calls they shorten, and a stale handle is harmless.

mod common;

use common::*;
use evtchn_core::{DomId, Errno, Port, VcpuId, Virq};

#[test]
fn handle_of_unknown_domain_is_none() {
    let world = World::new();
    assert!(world.domains.handle(DomId(50)).is_none());
    assert!(world.domains.handle(DomId::SELF).is_none());
    assert_eq!(world.domains.handle(DOM1).map(|h| h.domid()), Some(DOM1));
}

#[test]
fn send_from_answers_as_send_for_every_state_and_invalid_port() {
    let mut ports: Vec<(&str, Port)> = ZOO_PORTS.to_vec();
    ports.extend(INVALID_PORTS.iter().map(|&port| ("invalid", port)));
    for (what, port) in ports {
        let by_id = Zoo::new();
        let by_handle = Zoo::new();
        let handle = by_handle.world.domains.handle(DOM1).unwrap();
        let expected = by_id.world.domains.send(DOM1, port);
        assert_eq!(
            by_handle.world.domains.send_from(&handle, port),
            expected,
            "{what} {port}"
        );
        for domid in [DOM0, DOM1, DOM2] {
            assert_eq!(
                by_handle.world.snapshot(domid),
                by_id.world.snapshot(domid),
                "{what} {port}: {domid}"
            );
        }
        assert_eq!(by_handle.world.kicks(), by_id.world.kicks(), "{what}");
    }
}

#[test]
fn send_from_sets_the_peer_pending_and_kicks_once() {
    let world = World::new();
    let (port1, port2) = world.connect(DOM1, DOM2);
    world.guest_ack_all(DOM2);
    let kicks_before = world.kicks().len();
    let handle = world.domains.handle(DOM1).unwrap();
    world.domains.send_from(&handle, port1).unwrap();
    assert!(world.is_pending(DOM2, port2));
    assert!(!world.is_pending(DOM1, port1));
    assert_eq!(world.upcall_pending(DOM2, 0), 1);
    world.domains.send_from(&handle, port1).unwrap();
    assert_eq!(world.kicks().len(), kicks_before + 1, "edge-triggered");
    assert_eq!(world.kicks().last(), Some(&(DOM2, VcpuId(0))));
}

#[test]
fn stale_handle_after_destroy_sends_nothing() {
    let world = World::new();
    let (port1, port2) = world.connect(DOM1, DOM2);
    let handle = world.domains.handle(DOM1).unwrap();
    world.guest_ack_all(DOM2);
    world.domains.destroy_domain(DOM1).unwrap();
    assert_eq!(world.domains.send(DOM1, port1), Err(Errno::ESRCH));
    assert_eq!(world.domains.send_from(&handle, port1), Err(Errno::EINVAL));
    assert!(!world.is_pending(DOM2, port2));
    world
        .domains
        .send_vcpu_virq_to(&handle, VcpuId(0), Virq::TIMER);
    assert!(!handle.has_deliverable_event(VcpuId(0)));
}

#[test]
fn virq_and_upcall_test_through_a_handle() {
    let world = World::new();
    let port = world
        .domains
        .bind_virq(DOM1, Virq::TIMER.number(), VcpuId(1))
        .unwrap();
    let handle = world.domains.handle(DOM1).unwrap();
    // A global VIRQ is ignored on the per-vcpu path, as send_vcpu_virq does.
    world
        .domains
        .send_vcpu_virq_to(&handle, VcpuId(1), Virq::CONSOLE);
    assert_eq!(world.upcall_pending(DOM1, 1), 0);
    // The wrong vcpu's table has no binding.
    world
        .domains
        .send_vcpu_virq_to(&handle, VcpuId(0), Virq::TIMER);
    assert!(!world.is_pending(DOM1, port));
    world
        .domains
        .send_vcpu_virq_to(&handle, VcpuId(1), Virq::TIMER);
    assert!(world.is_pending(DOM1, port));
    assert_eq!(world.upcall_pending(DOM1, 1), 1);
    // upcall_mask is 0 on a heap page: deliverable on vcpu 1 only.
    for vcpu in [0, 1] {
        assert_eq!(
            handle.has_deliverable_event(VcpuId(vcpu)),
            world.domains.vcpu_has_deliverable_event(DOM1, VcpuId(vcpu)),
        );
    }
    assert!(handle.has_deliverable_event(VcpuId(1)));
    world.page(DOM1).vcpu_info[1]
        .evtchn_upcall_mask
        .store(1, std::sync::atomic::Ordering::SeqCst);
    assert!(!handle.has_deliverable_event(VcpuId(1)));
}

#[test]
fn dispatch_from_answers_as_dispatch() {
    const SEND: u32 = 4;
    const STATUS: u32 = 5;
    const UNMASK: u32 = 9;
    const CLOSE: u32 = 3;
    const ALLOC_UNBOUND: u32 = 6;
    // EVTCHNOP_status of `port` in `dom` (the union's bytes non-zero, to
    // see that they come back as passed).
    let status_of = |dom: u16, port: Port| -> Vec<u8> {
        dom.to_le_bytes()
            .into_iter()
            .chain([0, 0])
            .chain(port.0.to_le_bytes())
            .chain([0xa5; 16])
            .collect()
    };
    for (what, port) in ZOO_PORTS {
        let by_id = Zoo::new();
        let by_handle = Zoo::new();
        let handle = by_handle.world.domains.handle(DOM1).unwrap();
        for (cmd, arg) in [
            (SEND, port.0.to_le_bytes().to_vec()),
            (SEND, vec![0u8; 3]),
            (STATUS, status_of(0x7ff0, port)),
            (STATUS, status_of(DOM1.0, port)),
            (STATUS, status_of(DOM2.0, port)),
            (STATUS, status_of(0x7ff1, port)),
            (STATUS, vec![0u8; 23]),
            (UNMASK, port.0.to_le_bytes().to_vec()),
            (UNMASK, vec![0u8; 3]),
            (
                ALLOC_UNBOUND,
                [0xf0u8, 0x7f, 0xf0, 0x7f, 0, 0, 0, 0].to_vec(),
            ),
            (ALLOC_UNBOUND, [2u8, 0, 0xf0, 0x7f, 0, 0, 0, 0].to_vec()),
            (ALLOC_UNBOUND, [1u8, 0, 2, 0, 9, 9, 9, 9].to_vec()),
            (ALLOC_UNBOUND, vec![0u8; 7]),
            (CLOSE, port.0.to_le_bytes().to_vec()),
            (CLOSE, vec![0u8; 3]),
            (99, Vec::new()),
        ] {
            let expected = by_id.world.domains.dispatch(DOM1, cmd, &arg);
            let got = by_handle.world.domains.dispatch_from(&handle, cmd, &arg);
            assert_eq!(
                got.map(|reply| reply.as_bytes().to_vec()),
                expected.map(|reply| reply.as_bytes().to_vec()),
                "{what} cmd {cmd}"
            );
            assert_eq!(
                by_handle.world.snapshot(DOM2),
                by_id.world.snapshot(DOM2),
                "{what}"
            );
            assert_eq!(
                by_handle.world.snapshot(DOM1),
                by_id.world.snapshot(DOM1),
                "{what}"
            );
        }
    }
}
