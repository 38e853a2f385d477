//! The evtchn-core properties of the security advisories in spec §8, one
//! named test each. FIFO-only advisories (107, 358, 359) wait for the FIFO
//! ABI; 327 and 136/183/260 are hypervisor-level.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use evtchn_core::abi::EvtchnOp;
use evtchn_core::{DomId, DomainConfig, Errno, Port, ResetMode, VcpuId, Virq};

#[test]
fn xsa46_xsa83_failed_bind_pirq_leaves_no_host_action_and_no_port() {
    let world = World::new();
    world.map_pirq(DOM1, 2);
    *world.domains.pirq_host().next_bind_error.lock().unwrap() = Some(Errno::EBUSY);
    let before = world.snapshot(DOM1);
    assert_eq!(world.domains.bind_pirq(DOM1, 2, 0), Err(Errno::EBUSY));
    assert_eq!(world.snapshot(DOM1), before);
    assert!(world.domains.pirq_host().bound.lock().unwrap().is_empty());
    // And the pirq is not considered bound: a retry succeeds.
    assert_eq!(world.domains.bind_pirq(DOM1, 2, 0), Ok(Port(1)));
    // Binding an in-use pirq fails and does not replace the binding.
    assert_eq!(world.domains.bind_pirq(DOM1, 2, 0), Err(Errno::EEXIST));
    assert_eq!(world.domains.pirq_host().bound.lock().unwrap().len(), 1);
}

#[test]
fn xsa47_failing_op_leaves_table_unchanged() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    // Fill DOM2 to port 63 so the next allocation would need a new bucket.
    while world.domains.valid_ports(DOM2) == Some(64)
        && world.domains.channel_info(DOM2, Port(63)).unwrap().state
            == evtchn_core::ChannelState::Free
    {
        world.domains.bind_ipi(DOM2, VcpuId(0)).unwrap();
    }
    world.guest_ack_all(DOM2);
    let snapshot = || {
        [DOM0, DOM1, DOM2]
            .map(|domid| world.snapshot(domid))
            .join("\n")
    };
    let before = snapshot();
    type Op<'a> = Box<dyn Fn() -> Result<Port, Errno> + 'a>;
    let d = &world.domains;
    let failing: Vec<(&str, Op)> = vec![
        (
            "alloc_unbound in full-bucket foreign domain, unprivileged",
            Box::new(|| d.alloc_unbound(DOM1, DOM2, DOM1)),
        ),
        (
            "alloc_unbound bad dom",
            Box::new(|| d.alloc_unbound(DOM1, DomId(99), DOM1)),
        ),
        (
            "bind_interdomain bad port",
            Box::new(|| d.bind_interdomain(DOM2, DOM1, Port(64))),
        ),
        (
            "bind_interdomain wrong remote",
            Box::new(|| d.bind_interdomain(DOM2, DOM1, IPI)),
        ),
        (
            "bind_interdomain unbound for someone else",
            Box::new(|| d.bind_interdomain(DOM0, DOM1, UNBOUND)),
        ),
        (
            "bind_virq twice",
            Box::new(|| d.bind_virq(DOM1, Virq::TIMER.number(), VcpuId(1))),
        ),
        (
            "bind_virq bad vcpu",
            Box::new(|| d.bind_virq(DOM2, Virq::TIMER.number(), VcpuId(5))),
        ),
        (
            "bind_ipi bad vcpu",
            Box::new(|| d.bind_ipi(DOM2, VcpuId(5))),
        ),
        ("bind_pirq unmapped", Box::new(|| d.bind_pirq(DOM2, 1, 0))),
        (
            "bind_pirq bound",
            Box::new(|| d.bind_pirq(DOM1, ZOO_PIRQ, 0)),
        ),
        (
            "close xen-attached",
            Box::new(|| d.close(DOM1, XEN_ATTACHED).map(|()| Port(0))),
        ),
        (
            "close free",
            Box::new(|| d.close(DOM1, FREE).map(|()| Port(0))),
        ),
        (
            "send virq",
            Box::new(|| d.send(DOM1, VIRQ_GLOBAL).map(|()| Port(0))),
        ),
        (
            "bind_vcpu ipi",
            Box::new(|| d.bind_vcpu(DOM1, IPI, VcpuId(0)).map(|()| Port(0))),
        ),
        (
            "reset foreign",
            Box::new(|| d.reset(DOM2, DOM1, ResetMode::Start).map(|()| Port(0))),
        ),
        (
            "reset_cont idle",
            Box::new(|| {
                d.reset(DOM1, DomId::SELF, ResetMode::Continue)
                    .map(|()| Port(0))
            }),
        ),
        (
            "set_priority",
            Box::new(|| d.set_priority(DOM1, IPI, 3).map(|()| Port(0))),
        ),
        (
            "expand_array",
            Box::new(|| d.expand_array(DOM1, 5).map(|()| Port(0))),
        ),
    ];
    for (what, op) in failing {
        assert!(op().is_err(), "{what} must fail");
        assert_eq!(snapshot(), before, "{what} changed something");
    }
    assert_eq!(world.domains.valid_ports(DOM2), Some(64), "no bucket grown");
}

#[test]
fn xsa221_every_op_on_every_port_returns_a_defined_errno() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    let mut ports: Vec<u32> = (0..=4200).collect();
    for shift in 12..32 {
        ports.push(1 << shift);
        ports.push((1u32 << shift) - 1);
    }
    ports.extend([u32::MAX, u32::MAX - 1, i32::MAX as u32, 131071, 131072]);
    let allowed = [Errno::EINVAL, Errno::ENOSYS, Errno::EACCES, Errno::EPERM];
    for port in ports {
        let port = Port(port);
        let results = [
            world.domains.send(DOM2, port),
            world.domains.unmask(DOM2, port),
            world.domains.bind_vcpu(DOM2, port, VcpuId(1)),
            world.domains.set_priority(DOM2, port, 0),
            world.status(DOM2, DOM1, port).map(|_| ()),
            world.domains.poll(DOM2, VcpuId(0), &[port]).map(|_| ()),
            world.domains.close(DOM2, port),
        ];
        for result in results {
            if let Err(errno) = result {
                assert!(allowed.contains(&errno), "{port}: {errno:?}");
            }
        }
        world.domains.poll_finish(DOM2, VcpuId(0));
    }
}

#[test]
fn xsa221_hostile_argument_bytes_never_crash_dispatch() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    // A fixed-seed xorshift: reproducible garbage for every command.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..20_000 {
        let cmd = (next() % 18) as u32;
        let mut bytes = [0u8; 24];
        for byte in bytes.iter_mut() {
            // Bias toward small values so ports and vcpus hit real ones.
            *byte = match next() % 4 {
                0 => 0xFF,
                1 => (next() % 4) as u8,
                _ => next() as u8,
            };
        }
        let caller = [DOM0, DOM1, DOM2][(next() % 3) as usize];
        let length = (next() % 25) as usize;
        match world.domains.dispatch(caller, cmd, &bytes[..length]) {
            Ok(reply) => {
                let op = EvtchnOp::from_cmd(cmd).unwrap();
                assert!(reply.is_empty() || reply.as_bytes().len() == op.arg_size());
            }
            Err(errno) => assert_ne!(errno as i32, 0),
        }
    }
}

#[test]
fn xsa338_port_validity_never_shrinks_over_reset_and_close() {
    let world = World::new();
    for _ in 0..200 {
        world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    }
    assert_eq!(world.domains.valid_ports(DOM1), Some(256));
    world
        .domains
        .reset(DOM1, DomId::SELF, ResetMode::Start)
        .unwrap();
    assert_eq!(world.domains.valid_ports(DOM1), Some(256));
    assert_eq!(world.domains.unmask(DOM1, Port(255)), Ok(()));
    assert!(world.status(DOM1, DomId::SELF, Port(255)).is_ok());
}

#[test]
fn xsa340_a_port_below_the_published_count_always_has_storage() {
    let mut world = World::empty();
    world.add(DomainConfig {
        max_evtchn_port: 4095,
        ..DomainConfig::new(DOM1, 2)
    });
    let world = Arc::new(world);
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let world = world.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut checks = 0u64;
            loop {
                let finished = done.load(Ordering::Acquire);
                let valid = world.domains.valid_ports(DOM1).unwrap();
                let port = Port(valid - 1);
                assert!(world.domains.channel_info(DOM1, port).is_ok(), "{port}");
                assert_ne!(world.domains.send(DOM1, port), Err(Errno::ESRCH));
                assert_eq!(world.domains.unmask(DOM1, port), Ok(()));
                checks += 1;
                if finished {
                    return checks;
                }
            }
        })
    };
    for _ in 0..4095 {
        world.domains.bind_ipi(DOM1, VcpuId(1)).unwrap();
    }
    done.store(true, Ordering::Release);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(world.domains.valid_ports(DOM1), Some(4096));
}

#[test]
fn xsa342_allocation_limit_comes_from_the_abi_and_no_bit_past_the_arrays_is_touched() {
    let mut world = World::empty();
    world.add(DomainConfig {
        max_evtchn_port: u32::MAX,
        ..DomainConfig::new(DOM1, 1)
    });
    for _ in 1..4096 {
        world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    }
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(0)), Err(Errno::ENOSPC));
    assert_eq!(world.domains.valid_ports(DOM1), Some(4096));
    world.domains.send(DOM1, Port(4095)).unwrap();
    assert!(world.is_pending(DOM1, Port(4095)));
    assert_eq!(world.domains.send(DOM1, Port(4096)), Err(Errno::EINVAL));
    // Past the shared arrays nothing is written: wc_version still 0.
    assert_eq!(world.page(DOM1).wc_version.load(Ordering::SeqCst), 0);
}

#[test]
fn xsa343_reset_returns_eagain_if_a_port_opened_concurrently() {
    let world = World::new();
    for _ in 0..130 {
        world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    }
    *world.domains.notify().preemptions_left.lock().unwrap() = 1;
    assert_eq!(
        world.domains.reset(DOM1, DomId::SELF, ResetMode::Start),
        Err(Errno::ERESTART)
    );
    world.domains.bind_ipi(DOM1, VcpuId(1)).unwrap();
    assert_eq!(
        world.domains.reset(DOM1, DomId::SELF, ResetMode::Continue),
        Err(Errno::EAGAIN)
    );
}

#[test]
fn xsa344_reset_of_a_full_table_proceeds_in_64_port_chunks() {
    let mut world = World::empty();
    world.add(DomainConfig {
        max_evtchn_port: 4095,
        ..DomainConfig::new(DOM1, 1)
    });
    for _ in 1..4096 {
        world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    }
    // Preempt at every second check. A resumed reset re-checks at the port
    // where it stopped (as Xen does), so each continuation closes 64 more.
    *world.domains.notify().preempt_period.lock().unwrap() = 2;
    let mut continuations = 0;
    let mut mode = ResetMode::Start;
    let mut last_active = active(&world, DOM1);
    loop {
        match world.domains.reset(DOM1, DomId::SELF, mode) {
            Err(Errno::ERESTART) => {
                continuations += 1;
                let now = active(&world, DOM1);
                assert!(now < last_active, "each chunk makes progress");
                assert!(last_active - now <= 128, "at most two chunks per call");
                last_active = now;
                mode = ResetMode::Continue;
            }
            Ok(()) => break,
            Err(errno) => panic!("{errno:?}"),
        }
    }
    // 4095 ports: the first call stops at 128, then one stop per 64 ports
    // up to 4032, then the last call finishes.
    assert_eq!(continuations, 62);
    assert_eq!(active(&world, DOM1), 0);
}

#[test]
fn xsa496_bind_virq_with_every_port_used_gives_enospc() {
    let mut world = World::empty();
    world.add(DomainConfig {
        max_evtchn_port: 100,
        ..DomainConfig::new(DOM1, 2)
    });
    for _ in 0..100 {
        world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    }
    let before = world.snapshot(DOM1);
    for virq in Virq::all() {
        assert_eq!(
            world.domains.bind_virq(DOM1, virq.number(), VcpuId(0)),
            Err(Errno::ENOSPC),
            "{virq}"
        );
        assert_eq!(world.domains.virq_port(DOM1, VcpuId(0), virq), None);
    }
    assert_eq!(world.snapshot(DOM1), before);
    // Freeing one port makes the bind work.
    world.domains.close(DOM1, Port(50)).unwrap();
    assert_eq!(
        world
            .domains
            .bind_virq(DOM1, Virq::DOM_EXC.number(), VcpuId(0)),
        Ok(Port(50))
    );
}

#[test]
fn xsa505_expand_array_checks_fifo_state_under_the_lock_and_refuses_on_two_level() {
    let world = Arc::new(World::new());
    let others: Vec<_> = (0..2)
        .map(|_| {
            let world = world.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    assert_eq!(world.domains.expand_array(DOM1, 1), Err(Errno::EOPNOTSUPP));
                }
            })
        })
        .collect();
    for _ in 0..200 {
        let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
        world.domains.close(DOM1, port).unwrap();
    }
    for other in others {
        other.join().unwrap();
    }
}

#[test]
fn xsa332_send_flood_raises_one_upcall_and_bounded_work() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    for _ in 0..100_000 {
        world.domains.send(DOM2, Port(1)).unwrap();
    }
    assert_eq!(world.kicks(), vec![(DOM1, VcpuId(0))]);
    assert!(world.poll_wakes().is_empty());
}

#[test]
fn xsa391_flood_between_unprivileged_domains_reaches_only_the_peer() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    for _ in 0..10_000 {
        world.domains.send(DOM1, INTERDOMAIN).unwrap();
    }
    assert_eq!(world.kicks(), vec![(DOM2, VcpuId(0))]);
    assert!(none_pending(world, DOM0));
    assert!(none_pending(world, DOM1));
}
