//! Static event channels: ports the hypervisor allocates and binds at exact
//! numbers at boot (Xen's dom0less idea, DESIGN "Boot and memory").

mod common;

use common::*;
use evtchn_core::{ChannelState, Consumer, DomId, DomainConfig, Errno, Port, VcpuId};

#[test]
fn static_channel_binds_exact_ports_in_both_domains() {
    let world = World::new();
    world
        .domains
        .alloc_unbound_at(DOM1, Port(10), DOM2)
        .unwrap();
    world
        .domains
        .bind_interdomain_at(DOM2, Port(20), DOM1, Port(10))
        .unwrap();
    state_is(
        &world,
        DOM1,
        Port(10),
        ChannelState::Interdomain {
            remote: DOM2,
            remote_port: Port(20),
            consumer: Consumer::Guest,
        },
    );
    state_is(
        &world,
        DOM2,
        Port(20),
        ChannelState::Interdomain {
            remote: DOM1,
            remote_port: Port(10),
            consumer: Consumer::Guest,
        },
    );
    assert!(world.is_pending(DOM2, Port(20)));
    // Guests still get the lowest free ports around them.
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(0)), Ok(Port(1)));
    assert_eq!(world.active_of(DOM1), 2);
}

#[test]
fn static_port_past_storage_creates_every_bucket_up_to_it() {
    let world = World::new();
    world
        .domains
        .alloc_unbound_at(DOM1, Port(300), DOM2)
        .unwrap();
    assert_eq!(world.domains.valid_ports(DOM1), Some(320));
    for port in [64, 128, 200, 299] {
        assert_eq!(world.state(DOM1, Port(port)), ChannelState::Free, "{port}");
    }
    // Lowest-free allocation fills the gap below it.
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(0)), Ok(Port(1)));
}

#[test]
fn static_port_errors() {
    let mut world = World::new();
    world.add(DomainConfig {
        max_evtchn_port: 100,
        ..DomainConfig::new(DomId(3), 1)
    });
    world.domains.alloc_unbound_at(DOM1, Port(5), DOM2).unwrap();
    let cases: [(&str, DomId, Port, Errno); 5] = [
        ("unknown domain", DomId(9), Port(5), Errno::ESRCH),
        ("port 0 is reserved", DOM1, Port(0), Errno::EBUSY),
        ("port taken", DOM1, Port(5), Errno::EBUSY),
        ("past max_evtchn_port", DomId(3), Port(101), Errno::ENOSPC),
        ("past the 2-level limit", DOM0, Port(4096), Errno::ENOSPC),
    ];
    for (what, domid, port, errno) in cases {
        let before = world.snapshot(DOM1);
        assert_eq!(
            world.domains.alloc_unbound_at(domid, port, DOM2),
            Err(errno),
            "{what}"
        );
        assert_eq!(world.snapshot(DOM1), before, "{what}");
    }
    // Binding: the remote must be unbound for the binder.
    assert_eq!(
        world
            .domains
            .bind_interdomain_at(DOM0, Port(7), DOM1, Port(5)),
        Err(Errno::EINVAL)
    );
    assert_eq!(world.state(DOM0, Port(7)), ChannelState::Free);
    assert_eq!(
        world
            .domains
            .bind_interdomain_at(DOM2, Port(5), DomId(9), Port(5)),
        Err(Errno::ESRCH)
    );
    assert_eq!(
        world
            .domains
            .bind_interdomain_at(DOM2, Port(0), DOM1, Port(5)),
        Err(Errno::EBUSY)
    );
}

#[test]
fn closed_static_port_is_reused_by_lowest_free_allocation() {
    let world = World::new();
    for _ in 1..=3 {
        world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    }
    world.domains.alloc_unbound_at(DOM1, Port(4), DOM2).unwrap();
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(0)), Ok(Port(5)));
    world.domains.close(DOM1, Port(4)).unwrap();
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(0)), Ok(Port(4)));
}
