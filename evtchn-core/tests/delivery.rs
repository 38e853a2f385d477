//! The 2-level bit sequence on the shared page, VIRQ and PIRQ delivery, and
//! polling (spec §3.3, §3.5, §5, §6.3, §7.10; checklist §9.4).

mod common;

use std::sync::atomic::Ordering;

use common::*;
use evtchn_core::{DomId, DomainConfig, Errno, PollOutcome, Port, VcpuId, Virq};

// ----- the 2-level sequence -----

#[test]
fn set_pending_sets_pending_then_selector_then_upcall_and_kicks_once() {
    let world = World::new();
    let port = world.domains.bind_ipi(DOM1, VcpuId(1)).unwrap();
    world.domains.send(DOM1, port).unwrap();
    assert!(world.is_pending(DOM1, port));
    assert_eq!(world.selector(DOM1, 1), 1);
    assert_eq!(world.upcall_pending(DOM1, 1), 1);
    assert_eq!(world.kicks(), vec![(DOM1, VcpuId(1))]);
}

#[test]
fn event_on_masked_port_sets_only_pending_bit() {
    let world = World::new();
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.mask(DOM1, port);
    world.domains.send(DOM1, port).unwrap();
    assert!(world.is_pending(DOM1, port));
    assert_eq!(world.selector(DOM1, 0), 0);
    assert_eq!(world.upcall_pending(DOM1, 0), 0);
    assert!(world.kicks().is_empty());
}

#[test]
fn event_on_port_66_sets_selector_bit_1() {
    let world = World::new();
    for _ in 0..66 {
        world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    }
    world.guest_ack_all(DOM1);
    world.domains.send(DOM1, Port(66)).unwrap();
    assert_eq!(world.selector(DOM1, 0), 0b10);
    assert_eq!(
        world.page(DOM1).evtchn_pending[1].load(Ordering::SeqCst),
        0b100
    );
}

#[test]
fn selector_already_set_means_no_new_upcall_or_kick() {
    let world = World::new();
    let first = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    let second = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.domains.send(DOM1, first).unwrap();
    world.page(DOM1).vcpu_info[0]
        .evtchn_upcall_pending
        .store(0, Ordering::SeqCst);
    world.domains.send(DOM1, second).unwrap();
    assert!(world.is_pending(DOM1, second));
    assert_eq!(
        world.upcall_pending(DOM1, 0),
        0,
        "selector bit was set: stop"
    );
    assert_eq!(world.kicks().len(), 1);
}

#[test]
fn upcall_pending_already_set_means_no_second_kick() {
    let world = World::new();
    let first = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.domains.send(DOM1, first).unwrap();
    world.page(DOM1).vcpu_info[0]
        .evtchn_pending_sel
        .store(0, Ordering::SeqCst);
    world.clear_pending(DOM1, first);
    world.domains.send(DOM1, first).unwrap();
    assert_eq!(world.selector(DOM1, 0), 1);
    assert_eq!(world.kicks().len(), 1);
}

#[test]
fn upcall_mask_does_not_stop_marking_or_kicking() {
    let world = World::new();
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.page(DOM1).vcpu_info[0]
        .evtchn_upcall_mask
        .store(1, Ordering::SeqCst);
    world.domains.send(DOM1, port).unwrap();
    assert_eq!(world.upcall_pending(DOM1, 0), 1);
    assert_eq!(world.kicks().len(), 1);
    assert!(!world.domains.vcpu_has_deliverable_event(DOM1, VcpuId(0)));
    world.page(DOM1).vcpu_info[0]
        .evtchn_upcall_mask
        .store(0, Ordering::SeqCst);
    assert!(world.domains.vcpu_has_deliverable_event(DOM1, VcpuId(0)));
}

#[test]
fn vcpu_has_deliverable_event_is_false_for_unknown_domain_or_vcpu() {
    let world = World::new();
    assert!(
        !world
            .domains
            .vcpu_has_deliverable_event(DomId(9), VcpuId(0))
    );
    assert!(!world.domains.vcpu_has_deliverable_event(DOM1, VcpuId(40)));
}

#[test]
fn vcpu_without_vcpu_info_gets_pending_bit_but_no_upcall() {
    let mut world = World::empty();
    world.add(DomainConfig::new(DOM1, 40));
    let port = world.domains.bind_ipi(DOM1, VcpuId(35)).unwrap();
    world.domains.send(DOM1, port).unwrap();
    assert!(world.is_pending(DOM1, port));
    assert!(world.kicks().is_empty());
}

#[test]
fn is_pending_and_is_masked_views_match_the_page() {
    let world = World::new();
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    assert_eq!(world.domains.is_pending(DOM1, port), Some(false));
    world.domains.send(DOM1, port).unwrap();
    assert_eq!(world.domains.is_pending(DOM1, port), Some(true));
    world.mask(DOM1, port);
    assert_eq!(world.domains.is_masked(DOM1, port), Some(true));
    // Past the 2-level arrays: masked and not pending.
    assert_eq!(world.domains.is_masked(DOM1, Port(4096)), Some(true));
    assert_eq!(world.domains.is_pending(DOM1, Port(4096)), Some(false));
}

// ----- VIRQs -----

#[test]
fn per_vcpu_virq_reaches_only_its_vcpu() {
    let world = World::new();
    let port = world
        .domains
        .bind_virq(DOM1, Virq::TIMER.number(), VcpuId(1))
        .unwrap();
    world.domains.send_vcpu_virq(DOM1, VcpuId(0), Virq::TIMER);
    assert!(!world.is_pending(DOM1, port), "vcpu 0 has no timer port");
    world.domains.send_vcpu_virq(DOM1, VcpuId(1), Virq::TIMER);
    assert!(world.is_pending(DOM1, port));
    assert_eq!(world.kicks(), vec![(DOM1, VcpuId(1))]);
}

#[test]
fn unbound_virq_is_discarded() {
    let world = World::new();
    world.domains.send_vcpu_virq(DOM1, VcpuId(0), Virq::TIMER);
    world.domains.send_vcpu_virq(DOM1, VcpuId(7), Virq::TIMER);
    world
        .domains
        .send_vcpu_virq(DomId(9), VcpuId(0), Virq::TIMER);
    world.domains.send_global_virq(Virq::DOM_EXC);
    assert!(none_pending(&world, DOM0));
    assert!(none_pending(&world, DOM1));
    assert!(world.kicks().is_empty());
}

#[test]
fn global_virq_goes_to_hardware_domain_by_default() {
    let world = World::new();
    let dom0_port = world
        .domains
        .bind_virq(DOM0, Virq::DOM_EXC.number(), VcpuId(0))
        .unwrap();
    let dom1_port = world
        .domains
        .bind_virq(DOM1, Virq::DOM_EXC.number(), VcpuId(0))
        .unwrap();
    world.domains.send_global_virq(Virq::DOM_EXC);
    assert!(world.is_pending(DOM0, dom0_port));
    assert!(!world.is_pending(DOM1, dom1_port));
}

#[test]
fn global_virq_handler_change_keeps_bindings_and_redirects_delivery() {
    let world = World::new();
    let dom0_port = world
        .domains
        .bind_virq(DOM0, Virq::DOM_EXC.number(), VcpuId(0))
        .unwrap();
    let dom1_port = world
        .domains
        .bind_virq(DOM1, Virq::DOM_EXC.number(), VcpuId(0))
        .unwrap();
    world.domains.set_virq_handler(Virq::DOM_EXC, DOM1).unwrap();
    world.domains.send_global_virq(Virq::DOM_EXC);
    assert!(
        world.is_pending(DOM1, dom1_port),
        "early binder now receives"
    );
    assert!(!world.is_pending(DOM0, dom0_port));
    assert_eq!(
        world.domains.set_virq_handler(Virq::TIMER, DOM1),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        world.domains.set_virq_handler(Virq::CONSOLE, DomId(9)),
        Err(Errno::ESRCH)
    );
}

#[test]
fn mismatched_virq_class_is_ignored_by_the_senders() {
    let world = World::new();
    let port = world
        .domains
        .bind_virq(DOM0, Virq::CONSOLE.number(), VcpuId(0))
        .unwrap();
    world.domains.send_vcpu_virq(DOM0, VcpuId(0), Virq::CONSOLE);
    assert!(!world.is_pending(DOM0, port));
    let timer = world
        .domains
        .bind_virq(DOM0, Virq::TIMER.number(), VcpuId(0))
        .unwrap();
    world.domains.send_global_virq(Virq::TIMER);
    assert!(!world.is_pending(DOM0, timer));
}

// ----- PIRQs -----

#[test]
fn pirq_reaches_its_port_toward_notify_vcpu() {
    let world = World::new();
    world.map_pirq(DOM1, 9);
    let port = world.domains.bind_pirq(DOM1, 9, 0).unwrap();
    world.domains.bind_vcpu(DOM1, port, VcpuId(1)).unwrap();
    world.domains.send_pirq(DOM1, 9);
    assert!(world.is_pending(DOM1, port));
    assert_eq!(world.kicks(), vec![(DOM1, VcpuId(1))]);
}

#[test]
fn unbound_or_out_of_range_pirq_is_dropped() {
    let world = World::new();
    world.domains.send_pirq(DOM1, 9);
    world.domains.send_pirq(DOM1, u32::MAX);
    world.domains.send_pirq(DomId(9), 1);
    assert!(none_pending(&world, DOM1));
}

#[test]
fn closed_pirq_port_no_longer_receives() {
    let world = World::new();
    world.map_pirq(DOM1, 9);
    let port = world.domains.bind_pirq(DOM1, 9, 0).unwrap();
    world.domains.close(DOM1, port).unwrap();
    let reused = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    assert_eq!(reused, port);
    world.domains.send_pirq(DOM1, 9);
    assert!(!world.is_pending(DOM1, reused));
}

// ----- polling -----

#[test]
fn poll_on_already_pending_masked_port_is_ready_at_once() {
    let world = World::new();
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.mask(DOM1, port);
    world.domains.send(DOM1, port).unwrap();
    assert_eq!(
        world.domains.poll(DOM1, VcpuId(0), &[port]),
        Ok(PollOutcome::Ready)
    );
    assert!(!world.domains.is_polling(DOM1, VcpuId(0)));
}

#[test]
fn masked_port_becoming_pending_wakes_its_poller_without_upcall() {
    let world = World::new();
    let port = world.domains.bind_ipi(DOM1, VcpuId(1)).unwrap();
    world.mask(DOM1, port);
    assert_eq!(
        world.domains.poll(DOM1, VcpuId(1), &[port]),
        Ok(PollOutcome::Block)
    );
    assert!(world.domains.is_polling(DOM1, VcpuId(1)));
    world.domains.send(DOM1, port).unwrap();
    assert_eq!(world.poll_wakes(), vec![(DOM1, VcpuId(1))]);
    assert!(world.kicks().is_empty(), "masked: no upcall");
    assert!(!world.domains.is_polling(DOM1, VcpuId(1)));
}

#[test]
fn poller_of_one_port_is_not_woken_by_another() {
    let world = World::new();
    let polled = world.domains.bind_ipi(DOM1, VcpuId(1)).unwrap();
    let other = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.mask(DOM1, other);
    assert_eq!(
        world.domains.poll(DOM1, VcpuId(1), &[polled]),
        Ok(PollOutcome::Block)
    );
    world.domains.send(DOM1, other).unwrap();
    assert!(world.poll_wakes().is_empty());
    assert!(world.domains.is_polling(DOM1, VcpuId(1)));
    world.domains.poll_finish(DOM1, VcpuId(1));
    assert!(!world.domains.is_polling(DOM1, VcpuId(1)));
}

#[test]
fn poller_of_several_ports_is_woken_by_any_port() {
    let world = World::new();
    let a = world.domains.bind_ipi(DOM1, VcpuId(1)).unwrap();
    let b = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    let c = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.mask(DOM1, c);
    assert_eq!(
        world.domains.poll(DOM1, VcpuId(1), &[a, b]),
        Ok(PollOutcome::Block)
    );
    world.domains.send(DOM1, c).unwrap();
    assert_eq!(world.poll_wakes(), vec![(DOM1, VcpuId(1))]);
}

#[test]
fn unmasked_event_on_other_port_kicks_the_polling_vcpu() {
    let world = World::new();
    let polled = world.domains.bind_ipi(DOM1, VcpuId(1)).unwrap();
    let other = world.domains.bind_ipi(DOM1, VcpuId(1)).unwrap();
    assert_eq!(
        world.domains.poll(DOM1, VcpuId(1), &[polled]),
        Ok(PollOutcome::Block)
    );
    world.domains.send(DOM1, other).unwrap();
    assert_eq!(
        world.kicks(),
        vec![(DOM1, VcpuId(1))],
        "vcpu_kick ends the poll"
    );
}

#[test]
fn poll_with_deliverable_upcall_is_ready_at_once() {
    let world = World::new();
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    let other = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.domains.send(DOM1, other).unwrap();
    world.clear_pending(DOM1, other);
    assert_eq!(
        world.domains.poll(DOM1, VcpuId(0), &[port]),
        Ok(PollOutcome::Ready)
    );
}

#[test]
fn poll_errors_by_input_class() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    let too_many = vec![IPI; 129];
    let cases: [(&str, Vec<Port>, Errno); 6] = [
        ("129 ports", too_many, Errno::EINVAL),
        ("invalid port", vec![Port(64)], Errno::EINVAL),
        ("free port", vec![FREE], Errno::EINVAL),
        ("port 0", vec![RESERVED], Errno::EINVAL),
        ("xen-attached", vec![XEN_ATTACHED], Errno::EINVAL),
        ("good then bad", vec![IPI, Port(u32::MAX)], Errno::EINVAL),
    ];
    for (what, ports, errno) in cases {
        assert_eq!(
            world.domains.poll(DOM1, VcpuId(0), &ports),
            Err(errno),
            "{what}"
        );
        assert!(
            !world.domains.is_polling(DOM1, VcpuId(0)),
            "{what}: cleaned up"
        );
    }
    assert_eq!(
        world.domains.poll(DomId(9), VcpuId(0), &[IPI]),
        Err(Errno::ESRCH)
    );
    assert_eq!(
        world.domains.poll(DOM1, VcpuId(5), &[IPI]),
        Err(Errno::ENOENT)
    );
    // Exactly 128 ports is allowed.
    assert_eq!(
        world.domains.poll(DOM1, VcpuId(0), &[IPI; 128]),
        Ok(PollOutcome::Block)
    );
}

#[test]
fn pending_port_before_a_bad_one_makes_poll_ready() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world.mask(DOM1, IPI);
    world.domains.send(DOM1, IPI).unwrap();
    assert_eq!(
        world.domains.poll(DOM1, VcpuId(0), &[IPI, Port(u32::MAX)]),
        Ok(PollOutcome::Ready)
    );
}

// ----- the 'e' dump -----

#[test]
fn debug_dump_prints_one_xen_style_line_per_allocated_port() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world.domains.send(DOM2, Port(1)).unwrap(); // DOM1 port 2 pending
    world.mask(DOM1, IPI);
    let mut out = String::new();
    world.domains.dump_domain(DOM1, &mut out).unwrap();
    let expected = "\
Event channel information for domain 1:
Polling vCPUs: {}
    port [p/m/s]
       1 [0/0/1]: s=2 n=0 x=0 d=2
       2 [1/0/1]: s=3 n=0 x=0 d=2 p=1
       3 [0/0/0]: s=5 n=1 x=0 v=0
       4 [0/0/1]: s=5 n=0 x=0 v=2
       5 [0/1/0]: s=6 n=1 x=0
       6 [0/0/1]: s=4 n=0 x=0 p=3
       7 [0/0/1]: s=2 n=0 x=1 d=2
";
    assert_eq!(out, expected);
}

#[test]
fn mark_events_pending_sets_upcall_and_kicks_only_on_the_edge() {
    let world = World::new();
    world.domains.vcpu_mark_events_pending(DOM1, VcpuId(1));
    assert_eq!(world.upcall_pending(DOM1, 1), 1);
    world.domains.vcpu_mark_events_pending(DOM1, VcpuId(1));
    assert_eq!(world.kicks(), vec![(DOM1, VcpuId(1))]);
    world.domains.vcpu_mark_events_pending(DOM1, VcpuId(99));
    world.domains.vcpu_mark_events_pending(DomId(9), VcpuId(0));
    assert_eq!(world.kicks().len(), 1);
}

#[test]
fn pirq_port_reports_the_binding_until_close() {
    let world = World::new();
    world.map_pirq(DOM1, 9);
    assert_eq!(world.domains.pirq_port(DOM1, 9), None);
    let port = world.domains.bind_pirq(DOM1, 9, 0).unwrap();
    assert_eq!(world.domains.pirq_port(DOM1, 9), Some(port));
    assert_eq!(world.domains.pirq_port(DOM1, 99), None);
    world.domains.close(DOM1, port).unwrap();
    assert_eq!(world.domains.pirq_port(DOM1, 9), None);
}
