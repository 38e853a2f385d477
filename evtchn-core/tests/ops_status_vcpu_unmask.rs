//! Behaviour of status, bind_vcpu and unmask against every channel state
//! and every bad input class (spec §2.6, §2.10, §2.11).

mod common;

use common::*;
use evtchn_core::abi::{EvtchnStat, EvtchnStatus};
use evtchn_core::{ChannelState, DomId, Errno, Port, VcpuId, Virq};

// ----- status -----

#[test]
fn status_reports_every_state_with_its_union_member() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    let ask = |port: Port| {
        world.domains.status(
            DOM1,
            EvtchnStatus {
                dom: DomId::SELF,
                port,
                u: [0xEE; 8],
                ..EvtchnStatus::default()
            },
        )
    };
    let reserved = ask(RESERVED).unwrap();
    assert_eq!(reserved.status, EvtchnStat::Closed as u32);
    assert_eq!(reserved.vcpu, VcpuId(0));
    assert_eq!(reserved.u, [0xEE; 8], "closed: union untouched");

    let unbound = ask(UNBOUND).unwrap();
    assert_eq!(unbound.status, EvtchnStat::Unbound as u32);
    assert_eq!(unbound.unbound_dom(), DOM2);
    assert_eq!(&unbound.u[2..], &[0xEE; 6], "only u.unbound.dom written");

    let interdomain = ask(INTERDOMAIN).unwrap();
    assert_eq!(interdomain.status, EvtchnStat::Interdomain as u32);
    assert_eq!(interdomain.interdomain_dom(), DOM2);
    assert_eq!(interdomain.interdomain_port(), Port(1));

    let virq = ask(VIRQ_PER_VCPU).unwrap();
    assert_eq!(virq.status, EvtchnStat::Virq as u32);
    assert_eq!(virq.virq(), Virq::TIMER.number());
    assert_eq!(virq.vcpu, VcpuId(1));

    let ipi = ask(IPI).unwrap();
    assert_eq!(ipi.status, EvtchnStat::Ipi as u32);
    assert_eq!(ipi.vcpu, VcpuId(1));
    assert_eq!(ipi.u, [0xEE; 8], "ipi: union untouched");

    let pirq = ask(PIRQ).unwrap();
    assert_eq!(pirq.status, EvtchnStat::Pirq as u32);
    assert_eq!(pirq.pirq(), ZOO_PIRQ);

    assert_eq!(ask(XEN_ATTACHED), Err(Errno::EACCES));

    let free = ask(LAST_VALID_FREE).unwrap();
    assert_eq!(free.status, EvtchnStat::Closed as u32);
    assert_eq!(free.vcpu, VcpuId(0));
    assert_eq!(free.u, [0xEE; 8]);
}

#[test]
fn status_of_port_63_is_closed_and_port_64_is_einval_on_fresh_domain() {
    let world = World::new();
    assert_eq!(
        world.status(DOM1, DomId::SELF, Port(63)).unwrap().status,
        EvtchnStat::Closed as u32
    );
    assert_eq!(
        world.status(DOM1, DomId::SELF, Port(64)),
        Err(Errno::EINVAL)
    );
}

#[test]
fn status_errors_in_precedence_order() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    let cases: [(&str, DomId, DomId, Port, Errno); 8] = [
        ("unknown domain", DOM1, DomId(9), Port(1), Errno::ESRCH),
        ("DOMID_XEN", DOM1, DomId::XEN, Port(1), Errno::ESRCH),
        ("DOMID_IDLE", DOM1, DomId::IDLE, Port(1), Errno::ESRCH),
        ("invalid port", DOM1, DomId::SELF, Port(64), Errno::EINVAL),
        (
            "foreign invalid port: EINVAL before EPERM",
            DOM2,
            DOM1,
            Port(64),
            Errno::EINVAL,
        ),
        ("foreign valid port: EPERM", DOM2, DOM1, IPI, Errno::EPERM),
        ("foreign free port: EPERM", DOM2, DOM1, FREE, Errno::EPERM),
        (
            "foreign xen-attached: EACCES before EPERM",
            DOM2,
            DOM1,
            XEN_ATTACHED,
            Errno::EACCES,
        ),
    ];
    for (what, caller, dom, port, errno) in cases {
        assert_eq!(world.status(caller, dom, port), Err(errno), "{what}");
    }
}

#[test]
fn status_by_privileged_domain_of_foreign_port_succeeds() {
    let zoo = Zoo::new();
    let reply = zoo.world.status(DOM0, DOM1, IPI).unwrap();
    assert_eq!(reply.status, EvtchnStat::Ipi as u32);
}

// ----- bind_vcpu -----

#[test]
fn bind_vcpu_matrix_over_every_state() {
    let expected: [(&str, Port, Result<(), Errno>); 10] = [
        ("reserved", RESERVED, Err(Errno::EINVAL)),
        ("unbound", UNBOUND, Ok(())),
        ("interdomain", INTERDOMAIN, Ok(())),
        ("per-vcpu virq", VIRQ_PER_VCPU, Err(Errno::EINVAL)),
        ("global virq", VIRQ_GLOBAL, Ok(())),
        ("ipi", IPI, Err(Errno::EINVAL)),
        ("pirq", PIRQ, Ok(())),
        ("xen-attached", XEN_ATTACHED, Err(Errno::EINVAL)),
        ("free", FREE, Err(Errno::EINVAL)),
        ("last valid free", LAST_VALID_FREE, Err(Errno::EINVAL)),
    ];
    for (what, port, result) in expected {
        let zoo = Zoo::new();
        let world = &zoo.world;
        let before = world.notify_vcpu(DOM1, port);
        // Per-vcpu VIRQ and IPI sit on vcpu 1: ask for vcpu 0.
        assert_eq!(
            world
                .domains
                .bind_vcpu(DOM1, port, VcpuId(0))
                .and_then(|()| { world.domains.bind_vcpu(DOM1, port, VcpuId(1)) }),
            result,
            "{what}"
        );
        match result {
            Ok(()) => assert_eq!(world.notify_vcpu(DOM1, port), VcpuId(1), "{what}"),
            Err(_) => assert_eq!(world.notify_vcpu(DOM1, port), before, "{what}"),
        }
    }
}

#[test]
fn bind_vcpu_checks_vcpu_before_port() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    let cases: [(&str, Port, VcpuId, Errno); 6] = [
        (
            "bad vcpu, bad port",
            Port(u32::MAX),
            VcpuId(7),
            Errno::ENOENT,
        ),
        ("bad vcpu, port 0", RESERVED, VcpuId(2), Errno::ENOENT),
        (
            "bad vcpu, good port",
            UNBOUND,
            VcpuId(u32::MAX),
            Errno::ENOENT,
        ),
        (
            "good vcpu, invalid port",
            Port(64),
            VcpuId(1),
            Errno::EINVAL,
        ),
        (
            "good vcpu, huge port",
            Port(u32::MAX),
            VcpuId(1),
            Errno::EINVAL,
        ),
        ("good vcpu, free port", FREE, VcpuId(1), Errno::EINVAL),
    ];
    for (what, port, vcpu, errno) in cases {
        assert_eq!(
            world.domains.bind_vcpu(DOM1, port, vcpu),
            Err(errno),
            "{what}"
        );
    }
}

#[test]
fn bind_vcpu_of_pirq_retargets_host_irq() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world.domains.bind_vcpu(DOM1, PIRQ, VcpuId(1)).unwrap();
    assert_eq!(
        *world.domains.pirq_host().affinity.lock().unwrap(),
        vec![(DOM1, ZOO_PIRQ, VcpuId(1))]
    );
}

#[test]
fn bind_vcpu_does_not_reraise_a_pending_event() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world.domains.send(DOM2, Port(1)).unwrap(); // DOM1 INTERDOMAIN pending on v0
    assert_eq!(world.selector(DOM1, 0), 1);
    world
        .domains
        .bind_vcpu(DOM1, INTERDOMAIN, VcpuId(1))
        .unwrap();
    assert_eq!(world.selector(DOM1, 1), 0, "nothing moves to the new vcpu");
    assert_eq!(world.upcall_pending(DOM1, 1), 0);
    assert!(world.is_pending(DOM1, INTERDOMAIN));
}

#[test]
fn bind_vcpu_of_unbound_port_survives_the_peer_binding() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world.domains.bind_vcpu(DOM1, UNBOUND, VcpuId(1)).unwrap();
    world.domains.bind_interdomain(DOM2, DOM1, UNBOUND).unwrap();
    assert_eq!(world.notify_vcpu(DOM1, UNBOUND), VcpuId(1));
    world.guest_ack_all(DOM1);
    world.domains.send(DOM2, Port(2)).unwrap();
    assert_eq!(world.kicks(), vec![(DOM1, VcpuId(1))]);
}

#[test]
fn bind_vcpu_moves_global_virq_delivery() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world.domains.set_virq_handler(Virq::CONSOLE, DOM1).unwrap();
    world
        .domains
        .bind_vcpu(DOM1, VIRQ_GLOBAL, VcpuId(1))
        .unwrap();
    world.domains.send_global_virq(Virq::CONSOLE);
    assert!(world.is_pending(DOM1, VIRQ_GLOBAL));
    assert_eq!(world.kicks(), vec![(DOM1, VcpuId(1))]);
}

// ----- unmask -----

#[test]
fn unmask_returns_0_for_every_valid_port_even_free_or_reserved() {
    let zoo = Zoo::new();
    for (what, port) in ZOO_PORTS {
        assert_eq!(zoo.world.domains.unmask(DOM1, port), Ok(()), "{what}");
    }
    for port in INVALID_PORTS {
        assert_eq!(
            zoo.world.domains.unmask(DOM1, port),
            Err(Errno::EINVAL),
            "{port}"
        );
    }
}

#[test]
fn unmask_of_masked_pending_port_raises_upcall_toward_notify_vcpu() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world.mask(DOM1, IPI);
    world.domains.send(DOM1, IPI).unwrap();
    assert!(world.is_pending(DOM1, IPI));
    assert!(world.kicks().is_empty());
    world.domains.unmask(DOM1, IPI).unwrap();
    assert!(!world.is_masked(DOM1, IPI));
    assert_eq!(world.selector(DOM1, 1), 1);
    assert_eq!(world.kicks(), vec![(DOM1, VcpuId(1))]);
}

#[test]
fn unmask_of_unmasked_pending_port_does_nothing() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world.domains.send(DOM1, IPI).unwrap();
    world.guest_ack_all(DOM1);
    world.domains.send(DOM1, IPI).unwrap(); // pending again, selector set
    world.page(DOM1).vcpu_info[1]
        .evtchn_pending_sel
        .store(0, std::sync::atomic::Ordering::SeqCst);
    world.page(DOM1).vcpu_info[1]
        .evtchn_upcall_pending
        .store(0, std::sync::atomic::Ordering::SeqCst);
    let kicks = world.kicks().len();
    world.domains.unmask(DOM1, IPI).unwrap();
    assert_eq!(world.selector(DOM1, 1), 0);
    assert_eq!(world.kicks().len(), kicks);
}

#[test]
fn unmask_of_masked_port_that_is_not_pending_only_clears_mask() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world.mask(DOM1, IPI);
    world.domains.unmask(DOM1, IPI).unwrap();
    assert!(!world.is_masked(DOM1, IPI));
    assert!(world.kicks().is_empty());
}

#[test]
fn unmask_of_free_or_xen_attached_port_leaves_mask_set() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    for port in [FREE, RESERVED, XEN_ATTACHED] {
        world.mask(DOM1, port);
        world.domains.unmask(DOM1, port).unwrap();
        assert!(world.is_masked(DOM1, port), "{port}: not usable, no-op");
    }
}

#[test]
fn state_reads_match_status_for_every_zoo_port() {
    let zoo = Zoo::new();
    for (what, port) in ZOO_PORTS {
        let info = zoo.world.domains.channel_info(DOM1, port).unwrap();
        match zoo.world.status(DOM1, DomId::SELF, port) {
            Ok(reply) => assert_eq!(reply.status, info.state.stat() as u32, "{what}"),
            Err(errno) => {
                assert_eq!(errno, Errno::EACCES, "{what}");
                assert!(info.state.is_xen_attached());
            }
        }
        assert_ne!(
            info.state == ChannelState::Free,
            info.state.is_allocated() || port == RESERVED
        );
    }
}
