//! Behaviour of alloc_unbound, bind_interdomain, bind_virq, bind_ipi and
//! bind_pirq: results, errno and precedence (spec §2.2, §2.3, §2.7–§2.9).

mod common;

use common::*;
use evtchn_core::abi::{EVTCHN_FIFO_PRIORITY_DEFAULT, EvtchnBindPirq};
use evtchn_core::{
    ChannelState, Consumer, DomId, DomainConfig, Errno, PirqSharing, Port, VcpuId, Virq,
};

// ----- alloc_unbound -----

#[test]
fn alloc_unbound_first_port_of_fresh_domain_is_1() {
    let world = World::new();
    assert_eq!(
        world.domains.alloc_unbound(DOM1, DomId::SELF, DOM2),
        Ok(Port(1))
    );
    state_is(
        &world,
        DOM1,
        Port(1),
        ChannelState::Unbound {
            remote: DOM2,
            consumer: Consumer::Guest,
        },
    );
    assert_eq!(world.notify_vcpu(DOM1, Port(1)), VcpuId(0));
    assert!(
        !world.is_pending(DOM1, Port(1)),
        "alloc_unbound sets nothing pending"
    );
    assert_eq!(active(&world, DOM1), 1);
}

#[test]
fn alloc_unbound_hands_out_lowest_free_port_again_after_close() {
    let world = World::new();
    for expected in 1..=5 {
        assert_eq!(
            world.domains.alloc_unbound(DOM1, DomId::SELF, DOM2),
            Ok(Port(expected))
        );
    }
    world.domains.close(DOM1, Port(2)).unwrap();
    world.domains.close(DOM1, Port(4)).unwrap();
    assert_eq!(
        world.domains.alloc_unbound(DOM1, DomId::SELF, DOM2),
        Ok(Port(2))
    );
    assert_eq!(
        world.domains.alloc_unbound(DOM1, DomId::SELF, DOM2),
        Ok(Port(4))
    );
    assert_eq!(
        world.domains.alloc_unbound(DOM1, DomId::SELF, DOM2),
        Ok(Port(6))
    );
}

#[test]
fn alloc_unbound_remote_self_means_caller_not_target() {
    let world = World::new();
    // dom0 (privileged) allocates in dom1 with remote DOMID_SELF: the
    // remote is dom0, the caller, not dom1.
    let port = world
        .domains
        .alloc_unbound(DOM0, DOM1, DomId::SELF)
        .unwrap();
    state_is(
        &world,
        DOM1,
        port,
        ChannelState::Unbound {
            remote: DOM0,
            consumer: Consumer::Guest,
        },
    );
}

#[test]
fn alloc_unbound_stores_any_remote_domid_unvalidated() {
    let world = World::new();
    for remote in [DomId(77), DomId::XEN, DomId::INVALID, DomId(0xFFFF)] {
        let port = world
            .domains
            .alloc_unbound(DOM1, DomId::SELF, remote)
            .unwrap();
        state_is(
            &world,
            DOM1,
            port,
            ChannelState::Unbound {
                remote,
                consumer: Consumer::Guest,
            },
        );
    }
}

#[test]
fn alloc_unbound_errors_by_input_class() {
    let world = World::new();
    let cases: [(&str, DomId, DomId, Errno); 6] = [
        ("unknown domain", DomId(9), DomId::SELF, Errno::ESRCH),
        ("DOMID_XEN", DomId::XEN, DomId::SELF, Errno::ESRCH),
        ("DOMID_IO", DomId::IO, DomId::SELF, Errno::ESRCH),
        ("DOMID_INVALID", DomId::INVALID, DomId::SELF, Errno::ESRCH),
        (
            "unprivileged on foreign domain",
            DOM2,
            DomId::SELF,
            Errno::EPERM,
        ),
        ("unprivileged on dom0", DOM0, DomId::SELF, Errno::EPERM),
    ];
    for (what, dom, remote, errno) in cases {
        let before = world.snapshot(DOM2);
        assert_eq!(
            world.domains.alloc_unbound(DOM1, dom, remote),
            Err(errno),
            "{what}"
        );
        assert_eq!(world.snapshot(DOM2), before, "{what}: nothing changed");
    }
}

#[test]
fn alloc_unbound_privileged_caller_may_allocate_in_any_domain() {
    let world = World::new();
    assert_eq!(world.domains.alloc_unbound(DOM0, DOM2, DOM1), Ok(Port(1)));
}

#[test]
fn alloc_unbound_unknown_caller_gives_esrch() {
    let world = World::new();
    assert_eq!(
        world.domains.alloc_unbound(DomId(42), DomId::SELF, DOM1),
        Err(Errno::ESRCH)
    );
}

#[test]
fn alloc_unbound_unprivileged_naming_full_foreign_domain_gets_enospc_before_eperm() {
    let mut world = World::empty();
    world.add(DomainConfig {
        max_evtchn_port: 3,
        ..DomainConfig::new(DOM1, 1)
    });
    world.add(DomainConfig::new(DOM2, 1));
    for _ in 1..=3 {
        world
            .domains
            .alloc_unbound(DOM1, DomId::SELF, DOM2)
            .unwrap();
    }
    assert_eq!(
        world.domains.alloc_unbound(DOM2, DOM1, DomId::SELF),
        Err(Errno::ENOSPC)
    );
    assert_eq!(
        world.domains.alloc_unbound(DOM1, DomId::SELF, DOM2),
        Err(Errno::ENOSPC)
    );
}

#[test]
fn allocation_grows_storage_in_64_port_buckets_only_when_needed() {
    let world = World::new();
    assert_eq!(world.domains.valid_ports(DOM1), Some(64));
    for _ in 1..=63 {
        world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    }
    assert_eq!(world.domains.valid_ports(DOM1), Some(64));
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(0)), Ok(Port(64)));
    assert_eq!(world.domains.valid_ports(DOM1), Some(128));
}

#[test]
fn alloc_unbound_takes_the_lowest_free_port_across_the_first_bucket_edge() {
    let world = World::new();
    let alloc = || world.domains.alloc_unbound(DOM1, DomId::SELF, DOM2);
    for expected in 1..=64 {
        assert_eq!(alloc(), Ok(Port(expected)));
    }
    assert_eq!(world.domains.valid_ports(DOM1), Some(128));
    // A port freed in bucket 0 is the lowest again; past it the scan goes
    // on into the next bucket.
    world.domains.close(DOM1, Port(5)).unwrap();
    world.domains.close(DOM1, Port(64)).unwrap();
    assert_eq!(alloc(), Ok(Port(5)));
    assert_eq!(alloc(), Ok(Port(64)));
    assert_eq!(alloc(), Ok(Port(65)));
    // Refused by TARGET after a free port was found (in bucket 0, then
    // past it): the port stays free for the next allocation.
    world.domains.close(DOM1, Port(9)).unwrap();
    assert_eq!(
        world.domains.alloc_unbound(DOM2, DOM1, DomId::SELF),
        Err(Errno::EPERM)
    );
    assert_eq!(alloc(), Ok(Port(9)));
    assert_eq!(
        world.domains.alloc_unbound(DOM2, DOM1, DomId::SELF),
        Err(Errno::EPERM)
    );
    assert_eq!(alloc(), Ok(Port(66)));
    assert_eq!(world.active_of(DOM1), 66);
}

#[test]
fn allocation_stops_at_max_evtchn_port() {
    let mut world = World::empty();
    world.add(DomainConfig {
        max_evtchn_port: 70,
        ..DomainConfig::new(DOM1, 1)
    });
    for expected in 1..=70 {
        assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(0)), Ok(Port(expected)));
    }
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(0)), Err(Errno::ENOSPC));
    assert_eq!(active(&world, DOM1), 70);
}

#[test]
fn allocation_limit_for_two_level_is_4095_even_for_unlimited_domain() {
    let mut world = World::empty();
    world.add(DomainConfig {
        max_evtchn_port: i32::MAX as u32,
        ..DomainConfig::new(DOM0, 1)
    });
    for expected in 1..=4095 {
        assert_eq!(world.domains.bind_ipi(DOM0, VcpuId(0)), Ok(Port(expected)));
    }
    assert_eq!(world.domains.bind_ipi(DOM0, VcpuId(0)), Err(Errno::ENOSPC));
    assert_eq!(world.domains.valid_ports(DOM0), Some(4096));
    assert_eq!(active(&world, DOM0), 4095);
}

// ----- bind_interdomain -----

#[test]
fn bind_interdomain_connects_both_ends_and_sets_new_local_port_pending() {
    let world = World::new();
    let remote_port = world
        .domains
        .alloc_unbound(DOM2, DomId::SELF, DOM1)
        .unwrap();
    world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap(); // occupy port 1
    let local_port = world
        .domains
        .bind_interdomain(DOM1, DOM2, remote_port)
        .unwrap();
    assert_eq!(local_port, Port(2));
    state_is(
        &world,
        DOM1,
        local_port,
        ChannelState::Interdomain {
            remote: DOM2,
            remote_port,
            consumer: Consumer::Guest,
        },
    );
    state_is(
        &world,
        DOM2,
        remote_port,
        ChannelState::Interdomain {
            remote: DOM1,
            remote_port: local_port,
            consumer: Consumer::Guest,
        },
    );
    assert!(world.is_pending(DOM1, local_port));
    assert!(!world.is_pending(DOM2, remote_port));
    assert_eq!(world.selector(DOM1, 0), 1);
    assert_eq!(world.upcall_pending(DOM1, 0), 1);
    assert_eq!(world.kicks(), vec![(DOM1, VcpuId(0))]);
}

#[test]
fn bind_interdomain_pending_even_when_local_port_is_masked() {
    let world = World::new();
    let remote_port = world
        .domains
        .alloc_unbound(DOM2, DomId::SELF, DOM1)
        .unwrap();
    world.mask(DOM1, Port(1)); // the port bind will get
    let local_port = world
        .domains
        .bind_interdomain(DOM1, DOM2, remote_port)
        .unwrap();
    assert!(world.is_pending(DOM1, local_port));
    assert_eq!(world.selector(DOM1, 0), 0, "masked: no selector");
    assert!(world.kicks().is_empty());
}

#[test]
fn bind_interdomain_loopback_with_domid_self() {
    let world = World::new();
    let first = world
        .domains
        .alloc_unbound(DOM1, DomId::SELF, DomId::SELF)
        .unwrap();
    let second = world
        .domains
        .bind_interdomain(DOM1, DomId::SELF, first)
        .unwrap();
    state_is(
        &world,
        DOM1,
        first,
        ChannelState::Interdomain {
            remote: DOM1,
            remote_port: second,
            consumer: Consumer::Guest,
        },
    );
    assert!(world.is_pending(DOM1, second));
}

#[test]
fn bind_interdomain_remote_keeps_its_notify_vcpu() {
    let world = World::new();
    let remote_port = world
        .domains
        .alloc_unbound(DOM2, DomId::SELF, DOM1)
        .unwrap();
    world
        .domains
        .bind_vcpu(DOM2, remote_port, VcpuId(1))
        .unwrap();
    let local_port = world
        .domains
        .bind_interdomain(DOM1, DOM2, remote_port)
        .unwrap();
    assert_eq!(world.notify_vcpu(DOM2, remote_port), VcpuId(1));
    assert_eq!(world.notify_vcpu(DOM1, local_port), VcpuId(0));
}

#[test]
fn bind_interdomain_errors_by_input_class() {
    let world = World::new();
    let for_dom1 = world
        .domains
        .alloc_unbound(DOM2, DomId::SELF, DOM1)
        .unwrap(); // 1
    let for_dom0 = world
        .domains
        .alloc_unbound(DOM2, DomId::SELF, DOM0)
        .unwrap(); // 2
    let ipi = world.domains.bind_ipi(DOM2, VcpuId(0)).unwrap(); // 3
    let (connected, _) = world.connect(DOM2, DOM1); // dom2 4 <-> dom1 1
    let cases: [(&str, DomId, Port, Errno); 12] = [
        ("unknown remote domain", DomId(9), for_dom1, Errno::ESRCH),
        ("DOMID_XEN", DomId::XEN, for_dom1, Errno::ESRCH),
        ("DOMID_COW", DomId::COW, for_dom1, Errno::ESRCH),
        ("port 0", DOM2, Port(0), Errno::EINVAL),
        ("invalid port", DOM2, Port(64), Errno::EINVAL),
        ("huge port", DOM2, Port(u32::MAX), Errno::EINVAL),
        ("free port", DOM2, Port(10), Errno::EINVAL),
        ("unbound for another domain", DOM2, for_dom0, Errno::EINVAL),
        ("ipi port", DOM2, ipi, Errno::EINVAL),
        ("already connected port", DOM2, connected, Errno::EINVAL),
        (
            "own free port via self",
            DomId::SELF,
            Port(5),
            Errno::EINVAL,
        ),
        ("free port of another domain", DOM0, Port(1), Errno::EINVAL),
    ];
    for (what, remote_dom, remote_port, errno) in cases {
        let before = (world.snapshot(DOM1), world.snapshot(DOM2));
        assert_eq!(
            world
                .domains
                .bind_interdomain(DOM1, remote_dom, remote_port),
            Err(errno),
            "{what}"
        );
        assert_eq!(
            (world.snapshot(DOM1), world.snapshot(DOM2)),
            before,
            "{what}"
        );
    }
    // The right port still binds afterwards.
    assert_eq!(
        world.domains.bind_interdomain(DOM1, DOM2, for_dom1),
        Ok(Port(2))
    );
}

#[test]
fn bind_interdomain_needs_no_privilege() {
    let world = World::new();
    let port = world
        .domains
        .alloc_unbound(DOM0, DomId::SELF, DOM2)
        .unwrap();
    assert!(world.domains.bind_interdomain(DOM2, DOM0, port).is_ok());
}

#[test]
fn bind_interdomain_with_full_local_table_gives_enospc_before_checking_remote() {
    let mut world = World::empty();
    world.add(DomainConfig {
        max_evtchn_port: 2,
        ..DomainConfig::new(DOM1, 1)
    });
    world.add(DomainConfig::new(DOM2, 1));
    world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    // The remote port is invalid too, but allocation is checked first.
    assert_eq!(
        world.domains.bind_interdomain(DOM1, DOM2, Port(999)),
        Err(Errno::ENOSPC)
    );
}

// ----- bind_virq -----

#[test]
fn bind_virq_per_vcpu_on_each_vcpu_once() {
    let world = World::new();
    let on_0 = world
        .domains
        .bind_virq(DOM1, Virq::TIMER.number(), VcpuId(0))
        .unwrap();
    let on_1 = world
        .domains
        .bind_virq(DOM1, Virq::TIMER.number(), VcpuId(1))
        .unwrap();
    assert_ne!(on_0, on_1);
    state_is(&world, DOM1, on_1, ChannelState::Virq { virq: Virq::TIMER });
    assert_eq!(world.notify_vcpu(DOM1, on_1), VcpuId(1));
    assert_eq!(
        world.domains.virq_port(DOM1, VcpuId(1), Virq::TIMER),
        Some(on_1)
    );
    assert_eq!(
        world
            .domains
            .bind_virq(DOM1, Virq::TIMER.number(), VcpuId(1)),
        Err(Errno::EEXIST)
    );
}

#[test]
fn bind_virq_global_only_on_vcpu_0_and_once() {
    let world = World::new();
    assert_eq!(
        world
            .domains
            .bind_virq(DOM1, Virq::DOM_EXC.number(), VcpuId(1)),
        Err(Errno::EINVAL)
    );
    let port = world
        .domains
        .bind_virq(DOM1, Virq::DOM_EXC.number(), VcpuId(0))
        .unwrap();
    assert_eq!(world.notify_vcpu(DOM1, port), VcpuId(0));
    assert_eq!(
        world
            .domains
            .bind_virq(DOM1, Virq::DOM_EXC.number(), VcpuId(0)),
        Err(Errno::EEXIST)
    );
    // Moving it does not allow a second binding.
    world.domains.bind_vcpu(DOM1, port, VcpuId(1)).unwrap();
    assert_eq!(
        world
            .domains
            .bind_virq(DOM1, Virq::DOM_EXC.number(), VcpuId(0)),
        Err(Errno::EEXIST)
    );
}

#[test]
fn bind_virq_every_class_binds_as_its_class_says() {
    for virq in Virq::all() {
        let world = World::new();
        let on_vcpu_1 = world.domains.bind_virq(DOM1, virq.number(), VcpuId(1));
        if virq.is_per_vcpu() {
            assert!(on_vcpu_1.is_ok(), "{virq}");
        } else {
            assert_eq!(on_vcpu_1, Err(Errno::EINVAL), "{virq}");
            assert!(
                world
                    .domains
                    .bind_virq(DOM1, virq.number(), VcpuId(0))
                    .is_ok(),
                "{virq}"
            );
        }
    }
}

#[test]
fn bind_virq_any_domain_may_bind_a_global_virq_in_4_17() {
    let world = World::new();
    assert!(
        world
            .domains
            .bind_virq(DOM2, Virq::CONSOLE.number(), VcpuId(0))
            .is_ok()
    );
    assert!(
        world
            .domains
            .bind_virq(DOM1, Virq::CONSOLE.number(), VcpuId(0))
            .is_ok()
    );
}

#[test]
fn bind_virq_errors_by_input_class_in_precedence_order() {
    let world = World::new();
    world
        .domains
        .bind_virq(DOM1, Virq::TIMER.number(), VcpuId(0))
        .unwrap();
    let cases: [(&str, u32, VcpuId, Errno); 9] = [
        ("virq 24", 24, VcpuId(0), Errno::EINVAL),
        ("virq -1 as u32", u32::MAX, VcpuId(0), Errno::EINVAL),
        (
            "virq i32::MIN as u32",
            0x8000_0000,
            VcpuId(0),
            Errno::EINVAL,
        ),
        ("bad virq beats bad vcpu", 99, VcpuId(99), Errno::EINVAL),
        (
            "global virq on vcpu 1",
            Virq::CONSOLE.number(),
            VcpuId(1),
            Errno::EINVAL,
        ),
        (
            "global virq on missing vcpu: class first",
            2,
            VcpuId(9),
            Errno::EINVAL,
        ),
        (
            "per-vcpu virq on missing vcpu",
            Virq::TIMER.number(),
            VcpuId(2),
            Errno::ENOENT,
        ),
        (
            "per-vcpu virq on huge vcpu",
            Virq::DEBUG.number(),
            VcpuId(u32::MAX),
            Errno::ENOENT,
        ),
        (
            "already bound",
            Virq::TIMER.number(),
            VcpuId(0),
            Errno::EEXIST,
        ),
    ];
    for (what, virq, vcpu, errno) in cases {
        let before = world.snapshot(DOM1);
        assert_eq!(
            world.domains.bind_virq(DOM1, virq, vcpu),
            Err(errno),
            "{what}"
        );
        assert_eq!(world.snapshot(DOM1), before, "{what}");
    }
}

// ----- bind_ipi -----

#[test]
fn bind_ipi_notifies_the_given_vcpu() {
    let world = World::new();
    let port = world.domains.bind_ipi(DOM1, VcpuId(1)).unwrap();
    state_is(&world, DOM1, port, ChannelState::Ipi);
    assert_eq!(world.notify_vcpu(DOM1, port), VcpuId(1));
    let info = world.domains.channel_info(DOM1, port).unwrap();
    assert_eq!(info.priority, EVTCHN_FIFO_PRIORITY_DEFAULT);
}

#[test]
fn bind_ipi_on_missing_vcpu_gives_enoent() {
    let world = World::new();
    for vcpu in [VcpuId(2), VcpuId(32), VcpuId(u32::MAX)] {
        assert_eq!(
            world.domains.bind_ipi(DOM1, vcpu),
            Err(Errno::ENOENT),
            "{vcpu}"
        );
    }
    assert_eq!(active(&world, DOM1), 0);
}

// ----- bind_pirq -----

#[test]
fn bind_pirq_binds_host_irq_and_port() {
    let world = World::new();
    world.map_pirq(DOM1, 5);
    let port = world
        .domains
        .bind_pirq(DOM1, 5, EvtchnBindPirq::WILL_SHARE)
        .unwrap();
    state_is(&world, DOM1, port, ChannelState::Pirq { pirq: 5 });
    assert_eq!(world.notify_vcpu(DOM1, port), VcpuId(0));
    assert_eq!(
        world
            .domains
            .pirq_host()
            .bound
            .lock()
            .unwrap()
            .get(&(DOM1, 5)),
        Some(&PirqSharing::WillShare)
    );
}

#[test]
fn bind_pirq_without_will_share_binds_exclusive() {
    let world = World::new();
    world.map_pirq(DOM1, 5);
    world.domains.bind_pirq(DOM1, 5, 0).unwrap();
    assert_eq!(
        world
            .domains
            .pirq_host()
            .bound
            .lock()
            .unwrap()
            .get(&(DOM1, 5)),
        Some(&PirqSharing::Exclusive)
    );
}

#[test]
fn bind_pirq_errors_by_input_class_in_precedence_order() {
    let world = World::new();
    world.map_pirq(DOM1, 1);
    world.map_pirq(DOM1, 20); // mapped but ≥ nr_pirqs (16)
    world.domains.bind_pirq(DOM1, 1, 0).unwrap();
    let cases: [(&str, u32, Errno); 5] = [
        ("pirq = nr_pirqs", 16, Errno::EINVAL),
        ("mapped pirq past nr_pirqs", 20, Errno::EINVAL),
        ("negative pirq", u32::MAX, Errno::EINVAL),
        ("unmapped pirq", 2, Errno::EPERM),
        ("already bound", 1, Errno::EEXIST),
    ];
    for (what, pirq, errno) in cases {
        let before = world.snapshot(DOM1);
        assert_eq!(world.domains.bind_pirq(DOM1, pirq, 0), Err(errno), "{what}");
        assert_eq!(world.snapshot(DOM1), before, "{what}");
    }
}

#[test]
fn bind_pirq_host_errors_pass_through_and_leave_nothing_bound() {
    for errno in [Errno::EINVAL, Errno::EBUSY, Errno::ENOMEM] {
        let world = World::new();
        world.map_pirq(DOM1, 4);
        *world.domains.pirq_host().next_bind_error.lock().unwrap() = Some(errno);
        let before = world.snapshot(DOM1);
        assert_eq!(world.domains.bind_pirq(DOM1, 4, 0), Err(errno));
        assert_eq!(world.snapshot(DOM1), before);
        assert!(world.domains.pirq_host().bound.lock().unwrap().is_empty());
        // Nothing stuck: the next try binds port 1.
        assert_eq!(world.domains.bind_pirq(DOM1, 4, 0), Ok(Port(1)));
    }
}

#[test]
fn bind_pirq_with_full_table_gives_enospc_without_binding_host_irq() {
    let mut world = World::empty();
    world.add(DomainConfig {
        max_evtchn_port: 1,
        nr_pirqs: 8,
        ..DomainConfig::new(DOM1, 1)
    });
    world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    world.map_pirq(DOM1, 2);
    assert_eq!(world.domains.bind_pirq(DOM1, 2, 0), Err(Errno::ENOSPC));
    assert!(world.domains.pirq_host().bound.lock().unwrap().is_empty());
}

#[test]
fn ops_naming_a_destroyed_domain_give_esrch() {
    let world = World::new();
    world.domains.destroy_domain(DOM2).unwrap();
    assert_eq!(
        world.domains.alloc_unbound(DOM2, DomId::SELF, DOM1),
        Err(Errno::ESRCH)
    );
    assert_eq!(
        world.domains.alloc_unbound(DOM1, DOM2, DOM1),
        Err(Errno::ESRCH)
    );
}

#[test]
fn allocation_always_returns_lowest_free_port_over_a_long_alloc_close_sequence() {
    let world = World::new();
    let mut allocated = std::collections::BTreeSet::new();
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for _ in 0..5_000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        if !seed.is_multiple_of(3) || allocated.is_empty() {
            let expected = (1..).find(|port| !allocated.contains(port)).unwrap();
            let result = world.domains.bind_ipi(DOM1, VcpuId(0));
            if expected > 1023 {
                assert_eq!(result, Err(Errno::ENOSPC));
            } else {
                assert_eq!(result, Ok(Port(expected)));
                allocated.insert(expected);
            }
        } else {
            let index = (seed as usize / 3) % allocated.len();
            let port = *allocated.iter().nth(index).unwrap();
            world.domains.close(DOM1, Port(port)).unwrap();
            allocated.remove(&port);
        }
        assert_eq!(active(&world, DOM1), allocated.len() as u32);
    }
}

#[test]
fn bind_interdomain_against_every_remote_state() {
    // DOM2 binds to each of DOM1's zoo ports; only ports unbound for DOM2
    // (the guest one and the Xen-attached one) accept.
    for (what, port) in ZOO_PORTS {
        let zoo = Zoo::new();
        let world = &zoo.world;
        let expected_ok = port == UNBOUND || port == XEN_ATTACHED;
        let before = world.snapshot(DOM1);
        let result = world.domains.bind_interdomain(DOM2, DOM1, port);
        if expected_ok {
            let local = result.unwrap_or_else(|errno| panic!("{what}: {errno:?}"));
            assert!(matches!(
                world.state(DOM1, port),
                ChannelState::Interdomain { remote, remote_port, .. }
                    if remote == DOM2 && remote_port == local
            ));
        } else {
            assert_eq!(result, Err(Errno::EINVAL), "{what}");
            assert_eq!(world.snapshot(DOM1), before, "{what}");
        }
    }
}
