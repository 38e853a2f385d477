//! FIFO ops and their errnos, table-driven (spec §2.13, §4.2, §4.4):
//! init_control, expand_array, set_priority, the switch from 2-level, the
//! allocation limit, busy ports, reset back to 2-level and what destruction
//! releases.

// Runs outside any loom model, on `tests/fifo_support`'s std atomics:
// built only without `--cfg loom` (the loom build is for the
// `#![cfg(loom)]` models).
#![cfg(not(loom))]
mod fifo_support;

use evtchn_core::abi::EvtchnInitControl;
use evtchn_core::{DomId, DomainConfig, Errno, FifoSupport, Port, ResetMode, VcpuId};
use fifo_support::*;

#[test]
fn init_control_errnos_follow_xens_order() {
    let world = FifoWorld::new(2);
    // (what, vcpu, gfn, offset, expected)
    type Case = (&'static str, u32, u64, u32, Result<u8, Errno>);
    let cases: [Case; 10] = [
        ("no such vcpu", 2, CONTROL_GFN, 0, Err(Errno::ENOENT)),
        (
            "no such vcpu beats a bad offset",
            7,
            CONTROL_GFN,
            5,
            Err(Errno::ENOENT),
        ),
        (
            "vcpu u32::MAX",
            u32::MAX,
            CONTROL_GFN,
            0,
            Err(Errno::ENOENT),
        ),
        (
            "offset past 4096 - 72",
            0,
            CONTROL_GFN,
            4032,
            Err(Errno::EINVAL),
        ),
        (
            "offset u32::MAX",
            0,
            CONTROL_GFN,
            u32::MAX,
            Err(Errno::EINVAL),
        ),
        (
            "offset not 8-aligned",
            0,
            CONTROL_GFN,
            4,
            Err(Errno::EINVAL),
        ),
        (
            "bad offset beats a bad frame",
            0,
            FOREIGN_GFN,
            12,
            Err(Errno::EINVAL),
        ),
        (
            "a frame the domain does not own",
            0,
            FOREIGN_GFN,
            0,
            Err(Errno::EINVAL),
        ),
        ("vcpu 0 at offset 0", 0, CONTROL_GFN, 0, Ok(17)),
        ("vcpu 0 again", 0, CONTROL_GFN + 1, 0, Err(Errno::EINVAL)),
    ];
    for (what, vcpu, gfn, offset, expected) in cases {
        assert_eq!(
            world.init_control_at(DOM1, vcpu, gfn, offset),
            expected,
            "{what}"
        );
    }
    // Later vcpus: the largest offset works; a bad frame still fails and
    // leaves the vcpu without a block, so a good one works after it.
    assert_eq!(
        world.init_control_at(DOM1, 1, FOREIGN_GFN, 0),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        world.init_control_at(DOM1, 1, CONTROL_GFN + 1, 4024),
        Ok(17)
    );
    assert_eq!(
        world.init_control_at(DOM1, 1, CONTROL_GFN + 1, 0),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        world.memory(DOM1).mapped(),
        2,
        "one mapping per control block"
    );
}

#[test]
fn failed_first_init_control_leaves_the_domain_two_level() {
    let world = FifoWorld::new(1);
    assert_eq!(
        world.init_control_at(DOM1, 0, FOREIGN_GFN, 0),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        world.domains.set_priority(DOM1, Port(1), 3),
        Err(Errno::ENOSYS)
    );
    assert_eq!(world.expand(DOM1, 0), Err(Errno::EOPNOTSUPP));
    assert_eq!(world.memory(DOM1).mapped(), 0);
}

#[test]
fn init_control_reply_carries_link_bits_17_through_dispatch() {
    let world = FifoWorld::new(1);
    let request = EvtchnInitControl {
        control_gfn: CONTROL_GFN,
        offset: 64,
        vcpu: VcpuId(0),
        ..EvtchnInitControl::default()
    };
    let reply = world
        .domains
        .dispatch(DOM1, 11, &request.to_bytes())
        .unwrap();
    let expected = EvtchnInitControl {
        link_bits: 17,
        ..request
    };
    assert_eq!(reply.as_bytes(), expected.to_bytes());
    // Errors copy nothing back.
    assert_eq!(
        world.domains.dispatch(DOM1, 11, &request.to_bytes()),
        Err(Errno::EINVAL)
    );
}

#[test]
fn fifo_disabled_domain_answers_eopnotsupp_after_the_argument_checks() {
    let mut world = FifoWorld::empty();
    world.add(
        DomainConfig {
            fifo: FifoSupport::Disabled,
            ..DomainConfig::new(DOM1, 1)
        },
        1,
    );
    let cases: [(u32, u32, Errno); 4] = [
        (1, 0, Errno::ENOENT),
        (0, 4, Errno::EINVAL),
        (0, 4032, Errno::EINVAL),
        (0, 0, Errno::EOPNOTSUPP),
    ];
    for (vcpu, offset, errno) in cases {
        assert_eq!(
            world.init_control_at(DOM1, vcpu, CONTROL_GFN, offset),
            Err(errno)
        );
    }
    assert_eq!(world.expand(DOM1, 0), Err(Errno::EOPNOTSUPP));
    assert_eq!(
        world.domains.set_priority(DOM1, Port(1), 3),
        Err(Errno::ENOSYS)
    );
    assert_eq!(world.memory(DOM1).mapped(), 0, "nothing was mapped");
}

#[test]
fn expand_array_errnos() {
    let world = FifoWorld::new(1);
    assert_eq!(
        world.expand(DOM1, 0),
        Err(Errno::EOPNOTSUPP),
        "before init_control"
    );
    world.init_control(DOM1, 0).unwrap();
    assert_eq!(
        world.domains.expand_array(DOM1, FOREIGN_GFN),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        world.domains.expand_array(DOM1, u64::MAX),
        Err(Errno::EINVAL)
    );
    assert_eq!(world.expand(DOM1, 0), Ok(()));
    assert_eq!(world.expand(DOM1, 1), Ok(()));
    assert_eq!(world.memory(DOM1).mapped(), 3);
}

#[test]
fn expand_array_stops_at_128_pages_with_enospc() {
    let mut world = FifoWorld::empty();
    world.add(DomainConfig::new(DOM1, 1), 129);
    world.init_control(DOM1, 0).unwrap();
    for index in 0..128 {
        assert_eq!(world.expand(DOM1, index), Ok(()), "page {index}");
    }
    assert_eq!(world.expand(DOM1, 128), Err(Errno::ENOSPC));
    // -ENOSPC is decided before the frame is looked at.
    assert_eq!(
        world.domains.expand_array(DOM1, FOREIGN_GFN),
        Err(Errno::ENOSPC)
    );
    assert_eq!(world.memory(DOM1).mapped(), 129);
}

#[test]
fn set_priority_errnos_under_fifo() {
    let world = FifoWorld::new(1);
    world.fifo_on(DOM1, 1);
    let ipi = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    let unbound = world.domains.alloc_unbound(DOM1, DOM1, DOM2).unwrap();
    // (what, port, priority, expected)
    let cases: [(&str, Port, u32, Result<(), Errno>); 12] = [
        ("invalid port", Port(64), 0, Err(Errno::EINVAL)),
        (
            "invalid port, bad priority",
            Port(u32::MAX),
            99,
            Err(Errno::EINVAL),
        ),
        ("reserved port 0", Port(0), 7, Err(Errno::EACCES)),
        ("free valid port", Port(63), 7, Err(Errno::EACCES)),
        (
            "free port beats a bad priority",
            Port(63),
            16,
            Err(Errno::EACCES),
        ),
        ("priority 16", ipi, 16, Err(Errno::EINVAL)),
        ("priority 256", ipi, 256, Err(Errno::EINVAL)),
        ("priority u32::MAX", ipi, u32::MAX, Err(Errno::EINVAL)),
        ("priority 0", ipi, 0, Ok(())),
        ("priority 15", ipi, 15, Ok(())),
        ("unbound port", unbound, 3, Ok(())),
        (
            "unbound port, bad priority",
            unbound,
            16,
            Err(Errno::EINVAL),
        ),
    ];
    for (what, port, priority, expected) in cases {
        assert_eq!(
            world.domains.set_priority(DOM1, port, priority),
            expected,
            "{what}"
        );
    }
    assert_eq!(world.domains.channel_info(DOM1, ipi).unwrap().priority, 15);
    assert_eq!(
        world.domains.channel_info(DOM1, unbound).unwrap().priority,
        3
    );
}

#[test]
fn set_priority_of_a_xen_attached_port_gives_eacces() {
    let world = FifoWorld::new(1);
    world.fifo_on(DOM1, 1);
    let port = world
        .domains
        .alloc_unbound_xen(DOM1, VcpuId(0), DOM1, evtchn_core::XenConsumer(1))
        .unwrap();
    assert_eq!(
        world.domains.set_priority(DOM1, port, 3),
        Err(Errno::EACCES)
    );
}

#[test]
fn switch_sets_priority_7_on_every_port_and_rebinding_resets_it() {
    let world = FifoWorld::new(1);
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.init_control(DOM1, 0).unwrap();
    assert_eq!(world.domains.channel_info(DOM1, port).unwrap().priority, 7);
    world.domains.set_priority(DOM1, port, 2).unwrap();
    world.domains.close(DOM1, port).unwrap();
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(0)), Ok(port));
    assert_eq!(world.domains.channel_info(DOM1, port).unwrap().priority, 7);
}

#[test]
fn allocation_limit_is_131071_or_max_evtchn_port_under_fifo() {
    let mut world = FifoWorld::empty();
    world.add(
        DomainConfig {
            max_evtchn_port: i32::MAX as u32,
            ..DomainConfig::new(DOM1, 1)
        },
        0,
    );
    world.add(DomainConfig::new(DOM2, 1), 0);
    // 2-level: 4095 ports.
    for _ in 1..4096 {
        world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    }
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(0)), Err(Errno::ENOSPC));
    world.init_control(DOM1, 0).unwrap();
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(0)), Ok(Port(4096)));
    for expected in 4097..131_072 {
        assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(0)), Ok(Port(expected)));
    }
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(0)), Err(Errno::ENOSPC));
    assert_eq!(world.domains.valid_ports(DOM1), Some(131_072));
    // An xl-style domU keeps its 1023 limit under FIFO.
    world.init_control(DOM2, 0).unwrap();
    for _ in 1..1024 {
        world.domains.bind_ipi(DOM2, VcpuId(0)).unwrap();
    }
    assert_eq!(world.domains.bind_ipi(DOM2, VcpuId(0)), Err(Errno::ENOSPC));
}

#[test]
fn ports_beyond_the_event_array_are_masked_and_keep_their_event_for_expand_array() {
    let world = FifoWorld::new(1);
    world.init_control(DOM1, 0).unwrap();
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    assert_eq!(world.domains.is_masked(DOM1, port), Some(true));
    world.domains.send(DOM1, port).unwrap();
    assert_eq!(world.domains.is_pending(DOM1, port), Some(false));
    assert_eq!(world.upcall_pending(DOM1, 0), 0, "nothing to see yet");
    // A zeroed page: the port is unmasked, and its event is raised now.
    world.expand(DOM1, 0).unwrap();
    assert_eq!(world.word(DOM1, port.0), P | L);
    assert_eq!(
        (world.head(DOM1, 0, 7), world.ready(DOM1, 0)),
        (port.0, 1 << 7)
    );
    assert_eq!(world.upcall_pending(DOM1, 0), 1);
    assert_eq!(world.drain(DOM1, 0), [port.0]);
    // Raised once: a second page does not raise it again.
    world.expand(DOM1, 1).unwrap();
    assert_eq!(world.word(DOM1, port.0), 0);
}

#[test]
fn closing_a_port_with_a_parked_event_raises_nothing_on_expand() {
    let world = FifoWorld::new(1);
    world.init_control(DOM1, 0).unwrap();
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.domains.send(DOM1, port).unwrap();
    world.domains.close(DOM1, port).unwrap();
    world.expand(DOM1, 0).unwrap();
    assert_eq!(world.word(DOM1, port.0), 0, "a free port is not raised");
    assert_eq!(world.ready(DOM1, 0), 0);
}

#[test]
fn a_port_closed_while_linked_is_busy_until_the_guest_unlinks_it() {
    let world = FifoWorld::new(1);
    world.fifo_on(DOM1, 1);
    let first = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    let second = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.domains.send(DOM1, first).unwrap();
    world.domains.close(DOM1, first).unwrap();
    assert_eq!(world.word(DOM1, first.0), L, "close clears P only");
    // alloc_unbound, bind_ipi and bind_interdomain all skip it.
    let third = world.domains.alloc_unbound(DOM1, DOM1, DOM1).unwrap();
    assert_eq!(third, Port(second.0 + 1));
    assert_eq!(
        world.domains.bind_ipi(DOM1, VcpuId(0)),
        Ok(Port(third.0 + 1))
    );
    assert_eq!(
        world.drain(DOM1, 0),
        Vec::<u32>::new(),
        "nothing pending is handled"
    );
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(0)), Ok(first));
}

#[test]
fn static_channel_at_a_busy_port_gives_ebusy() {
    let world = FifoWorld::new(1);
    world.fifo_on(DOM1, 1);
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.domains.send(DOM1, port).unwrap();
    world.domains.close(DOM1, port).unwrap();
    assert_eq!(
        world.domains.alloc_unbound_at(DOM1, port, DOM1),
        Err(Errno::EBUSY)
    );
    world.drain(DOM1, 0);
    assert_eq!(world.domains.alloc_unbound_at(DOM1, port, DOM1), Ok(()));
}

#[test]
fn reset_returns_to_two_level_and_releases_every_mapping() {
    let world = FifoWorld::new(2);
    world.fifo_on(DOM1, 2);
    world.expand(DOM1, 1).unwrap();
    let port = world.domains.bind_ipi(DOM1, VcpuId(1)).unwrap();
    world.domains.send(DOM1, port).unwrap();
    assert_eq!(world.memory(DOM1).mapped(), 4);
    assert_eq!(
        world.domains.reset(DOM1, DomId::SELF, ResetMode::Start),
        Ok(())
    );
    assert_eq!(world.memory(DOM1).mapped(), 0);
    assert_eq!(
        world.domains.set_priority(DOM1, Port(1), 7),
        Err(Errno::ENOSYS)
    );
    assert_eq!(world.expand(DOM1, 2), Err(Errno::EOPNOTSUPP));
    // 2-level again: events go to the bitmap, the limit is 4095 again.
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.domains.send(DOM1, port).unwrap();
    let bitmap = &world.memory(DOM1).shared.evtchn_pending[0];
    assert_ne!(
        bitmap.load(std::sync::atomic::Ordering::SeqCst) & (1 << port.0),
        0
    );
    // And FIFO can be entered again.
    assert_eq!(world.init_control(DOM1, 0), Ok(17));
}

#[test]
fn reset_under_fifo_that_finds_a_new_channel_stays_fifo() {
    // -EAGAIN is only reachable through a concurrent open; here the
    // cursor is driven by preemption instead and a port opened between the
    // chunks is found open at the end.
    let world = FifoWorld::new(1);
    world.fifo_on(DOM1, 1);
    for _ in 0..200 {
        world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    }
    world
        .domains
        .notify()
        .preempt_period
        .store(1, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        world.domains.reset(DOM1, DomId::SELF, ResetMode::Start),
        Err(Errno::ERESTART)
    );
    world
        .domains
        .notify()
        .preempt_period
        .store(0, std::sync::atomic::Ordering::SeqCst);
    // Port 1 is free again: open it behind the cursor.
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(0)), Ok(Port(1)));
    assert_eq!(
        world.domains.reset(DOM1, DomId::SELF, ResetMode::Continue),
        Err(Errno::EAGAIN)
    );
    assert_eq!(
        world.domains.set_priority(DOM1, Port(1), 3),
        Ok(()),
        "still FIFO"
    );
    assert_eq!(world.memory(DOM1).mapped(), 2);
}

#[test]
fn destroy_releases_every_fifo_mapping() {
    let world = FifoWorld::new(2);
    world.fifo_on(DOM1, 2);
    world.expand(DOM1, 1).unwrap();
    assert_eq!(world.memory(DOM1).mapped(), 4);
    world.domains.destroy_domain(DOM1).unwrap();
    assert_eq!(world.memory(DOM1).mapped(), 0);
}

#[test]
fn interrupts_are_off_exactly_around_each_linking() {
    let world = FifoWorld::new(1);
    world.fifo_on(DOM1, 1);
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    for _ in 0..5 {
        world.domains.send(DOM1, port).unwrap();
        world.drain(DOM1, 0);
    }
    let notify = world.domains.notify();
    let off = notify
        .interrupts_off
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(off >= 5);
    assert_eq!(
        off,
        notify
            .interrupts_on
            .load(std::sync::atomic::Ordering::SeqCst)
    );
}

#[test]
fn debug_dump_shows_busy_and_link_for_fifo_ports() {
    let world = FifoWorld::new(1);
    world.init_control(DOM1, 0).unwrap();
    let parked = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    let mut dump = String::new();
    world.domains.dump_domain(DOM1, &mut dump).unwrap();
    assert!(
        dump.contains("       1 [0/1/?     ]: s=6 n=0 x=0"),
        "{dump}"
    );
    world.expand(DOM1, 0).unwrap();
    let second = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.domains.send(DOM1, parked).unwrap();
    world.domains.send(DOM1, second).unwrap();
    let mut dump = String::new();
    world.domains.dump_domain(DOM1, &mut dump).unwrap();
    assert!(dump.contains("       1 [1/0/  2   ]: s=6"), "{dump}");
    assert!(dump.contains("       2 [1/0/  0   ]: s=6"), "{dump}");
}

mod hostile {
    //! XSA-221 for the FIFO ops: any argument gives a defined errno, never
    //! a fault, and what it changes is what the errno says.
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig {
            // PROPTEST_CASES, when set, replaces the default: naming `cases`
            // here would otherwise hide proptest's own variable.
            cases: std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|cases| cases.parse().ok())
                .unwrap_or(500),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn any_fifo_op_argument_gives_a_defined_answer(
            vcpu in prop_oneof![0u32..4, any::<u32>()],
            offset in prop_oneof![0u32..4100, any::<u32>()],
            gfn in prop_oneof![Just(CONTROL_GFN), Just(EVENT_GFN), any::<u64>()],
            port in prop_oneof![0u32..70, any::<u32>()],
            priority in prop_oneof![0u32..20, any::<u32>()],
        ) {
            let world = FifoWorld::new(2);
            let bound = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
            let init = world.init_control_at(DOM1, vcpu, gfn, offset);
            let is_valid_request = vcpu < 2 && offset <= 4024 && offset % 8 == 0;
            let is_owned = (CONTROL_GFN..CONTROL_GFN + 2).contains(&gfn)
                || (EVENT_GFN..EVENT_GFN + 4).contains(&gfn);
            match init {
                Ok(link_bits) => {
                    prop_assert!(is_valid_request && is_owned);
                    prop_assert_eq!(link_bits, 17);
                }
                Err(Errno::ENOENT) => prop_assert!(vcpu >= 2),
                Err(Errno::EINVAL) => prop_assert!(!is_valid_request || !is_owned),
                Err(other) => prop_assert!(false, "init_control gave {:?}", other),
            }
            let is_fifo = init.is_ok();
            let expand = world.domains.expand_array(DOM1, gfn);
            match expand {
                Ok(()) => prop_assert!(is_fifo && is_owned),
                Err(Errno::EOPNOTSUPP) => prop_assert!(!is_fifo),
                Err(Errno::EINVAL) => prop_assert!(is_fifo && !is_owned),
                Err(other) => prop_assert!(false, "expand_array gave {:?}", other),
            }
            let result = world.domains.set_priority(DOM1, Port(port), priority);
            let expected = if port >= 64 {
                Err(Errno::EINVAL)
            } else if !is_fifo {
                Err(Errno::ENOSYS)
            } else if Port(port) != bound {
                Err(Errno::EACCES)
            } else if priority > 15 {
                Err(Errno::EINVAL)
            } else {
                Ok(())
            };
            prop_assert_eq!(result, expected);
            prop_assert_eq!(world.memory(DOM1).mapped(), usize::from(is_fifo) + usize::from(expand.is_ok()));
        }
    }
}

#[test]
fn an_event_pending_on_two_level_is_raised_by_fifo_once_its_page_exists() {
    let world = FifoWorld::new(1);
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.domains.send(DOM1, port).unwrap();
    assert_eq!(world.domains.is_pending(DOM1, port), Some(true));
    world.init_control(DOM1, 0).unwrap();
    // No event word yet: the event waits (masked, not pending).
    assert_eq!(world.domains.is_pending(DOM1, port), Some(false));
    world.expand(DOM1, 0).unwrap();
    assert_eq!(world.word(DOM1, port.0), P | L);
    assert_eq!(world.drain(DOM1, 0), [port.0]);
}
