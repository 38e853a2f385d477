//! FIFO linking as a guest sees it (spec §4.3–§4.5), following the checks of
//! `tests/guests/evtchn-fifo`, which pass on real Xen 4.17: the same steps,
//! the same expected words, heads, ready bits and upcalls.

// Runs outside any loom model, on `tests/fifo_support`'s std atomics:
// built only without `--cfg loom` (the loom build is for the
// `#![cfg(loom)]` models).
#![cfg(not(loom))]
mod fifo_support;

use evtchn_core::{DomId, Errno, Port, ResetMode, VcpuId};
use fifo_support::*;

/// Byte offset of vcpu 1's control block in the guest test: 4096 − 72.
const LAST_OFFSET: u32 = 4024;

fn view_at(world: &FifoWorld, vcpu: u32, offset: u32) -> ControlBlockView<'_> {
    ControlBlockView {
        words: &world.memory(DOM1).page(CONTROL_GFN + u64::from(vcpu)).words,
        first: (offset / 4) as usize,
    }
}

#[test]
fn the_evtchn_fifo_guest_sequence_gives_xen_4_17s_answers() {
    let world = FifoWorld::new(2);
    let d = &world.domains;

    // switching()
    assert_eq!(d.set_priority(DOM1, Port(0), 7), Err(Errno::ENOSYS));
    assert_eq!(d.bind_ipi(DOM1, VcpuId(0)), Ok(Port(1)));
    d.send(DOM1, Port(1)).unwrap();
    assert_eq!(d.is_pending(DOM1, Port(1)), Some(true), "2-level bitmap");
    assert_eq!(world.init_control(DOM1, 0), Ok(17));
    assert_eq!(world.init_control(DOM1, 0), Err(Errno::EINVAL));
    assert_eq!(world.init_control(DOM1, 1000), Err(Errno::ENOENT));
    assert_eq!(d.set_priority(DOM1, Port(1), 7), Ok(()));
    assert_eq!(d.set_priority(DOM1, Port(1), 16), Err(Errno::EINVAL));
    assert_eq!(d.set_priority(DOM1, Port(63), 7), Err(Errno::EACCES));
    assert_eq!(d.set_priority(DOM1, Port(0), 7), Err(Errno::EACCES));
    assert_eq!(d.set_priority(DOM1, Port(3000), 7), Err(Errno::EINVAL));
    world.clear_upcall_pending(DOM1, 0);
    assert_eq!(world.expand(DOM1, 0), Ok(()));
    assert_eq!(
        (
            world.word(DOM1, 1),
            world.head(DOM1, 0, 7),
            world.ready(DOM1, 0)
        ),
        (P | L, 1, 1 << 7),
        "the 2-level pending bit survives the switch"
    );
    assert_eq!(world.upcall_pending(DOM1, 0), 1);
    assert_eq!(world.drain(DOM1, 0), [1]);
    assert_eq!(world.word(DOM1, 1), 0);

    // queues()
    world.clear_upcall_pending(DOM1, 0);
    d.send(DOM1, Port(1)).unwrap();
    assert_eq!(
        (
            world.word(DOM1, 1),
            world.head(DOM1, 0, 7),
            world.ready(DOM1, 0)
        ),
        (P | L, 1, 1 << 7)
    );
    assert_eq!(world.upcall_pending(DOM1, 0), 1);
    assert_eq!(world.drain(DOM1, 0), [1]);
    let bound: Vec<_> = (0..3).map(|_| d.bind_ipi(DOM1, VcpuId(0))).collect();
    assert_eq!(bound, [Ok(Port(2)), Ok(Port(3)), Ok(Port(4))]);
    assert_eq!(
        (
            world.word(DOM1, 2),
            world.word(DOM1, 3),
            world.word(DOM1, 4)
        ),
        (0, 0, 0)
    );
    world.clear_upcall_pending(DOM1, 0);
    d.send(DOM1, Port(3)).unwrap();
    assert_eq!(
        world.upcall_pending(DOM1, 0),
        1,
        "first event of an empty queue"
    );
    world.clear_upcall_pending(DOM1, 0);
    d.send(DOM1, Port(2)).unwrap();
    d.send(DOM1, Port(4)).unwrap();
    assert_eq!(
        world.upcall_pending(DOM1, 0),
        0,
        "joining a non-empty queue"
    );
    assert_eq!(
        (
            world.word(DOM1, 3) & LINK,
            world.word(DOM1, 2) & LINK,
            world.word(DOM1, 4) & LINK
        ),
        (2, 4, 0),
        "3 -> 2 -> 4"
    );
    assert_eq!(world.drain(DOM1, 0), [3, 2, 4]);
    d.set_priority(DOM1, Port(2), 3).unwrap();
    d.send(DOM1, Port(3)).unwrap();
    d.send(DOM1, Port(2)).unwrap();
    assert_eq!(world.ready(DOM1, 0), (1 << 3) | (1 << 7));
    assert_eq!(world.drain(DOM1, 0), [2, 3], "priority 3 before priority 7");
    d.close(DOM1, Port(2)).unwrap();
    assert_eq!(d.bind_ipi(DOM1, VcpuId(0)), Ok(Port(2)));
    d.send(DOM1, Port(2)).unwrap();
    d.send(DOM1, Port(3)).unwrap();
    assert_eq!(
        world.ready(DOM1, 0),
        1 << 7,
        "a re-bound port is back at priority 7"
    );
    assert_eq!(world.drain(DOM1, 0), [2, 3]);

    // masking()
    world
        .word_of(DOM1, 4)
        .fetch_or(M, std::sync::atomic::Ordering::SeqCst);
    d.send(DOM1, Port(4)).unwrap();
    assert_eq!((world.word(DOM1, 4), world.ready(DOM1, 0)), (M | P, 0));
    assert_eq!(d.unmask(DOM1, Port(4)), Ok(()));
    assert_eq!((world.word(DOM1, 4), world.ready(DOM1, 0)), (P | L, 1 << 7));
    d.send(DOM1, Port(4)).unwrap();
    assert_eq!(world.word(DOM1, 4), P | L, "a second send changes nothing");
    assert_eq!(world.drain(DOM1, 0), [4]);

    // busy_ports()
    d.send(DOM1, Port(3)).unwrap();
    d.close(DOM1, Port(3)).unwrap();
    assert_eq!(world.word(DOM1, 3), L);
    assert_eq!(d.alloc_unbound(DOM1, DomId::SELF, DomId::SELF), Ok(Port(5)));
    assert_eq!(world.drain(DOM1, 0), Vec::<u32>::new());
    assert_eq!(d.alloc_unbound(DOM1, DomId::SELF, DomId::SELF), Ok(Port(3)));
    d.close(DOM1, Port(3)).unwrap();
    d.close(DOM1, Port(5)).unwrap();

    // other_vcpu()
    assert_eq!(d.bind_ipi(DOM1, VcpuId(1)), Ok(Port(3)));
    d.send(DOM1, Port(3)).unwrap();
    assert_eq!(world.word(DOM1, 3), 0, "no control block: not even P");
    assert_eq!(
        world.init_control_at(DOM1, 1, CONTROL_GFN + 1, LAST_OFFSET),
        Ok(17)
    );
    world.clear_upcall_pending(DOM1, 1);
    d.send(DOM1, Port(3)).unwrap();
    let block1 = view_at(&world, 1, LAST_OFFSET);
    assert_eq!(
        (
            world.word(DOM1, 3),
            block1.head(7).load(std::sync::atomic::Ordering::SeqCst),
            block1.ready().load(std::sync::atomic::Ordering::SeqCst)
        ),
        (P | L, 3, 1 << 7)
    );
    assert_eq!(world.upcall_pending(DOM1, 1), 1);
    d.close(DOM1, Port(3)).unwrap();
    assert_eq!(world.expand(DOM1, 1), Ok(()));
    assert_eq!(d.expand_array(DOM1, 0xff_ffff_ffff), Err(Errno::EINVAL));

    // back_to_two_level()
    assert_eq!(d.reset(DOM1, DomId::SELF, ResetMode::Start), Ok(()));
    assert_eq!(d.set_priority(DOM1, Port(0), 7), Err(Errno::ENOSYS));
    for word in &world.memory(DOM1).shared.evtchn_pending {
        word.store(0, std::sync::atomic::Ordering::SeqCst);
    }
    assert_eq!(d.bind_ipi(DOM1, VcpuId(0)), Ok(Port(1)));
    d.send(DOM1, Port(1)).unwrap();
    assert_eq!(
        d.is_pending(DOM1, Port(1)),
        Some(true),
        "2-level bitmap again"
    );
}

#[test]
fn set_priority_applies_to_the_next_linking_only() {
    let world = FifoWorld::new(1);
    world.fifo_on(DOM1, 1);
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.domains.send(DOM1, port).unwrap();
    world.domains.set_priority(DOM1, port, 2).unwrap();
    world.domains.send(DOM1, port).unwrap();
    assert_eq!(world.ready(DOM1, 0), 1 << 7, "still on queue 7");
    assert_eq!(world.drain(DOM1, 0), [port.0]);
    world.domains.send(DOM1, port).unwrap();
    assert_eq!(world.ready(DOM1, 0), 1 << 2);
    assert_eq!(world.head(DOM1, 0, 2), port.0);
    assert_eq!(world.drain(DOM1, 0), [port.0]);
}

#[test]
fn bind_vcpu_moves_future_events_to_the_new_vcpus_queue() {
    let world = FifoWorld::new(2);
    world.fifo_on(DOM1, 2);
    let port = world.domains.alloc_unbound(DOM1, DOM1, DOM1).unwrap();
    let peer = world.domains.bind_interdomain(DOM1, DOM1, port).unwrap();
    assert_eq!(
        world.drain(DOM1, 0),
        [peer.0],
        "bind sets the new port pending"
    );
    world.domains.send(DOM1, peer).unwrap();
    world.domains.bind_vcpu(DOM1, port, VcpuId(1)).unwrap();
    world.domains.send(DOM1, peer).unwrap();
    assert_eq!(
        world.ready(DOM1, 1),
        0,
        "the linked event stays where it is"
    );
    assert_eq!(world.drain(DOM1, 0), [port.0]);
    world.domains.send(DOM1, peer).unwrap();
    assert_eq!(world.drain(DOM1, 1), [port.0]);
    assert_eq!(world.ready(DOM1, 0), 0);
}

#[test]
fn events_on_one_queue_come_out_in_the_order_raised() {
    let world = FifoWorld::new(1);
    world.fifo_on(DOM1, 1);
    let ports: Vec<Port> = (0..50)
        .map(|_| world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap())
        .collect();
    let order: Vec<u32> = ports.iter().rev().step_by(3).map(|port| port.0).collect();
    for &port in &order {
        world.domains.send(DOM1, Port(port)).unwrap();
    }
    assert_eq!(world.drain(DOM1, 0), order);
}

#[test]
fn a_pending_event_wakes_pollers_once_and_a_masked_one_too() {
    let world = FifoWorld::new(1);
    world.fifo_on(DOM1, 1);
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world
        .word_of(DOM1, port.0)
        .fetch_or(M, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        world.domains.poll(DOM1, VcpuId(0), &[port]),
        Ok(evtchn_core::PollOutcome::Block)
    );
    world.domains.send(DOM1, port).unwrap();
    assert_eq!(world.domains.notify().poll_wakes.lock().unwrap().len(), 1);
    assert_eq!(
        world.domains.poll(DOM1, VcpuId(0), &[port]),
        Ok(evtchn_core::PollOutcome::Ready),
        "P set on a masked port is pending for poll"
    );
}

#[test]
fn unmask_of_an_unmasked_pending_port_links_it_if_not_linked() {
    // Xen's FIFO unmask re-raises whenever P is set (unlike 2-level, which
    // needs M to have been set).
    let world = FifoWorld::new(1);
    world.fifo_on(DOM1, 1);
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world
        .word_of(DOM1, port.0)
        .store(P, std::sync::atomic::Ordering::SeqCst);
    world.domains.unmask(DOM1, port).unwrap();
    assert_eq!(world.word(DOM1, port.0), P | L);
    assert_eq!(world.drain(DOM1, 0), [port.0]);
    world.domains.unmask(DOM1, port).unwrap();
    assert_eq!(
        world.word(DOM1, port.0),
        0,
        "nothing pending: nothing linked"
    );
}

#[test]
fn unmask_of_a_free_port_does_nothing_and_answers_0() {
    let world = FifoWorld::new(1);
    world.fifo_on(DOM1, 1);
    world
        .word_of(DOM1, 9)
        .store(P | M, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(world.domains.unmask(DOM1, Port(9)), Ok(()));
    assert_eq!(world.word(DOM1, 9), P | M);
}

#[test]
fn interrupt_context_virqs_link_like_guest_sends() {
    let world = FifoWorld::new(2);
    world.fifo_on(DOM1, 2);
    let timer = world.domains.bind_virq(DOM1, 0, VcpuId(1)).unwrap();
    world.domains.set_priority(DOM1, timer, 0).unwrap();
    world.clear_upcall_pending(DOM1, 1);
    let virq_timer = evtchn_core::Virq::new(0).unwrap();
    world.domains.send_vcpu_virq(DOM1, VcpuId(1), virq_timer);
    world.domains.send_vcpu_virq(DOM1, VcpuId(1), virq_timer);
    assert_eq!(world.word(DOM1, timer.0), P | L);
    assert_eq!((world.head(DOM1, 1, 0), world.ready(DOM1, 1)), (timer.0, 1));
    assert_eq!(world.upcall_pending(DOM1, 1), 1);
    assert_eq!(world.kicks(), [(DOM1, VcpuId(1))]);
    assert_eq!(world.drain(DOM1, 1), [timer.0]);
    // The vcpu 0 table has no timer: nothing happens there.
    world.domains.send_vcpu_virq(DOM1, VcpuId(0), virq_timer);
    assert_eq!(world.ready(DOM1, 0), 0);
}

#[test]
fn an_event_raised_while_the_guest_holds_the_ready_bit_raises_no_second_upcall() {
    let world = FifoWorld::new(1);
    world.fifo_on(DOM1, 1);
    let first = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    let second = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.domains.set_priority(DOM1, second, 3).unwrap();
    world.domains.send(DOM1, first).unwrap();
    world.clear_upcall_pending(DOM1, 0);
    // Queue 3 is empty: its head is written and its ready bit set, and
    // since upcall_pending was clear the vcpu is kicked again.
    world.domains.send(DOM1, second).unwrap();
    assert_eq!(world.ready(DOM1, 0), (1 << 3) | (1 << 7));
    assert_eq!(world.upcall_pending(DOM1, 0), 1);
    assert_eq!(world.kicks().len(), 2);
    // A third event behind the tail of queue 7 changes neither.
    let third = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.clear_upcall_pending(DOM1, 0);
    world.domains.send(DOM1, third).unwrap();
    assert_eq!(world.upcall_pending(DOM1, 0), 0);
    assert_eq!(world.kicks().len(), 2);
    assert_eq!(world.drain(DOM1, 0), [second.0, first.0, third.0]);
}
