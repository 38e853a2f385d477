//! Behaviour of close and send against every channel state and every bad
//! input class (spec §2.4, §2.5).

mod common;

use common::*;
use evtchn_core::{ChannelState, Consumer, DomId, Errno, Port, VcpuId, Virq, XenConsumer};

// ----- close -----

#[test]
fn close_against_every_state() {
    let expected: [(&str, Port, Result<(), Errno>); 10] = [
        ("reserved", RESERVED, Err(Errno::EINVAL)),
        ("unbound", UNBOUND, Ok(())),
        ("interdomain", INTERDOMAIN, Ok(())),
        ("per-vcpu virq", VIRQ_PER_VCPU, Ok(())),
        ("global virq", VIRQ_GLOBAL, Ok(())),
        ("ipi", IPI, Ok(())),
        ("pirq", PIRQ, Ok(())),
        ("xen-attached", XEN_ATTACHED, Err(Errno::EINVAL)),
        ("free", FREE, Err(Errno::EINVAL)),
        ("last valid free", LAST_VALID_FREE, Err(Errno::EINVAL)),
    ];
    for (what, port, result) in expected {
        let zoo = Zoo::new();
        let world = &zoo.world;
        let before = world.snapshot(DOM1);
        let active_before = active(world, DOM1);
        assert_eq!(world.domains.close(DOM1, port), result, "{what}");
        match result {
            Ok(()) => {
                state_is(world, DOM1, port, ChannelState::Free);
                assert_eq!(active(world, DOM1), active_before - 1, "{what}");
                assert_eq!(world.notify_vcpu(DOM1, port), VcpuId(0), "{what}");
            }
            Err(_) => assert_eq!(world.snapshot(DOM1), before, "{what}: unchanged"),
        }
    }
}

#[test]
fn close_invalid_ports_gives_einval() {
    let zoo = Zoo::new();
    for port in INVALID_PORTS {
        assert_eq!(
            zoo.world.domains.close(DOM1, port),
            Err(Errno::EINVAL),
            "{port}"
        );
    }
}

#[test]
fn close_twice_gives_einval_the_second_time() {
    let world = World::new();
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    assert_eq!(world.domains.close(DOM1, port), Ok(()));
    assert_eq!(world.domains.close(DOM1, port), Err(Errno::EINVAL));
}

#[test]
fn close_interdomain_leaves_remote_unbound_awaiting_the_closer() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world.domains.bind_vcpu(DOM2, Port(1), VcpuId(1)).unwrap();
    world.domains.send(DOM1, INTERDOMAIN).unwrap(); // DOM2 port 1 pending
    assert!(world.is_pending(DOM2, Port(1)));
    world.domains.close(DOM1, INTERDOMAIN).unwrap();
    state_is(
        world,
        DOM2,
        Port(1),
        ChannelState::Unbound {
            remote: DOM1,
            consumer: Consumer::Guest,
        },
    );
    // The peer's notify vcpu and pending bit are untouched.
    assert_eq!(world.notify_vcpu(DOM2, Port(1)), VcpuId(1));
    assert!(world.is_pending(DOM2, Port(1)));
    assert_eq!(active(world, DOM2), 1);
    // The closer may bind to it again.
    let again = world.domains.bind_interdomain(DOM1, DOM2, Port(1)).unwrap();
    assert_eq!(again, INTERDOMAIN, "lowest free port is reused");
}

#[test]
fn close_remote_end_of_interdomain_leaves_local_unbound() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    // DOM2 (higher domid) closes: its lock order needs DOM1's lock first.
    world.domains.close(DOM2, Port(1)).unwrap();
    state_is(
        world,
        DOM1,
        INTERDOMAIN,
        ChannelState::Unbound {
            remote: DOM2,
            consumer: Consumer::Guest,
        },
    );
    state_is(world, DOM2, Port(1), ChannelState::Free);
}

#[test]
fn close_loopback_end_leaves_other_end_unbound_to_same_domain() {
    let world = World::new();
    let (first, second) = world.connect(DOM1, DOM1);
    world.domains.close(DOM1, second).unwrap();
    state_is(
        &world,
        DOM1,
        first,
        ChannelState::Unbound {
            remote: DOM1,
            consumer: Consumer::Guest,
        },
    );
    assert_eq!(
        world.domains.bind_interdomain(DOM1, DomId::SELF, first),
        Ok(second)
    );
}

#[test]
fn close_clears_pending_but_keeps_mask() {
    let world = World::new();
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.domains.send(DOM1, port).unwrap();
    world.mask(DOM1, port);
    assert!(world.is_pending(DOM1, port));
    world.domains.close(DOM1, port).unwrap();
    assert!(!world.is_pending(DOM1, port));
    assert!(world.is_masked(DOM1, port));
    // A reused port inherits the guest's old mask.
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(1)), Ok(port));
    assert!(world.is_masked(DOM1, port));
}

#[test]
fn close_virq_frees_its_table_slot_for_rebinding() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world.domains.close(DOM1, VIRQ_PER_VCPU).unwrap();
    assert_eq!(world.domains.virq_port(DOM1, VcpuId(1), Virq::TIMER), None);
    assert_eq!(
        world
            .domains
            .bind_virq(DOM1, Virq::TIMER.number(), VcpuId(1)),
        Ok(VIRQ_PER_VCPU)
    );
}

#[test]
fn close_of_moved_global_virq_clears_vcpu_0_table() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world
        .domains
        .bind_vcpu(DOM1, VIRQ_GLOBAL, VcpuId(1))
        .unwrap();
    assert_eq!(
        world.domains.virq_port(DOM1, VcpuId(0), Virq::CONSOLE),
        Some(VIRQ_GLOBAL)
    );
    world.domains.close(DOM1, VIRQ_GLOBAL).unwrap();
    assert_eq!(
        world.domains.virq_port(DOM1, VcpuId(0), Virq::CONSOLE),
        None
    );
    assert!(
        world
            .domains
            .bind_virq(DOM1, Virq::CONSOLE.number(), VcpuId(0))
            .is_ok()
    );
}

#[test]
fn close_pirq_unbinds_host_irq_and_allows_rebinding() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world.domains.close(DOM1, PIRQ).unwrap();
    assert_eq!(
        *world.domains.pirq_host().unbinds.lock().unwrap(),
        vec![(DOM1, ZOO_PIRQ)]
    );
    assert!(world.domains.pirq_host().bound.lock().unwrap().is_empty());
    assert_eq!(world.domains.bind_pirq(DOM1, ZOO_PIRQ, 0), Ok(PIRQ));
}

#[test]
fn close_by_other_domain_cannot_reach_foreign_ports() {
    // close acts on the caller's own table only: DOM2's port 2 is free.
    let zoo = Zoo::new();
    assert_eq!(zoo.world.domains.close(DOM2, IPI), Err(Errno::EINVAL));
    state_is(&zoo.world, DOM1, IPI, ChannelState::Ipi);
}

// ----- send -----

#[test]
fn send_against_every_state() {
    let expected: [(&str, Port, Result<(), Errno>); 10] = [
        ("reserved", RESERVED, Err(Errno::EINVAL)),
        ("unbound", UNBOUND, Ok(())),
        ("interdomain", INTERDOMAIN, Ok(())),
        ("per-vcpu virq", VIRQ_PER_VCPU, Err(Errno::EINVAL)),
        ("global virq", VIRQ_GLOBAL, Err(Errno::EINVAL)),
        ("ipi", IPI, Ok(())),
        ("pirq", PIRQ, Err(Errno::EINVAL)),
        ("xen-attached", XEN_ATTACHED, Err(Errno::EINVAL)),
        ("free", FREE, Err(Errno::EINVAL)),
        ("last valid free", LAST_VALID_FREE, Err(Errno::EINVAL)),
    ];
    for (what, port, result) in expected {
        let zoo = Zoo::new();
        assert_eq!(zoo.world.domains.send(DOM1, port), result, "{what}");
    }
    let zoo = Zoo::new();
    for port in INVALID_PORTS {
        assert_eq!(
            zoo.world.domains.send(DOM1, port),
            Err(Errno::EINVAL),
            "{port}"
        );
    }
}

#[test]
fn send_on_unbound_port_is_dropped_silently() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    assert_eq!(world.domains.send(DOM1, UNBOUND), Ok(()));
    assert!(none_pending(world, DOM1));
    assert!(none_pending(world, DOM2));
    assert!(world.kicks().is_empty());
}

#[test]
fn send_interdomain_marks_only_the_peer() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world.domains.send(DOM1, INTERDOMAIN).unwrap();
    assert!(world.is_pending(DOM2, Port(1)));
    assert!(none_pending(world, DOM1));
    assert_eq!(world.kicks(), vec![(DOM2, VcpuId(0))]);
}

#[test]
fn send_interdomain_targets_peer_notify_vcpu() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world.domains.bind_vcpu(DOM2, Port(1), VcpuId(1)).unwrap();
    world.domains.send(DOM1, INTERDOMAIN).unwrap();
    assert_eq!(world.selector(DOM2, 1), 1);
    assert_eq!(world.selector(DOM2, 0), 0);
    assert_eq!(world.kicks(), vec![(DOM2, VcpuId(1))]);
}

#[test]
fn send_ipi_lands_on_its_bound_vcpu_whoever_sends() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world.domains.send(DOM1, IPI).unwrap();
    assert!(world.is_pending(DOM1, IPI));
    assert_eq!(world.selector(DOM1, 1), 1);
    assert_eq!(world.upcall_pending(DOM1, 1), 1);
    assert_eq!(world.kicks(), vec![(DOM1, VcpuId(1))]);
}

#[test]
fn send_to_xen_attached_peer_calls_the_consumer_instead_of_setting_bits() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    let local = world
        .domains
        .bind_interdomain(DOM2, DOM1, XEN_ATTACHED)
        .unwrap();
    world.guest_ack_all(DOM2);
    world.domains.send(DOM2, local).unwrap();
    assert!(!world.is_pending(DOM1, XEN_ATTACHED));
    assert_eq!(
        *world.domains.notify().xen_notifications.lock().unwrap(),
        vec![(DOM1, XEN_ATTACHED, XenConsumer(1))]
    );
    // And the hypervisor can signal the guest end through it.
    world.domains.notify_via_xen_channel(DOM1, XEN_ATTACHED);
    assert!(world.is_pending(DOM2, local));
}

/// A loopback whose peer is a Xen-attached port of the same domain: the
/// send goes to the consumer, never to the port's bits, both by domid and
/// through a handle (whose loopback send is lock-free only toward a guest
/// port).
#[test]
fn send_on_loopback_to_xen_attached_port_calls_the_consumer() {
    let world = World::new();
    let xen_port = world
        .domains
        .alloc_unbound_xen(DOM1, VcpuId(1), DOM1, XenConsumer(3))
        .unwrap();
    let local = world
        .domains
        .bind_interdomain(DOM1, DOM1, xen_port)
        .unwrap();
    world.guest_ack_all(DOM1);
    let handle = world.domains.handle(DOM1).unwrap();
    world.domains.send_from(&handle, local).unwrap();
    world.domains.send(DOM1, local).unwrap();
    assert!(!world.is_pending(DOM1, xen_port));
    assert!(world.kicks().is_empty());
    assert_eq!(
        *world.domains.notify().xen_notifications.lock().unwrap(),
        vec![(DOM1, xen_port, XenConsumer(3)); 2]
    );
}

#[test]
fn send_needs_no_privilege_and_acts_on_callers_own_port() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    // DOM2 sends on its end of the pair with DOM1.
    world.domains.send(DOM2, Port(1)).unwrap();
    assert!(world.is_pending(DOM1, INTERDOMAIN));
}

#[test]
fn send_from_unknown_domain_gives_esrch() {
    let zoo = Zoo::new();
    assert_eq!(zoo.world.domains.send(DomId(50), IPI), Err(Errno::ESRCH));
}

#[test]
fn repeated_sends_raise_one_upcall_until_guest_acknowledges() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    for _ in 0..1000 {
        world.domains.send(DOM1, IPI).unwrap();
    }
    assert_eq!(world.kicks().len(), 1, "edge-triggered: one kick");
    world.guest_ack_all(DOM1);
    world.domains.send(DOM1, IPI).unwrap();
    assert_eq!(world.kicks().len(), 1);
}

// ----- Xen-attached channels -----

#[test]
fn hypervisor_closes_xen_attached_channel_and_guest_peer_becomes_unbound() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    let guest_end = world
        .domains
        .bind_interdomain(DOM2, DOM1, XEN_ATTACHED)
        .unwrap();
    assert_eq!(world.domains.close(DOM1, XEN_ATTACHED), Err(Errno::EINVAL));
    let active_before = active(world, DOM1);
    assert_eq!(world.domains.close_xen_channel(DOM1, XEN_ATTACHED), Ok(()));
    state_is(world, DOM1, XEN_ATTACHED, ChannelState::Free);
    assert_eq!(active(world, DOM1), active_before - 1);
    state_is(
        world,
        DOM2,
        guest_end,
        ChannelState::Unbound {
            remote: DOM1,
            consumer: Consumer::Guest,
        },
    );
    assert_eq!(
        world.domains.close_xen_channel(DOM1, XEN_ATTACHED),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        world.domains.close_xen_channel(DomId(9), Port(1)),
        Err(Errno::ESRCH)
    );
}

#[test]
fn alloc_unbound_xen_checks_domain_and_vcpu_and_sets_notify_vcpu() {
    let world = World::new();
    assert_eq!(
        world
            .domains
            .alloc_unbound_xen(DomId(9), VcpuId(0), DOM2, XenConsumer(2)),
        Err(Errno::ESRCH)
    );
    assert_eq!(
        world
            .domains
            .alloc_unbound_xen(DOM1, VcpuId(2), DOM2, XenConsumer(2)),
        Err(Errno::ENOENT)
    );
    let port = world
        .domains
        .alloc_unbound_xen(DOM1, VcpuId(1), DOM2, XenConsumer(2))
        .unwrap();
    assert_eq!(world.notify_vcpu(DOM1, port), VcpuId(1));
    state_is(
        &world,
        DOM1,
        port,
        ChannelState::Unbound {
            remote: DOM2,
            consumer: Consumer::Xen(XenConsumer(2)),
        },
    );
}
