//! One test per item of the spec's §10 "traps for a naive implementation"
//! that lives in evtchn-core. Items 11 (bounce-frame layout) and 13 (the
//! default 10 ms periodic VIRQ_TIMER) belong to the hypervisor and are
//! tested there; item 12 is tested here for its evtchn-core half
//! (`ERESTART` and cmd 14), item 10 for polling.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use evtchn_core::abi::{EvtchnAllocUnbound, EvtchnStat};
use evtchn_core::{
    ChannelState, Consumer, DomId, DomainConfig, Errno, PollOutcome, Port, ResetMode, VcpuId, Virq,
};

#[test]
fn trap01_port_0_is_reserved_status_closed_and_close_einval() {
    let world = World::new();
    let reply = world.status(DOM1, DomId::SELF, Port(0)).unwrap();
    assert_eq!(reply.status, EvtchnStat::Closed as u32);
    assert_eq!(world.domains.close(DOM1, Port(0)), Err(Errno::EINVAL));
    assert_eq!(world.domains.send(DOM1, Port(0)), Err(Errno::EINVAL));
    state_is(&world, DOM1, Port(0), ChannelState::Reserved);
    assert_eq!(
        world.domains.bind_ipi(DOM1, VcpuId(0)),
        Ok(Port(1)),
        "never handed out"
    );
}

#[test]
fn trap02_valid_means_has_storage_so_free_valid_port_status_and_unmask_succeed() {
    let world = World::new();
    assert!(world.status(DOM1, DomId::SELF, Port(63)).is_ok());
    assert_eq!(world.domains.unmask(DOM1, Port(63)), Ok(()));
    assert_eq!(
        world.status(DOM1, DomId::SELF, Port(64)),
        Err(Errno::EINVAL)
    );
    assert_eq!(world.domains.unmask(DOM1, Port(64)), Err(Errno::EINVAL));
}

#[test]
fn trap03_bind_interdomain_always_sets_the_new_local_port_pending() {
    let world = World::new();
    let (a, b) = world.connect(DOM1, DOM2);
    assert!(world.is_pending(DOM2, b));
    assert!(!world.is_pending(DOM1, a));
}

#[test]
fn trap04_close_leaves_mask_and_reuse_resets_notify_vcpu_and_priority() {
    let world = World::new();
    let port = world
        .domains
        .alloc_unbound(DOM1, DomId::SELF, DOM2)
        .unwrap();
    world.domains.bind_vcpu(DOM1, port, VcpuId(1)).unwrap();
    world.mask(DOM1, port);
    world.domains.close(DOM1, port).unwrap();
    assert!(world.is_masked(DOM1, port));
    assert_eq!(world.notify_vcpu(DOM1, port), VcpuId(0));
    let reused = world
        .domains
        .alloc_unbound(DOM1, DomId::SELF, DOM2)
        .unwrap();
    assert_eq!(reused, port);
    let info = world.domains.channel_info(DOM1, reused).unwrap();
    assert_eq!(info.notify_vcpu, VcpuId(0));
    assert_eq!(info.priority, 7);
    assert!(world.is_masked(DOM1, reused));
}

#[test]
fn trap05_send_on_unbound_succeeds_and_on_virq_or_pirq_fails() {
    let zoo = Zoo::new();
    assert_eq!(zoo.world.domains.send(DOM1, UNBOUND), Ok(()));
    assert_eq!(
        zoo.world.domains.send(DOM1, VIRQ_PER_VCPU),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        zoo.world.domains.send(DOM1, VIRQ_GLOBAL),
        Err(Errno::EINVAL)
    );
    assert_eq!(zoo.world.domains.send(DOM1, PIRQ), Err(Errno::EINVAL));
}

#[test]
fn trap06_alloc_unbound_turns_domid_self_into_caller_and_never_validates_remote() {
    let world = World::new();
    let request = EvtchnAllocUnbound {
        dom: DOM2,
        remote_dom: DomId::SELF,
        port: Port(0),
    };
    world
        .domains
        .dispatch(DOM0, 6, &request.to_bytes())
        .unwrap();
    state_is(
        &world,
        DOM2,
        Port(1),
        ChannelState::Unbound {
            remote: DOM0,
            consumer: Consumer::Guest,
        },
    );
    let port = world
        .domains
        .alloc_unbound(DOM1, DomId::SELF, DomId(0x7000))
        .unwrap();
    state_is(
        &world,
        DOM1,
        port,
        ChannelState::Unbound {
            remote: DomId(0x7000),
            consumer: Consumer::Guest,
        },
    );
}

#[test]
fn trap07_error_precedence_is_abi() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    // bind_vcpu: vcpu before port.
    assert_eq!(
        world.domains.bind_vcpu(DOM1, Port(u32::MAX), VcpuId(9)),
        Err(Errno::ENOENT)
    );
    // status: port before privilege.
    assert_eq!(world.status(DOM2, DOM1, Port(64)), Err(Errno::EINVAL));
    assert_eq!(world.status(DOM2, DOM1, Port(63)), Err(Errno::EPERM));
    // alloc_unbound: allocation before privilege.
    let mut world = World::empty();
    world.add(DomainConfig {
        max_evtchn_port: 1,
        ..DomainConfig::new(DOM1, 1)
    });
    world.add(DomainConfig::new(DOM2, 1));
    assert_eq!(
        world.domains.alloc_unbound(DOM2, DOM1, DOM2),
        Err(Errno::EPERM)
    );
    world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    assert_eq!(
        world.domains.alloc_unbound(DOM2, DOM1, DOM2),
        Err(Errno::ENOSPC)
    );
}

#[test]
fn trap08_signalling_is_edge_triggered_and_a_left_selector_bit_loses_upcalls() {
    let world = World::new();
    let first = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    let second = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.domains.send(DOM1, first).unwrap();
    assert_eq!(world.kicks().len(), 1);
    // A guest that clears upcall_pending and the pending bit but leaves the
    // selector bit set gets no upcall for the next event in that word.
    let info = &world.page(DOM1).vcpu_info[0];
    info.evtchn_upcall_pending.store(0, Ordering::SeqCst);
    world.clear_pending(DOM1, first);
    world.domains.send(DOM1, second).unwrap();
    assert!(world.is_pending(DOM1, second));
    assert_eq!(world.upcall_pending(DOM1, 0), 0);
    assert_eq!(world.kicks().len(), 1);
    // Pending level: a second send on a pending port changes nothing.
    info.evtchn_pending_sel.store(0, Ordering::SeqCst);
    world.domains.send(DOM1, second).unwrap();
    assert_eq!(world.selector(DOM1, 0), 0);
}

#[test]
fn trap09_upcall_mask_is_not_consulted_when_marking_events() {
    let world = World::new();
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.page(DOM1).vcpu_info[0]
        .evtchn_upcall_mask
        .store(1, Ordering::SeqCst);
    world.domains.send(DOM1, port).unwrap();
    assert_eq!(world.upcall_pending(DOM1, 0), 1);
    assert_eq!(world.kicks(), vec![(DOM1, VcpuId(0))]);
    assert!(!world.domains.vcpu_has_deliverable_event(DOM1, VcpuId(0)));
}

#[test]
fn trap10_poll_wakes_on_masked_ports() {
    let world = World::new();
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.mask(DOM1, port);
    assert_eq!(
        world.domains.poll(DOM1, VcpuId(0), &[port]),
        Ok(PollOutcome::Block)
    );
    world.domains.send(DOM1, port).unwrap();
    assert_eq!(world.poll_wakes(), vec![(DOM1, VcpuId(0))]);
}

#[test]
fn trap12_preempted_reset_asks_for_continuation_as_cmd_14() {
    let world = World::new();
    for _ in 0..200 {
        world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    }
    *world.domains.notify().preemptions_left.lock().unwrap() = 1;
    assert_eq!(
        world.domains.dispatch(DOM1, 10, &[0xF0, 0x7F]),
        Err(Errno::ERESTART)
    );
    assert_eq!(
        world
            .domains
            .dispatch(DOM1, 14, &[0xF0, 0x7F])
            .map(|r| r.is_empty()),
        Ok(true)
    );
    assert_eq!(active(&world, DOM1), 0);
    let _ = ResetMode::Start;
}

#[test]
fn trap14_global_virqs_vcpu_0_only_once_and_only_handler_receives() {
    let world = World::new();
    assert_eq!(
        world
            .domains
            .bind_virq(DOM1, Virq::CONSOLE.number(), VcpuId(1)),
        Err(Errno::EINVAL)
    );
    let dom1_port = world
        .domains
        .bind_virq(DOM1, Virq::CONSOLE.number(), VcpuId(0))
        .unwrap();
    assert_eq!(
        world
            .domains
            .bind_virq(DOM1, Virq::CONSOLE.number(), VcpuId(0)),
        Err(Errno::EEXIST)
    );
    world.domains.send_global_virq(Virq::CONSOLE);
    assert!(
        !world.is_pending(DOM1, dom1_port),
        "dom1 is not the handler"
    );
    // Per-vcpu VIRQ and IPI ports never move.
    let timer = world
        .domains
        .bind_virq(DOM1, Virq::TIMER.number(), VcpuId(0))
        .unwrap();
    let ipi = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    assert_eq!(
        world.domains.bind_vcpu(DOM1, timer, VcpuId(1)),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        world.domains.bind_vcpu(DOM1, ipi, VcpuId(1)),
        Err(Errno::EINVAL)
    );
}

#[test]
fn trap15_successful_bind_stays_allocated_whatever_happens_to_the_copy_out() {
    // evtchn-core has no undo: once dispatch returns Ok the port is
    // allocated, so a failing copy-out in the hypervisor leaves it so.
    let world = World::new();
    let reply = world.domains.dispatch(DOM1, 7, &[0; 8]).unwrap();
    assert!(!reply.is_empty());
    state_is(&world, DOM1, Port(1), ChannelState::Ipi);
    assert_eq!(active(&world, DOM1), 1);
}
