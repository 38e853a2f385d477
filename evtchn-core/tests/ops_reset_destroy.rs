//! Behaviour of reset, reset_cont and domain destruction (spec §2.12,
//! §2.16).

mod common;

use common::*;
use evtchn_core::{ChannelState, Consumer, DomId, DomainConfig, Errno, Port, ResetMode, VcpuId};

#[test]
fn reset_self_closes_every_guest_channel_and_next_allocation_is_port_1() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    assert_eq!(
        world.domains.reset(DOM1, DomId::SELF, ResetMode::Start),
        Ok(())
    );
    for (what, port) in ZOO_PORTS {
        let state = world.state(DOM1, port);
        match port {
            RESERVED => assert_eq!(state, ChannelState::Reserved, "{what}"),
            XEN_ATTACHED => assert!(state.is_xen_attached(), "{what}: survives reset"),
            _ => assert_eq!(state, ChannelState::Free, "{what}"),
        }
    }
    assert_eq!(active(world, DOM1), 1, "only the Xen-attached channel");
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(0)), Ok(Port(1)));
}

#[test]
fn reset_unbinds_interdomain_peers() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world
        .domains
        .reset(DOM1, DomId::SELF, ResetMode::Start)
        .unwrap();
    state_is(
        world,
        DOM2,
        Port(1),
        ChannelState::Unbound {
            remote: DOM1,
            consumer: Consumer::Guest,
        },
    );
}

#[test]
fn reset_releases_pirqs_and_virq_slots() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world
        .domains
        .reset(DOM1, DomId::SELF, ResetMode::Start)
        .unwrap();
    assert!(world.domains.pirq_host().bound.lock().unwrap().is_empty());
    assert!(
        world
            .domains
            .bind_virq(DOM1, evtchn_core::Virq::TIMER.number(), VcpuId(1))
            .is_ok()
    );
    assert!(world.domains.bind_pirq(DOM1, ZOO_PIRQ, 0).is_ok());
}

#[test]
fn reset_keeps_mask_bits_and_port_validity() {
    let world = World::new();
    for _ in 0..70 {
        world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    }
    world.mask(DOM1, Port(3));
    world
        .domains
        .reset(DOM1, DomId::SELF, ResetMode::Start)
        .unwrap();
    assert!(world.is_masked(DOM1, Port(3)));
    assert_eq!(world.domains.valid_ports(DOM1), Some(128));
    assert_eq!(active(&world, DOM1), 0);
}

#[test]
fn reset_errors_in_precedence_order() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    let cases: [(&str, DomId, DomId, Errno); 5] = [
        ("unknown domain", DOM1, DomId(9), Errno::ESRCH),
        ("DOMID_XEN", DOM1, DomId::XEN, Errno::ESRCH),
        ("unprivileged on foreign domain", DOM2, DOM1, Errno::EPERM),
        ("unprivileged on dom0", DOM1, DOM0, Errno::EPERM),
        ("privileged on unpaused domain", DOM0, DOM1, Errno::EINVAL),
    ];
    for (what, caller, dom, errno) in cases {
        let before = world.snapshot(DOM1);
        assert_eq!(
            world.domains.reset(caller, dom, ResetMode::Start),
            Err(errno),
            "{what}"
        );
        assert_eq!(world.snapshot(DOM1), before, "{what}");
    }
}

#[test]
fn reset_of_paused_domain_by_privileged_domain_succeeds() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    world.domains.pause_by_controller(DOM1).unwrap();
    assert_eq!(world.domains.reset(DOM0, DOM1, ResetMode::Start), Ok(()));
    assert_eq!(active(world, DOM1), 1);
    world.domains.unpause_by_controller(DOM1).unwrap();
    assert_eq!(
        world.domains.reset(DOM0, DOM1, ResetMode::Start),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        world.domains.unpause_by_controller(DOM1),
        Err(Errno::EINVAL)
    );
}

#[test]
fn reset_cont_without_reset_in_progress_gives_ebusy() {
    let zoo = Zoo::new();
    assert_eq!(
        zoo.world
            .domains
            .reset(DOM1, DomId::SELF, ResetMode::Continue),
        Err(Errno::EBUSY)
    );
}

#[test]
fn preempted_reset_returns_erestart_and_reset_cont_finishes_it() {
    let world = World::new();
    for _ in 0..300 {
        world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    }
    *world.domains.notify().preemptions_left.lock().unwrap() = 2;
    assert_eq!(
        world.domains.reset(DOM1, DomId::SELF, ResetMode::Start),
        Err(Errno::ERESTART)
    );
    // Stopped at port 64: ports below are closed, the rest still open.
    state_is(&world, DOM1, Port(63), ChannelState::Free);
    state_is(&world, DOM1, Port(65), ChannelState::Ipi);
    // A second reset while one is in progress is refused.
    assert_eq!(
        world.domains.reset(DOM1, DomId::SELF, ResetMode::Start),
        Err(Errno::EBUSY)
    );
    assert_eq!(
        world.domains.reset(DOM1, DomId::SELF, ResetMode::Continue),
        Err(Errno::ERESTART)
    );
    state_is(&world, DOM1, Port(129), ChannelState::Ipi);
    assert_eq!(
        world.domains.reset(DOM1, DomId::SELF, ResetMode::Continue),
        Ok(())
    );
    assert_eq!(active(&world, DOM1), 0);
    // Finished: a new reset may start, a continue may not.
    assert_eq!(
        world.domains.reset(DOM1, DomId::SELF, ResetMode::Continue),
        Err(Errno::EBUSY)
    );
    assert_eq!(
        world.domains.reset(DOM1, DomId::SELF, ResetMode::Start),
        Ok(())
    );
}

#[test]
fn reset_with_channel_opened_behind_the_cursor_gives_eagain() {
    let world = World::new();
    for _ in 0..100 {
        world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    }
    *world.domains.notify().preemptions_left.lock().unwrap() = 1;
    assert_eq!(
        world.domains.reset(DOM1, DomId::SELF, ResetMode::Start),
        Err(Errno::ERESTART)
    );
    // Another vcpu opens a port below the cursor meanwhile.
    assert_eq!(world.domains.bind_ipi(DOM1, VcpuId(1)), Ok(Port(1)));
    assert_eq!(
        world.domains.reset(DOM1, DomId::SELF, ResetMode::Continue),
        Err(Errno::EAGAIN)
    );
    state_is(&world, DOM1, Port(1), ChannelState::Ipi);
    assert_eq!(active(&world, DOM1), 1);
    // The reset is over: a new one closes it.
    assert_eq!(
        world.domains.reset(DOM1, DomId::SELF, ResetMode::Start),
        Ok(())
    );
    assert_eq!(active(&world, DOM1), 0);
}

#[test]
fn reset_of_domain_with_no_channels_succeeds() {
    let world = World::new();
    assert_eq!(
        world.domains.reset(DOM2, DomId::SELF, ResetMode::Start),
        Ok(())
    );
}

// ----- destruction -----

#[test]
fn destroy_closes_everything_and_peers_see_unbound_naming_the_dead_domain() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    let (dom2_end, _) = world.connect(DOM2, DOM1);
    world.domains.destroy_domain(DOM1).unwrap();
    assert!(!world.domains.contains(DOM1));
    state_is(
        world,
        DOM2,
        Port(1),
        ChannelState::Unbound {
            remote: DOM1,
            consumer: Consumer::Guest,
        },
    );
    state_is(
        world,
        DOM2,
        dom2_end,
        ChannelState::Unbound {
            remote: DOM1,
            consumer: Consumer::Guest,
        },
    );
    assert!(world.domains.pirq_host().bound.lock().unwrap().is_empty());
    assert_eq!(world.domains.destroy_domain(DOM1), Err(Errno::ESRCH));
}

#[test]
fn destroy_leaks_nothing_observable() {
    let zoo = Zoo::new();
    let world = &zoo.world;
    let before = world.snapshot(DOM2);
    let dom1_view = world.domains.shared_info(DOM1).unwrap();
    world.domains.destroy_domain(DOM1).unwrap();
    // Only the shared page handle we took survives.
    assert_eq!(std::sync::Arc::strong_count(&dom1_view), 2);
    assert_eq!(std::sync::Arc::strong_count(&world.pages[&DOM1]), 2);
    drop(dom1_view);
    assert_eq!(std::sync::Arc::strong_count(&world.pages[&DOM1]), 1);
    assert_ne!(world.snapshot(DOM2), before, "peer end changed to unbound");
    assert_eq!(active(world, DOM2), 1);
}

#[test]
fn domid_can_be_reused_after_destroy_and_old_unbound_ports_accept_it() {
    let mut zoo = Zoo::new();
    zoo.world.domains.destroy_domain(DOM1).unwrap();
    zoo.world.add(DomainConfig::new(DOM1, 1));
    let world = &zoo.world;
    // DOM2's port 1 waits for "dom1": the new domain with that id may bind.
    assert_eq!(
        world.domains.bind_interdomain(DOM1, DOM2, Port(1)),
        Ok(Port(1))
    );
}

#[test]
fn destroy_drops_global_virq_handler_registration() {
    let world = World::new();
    let virq = evtchn_core::Virq::DOM_EXC;
    world.domains.set_virq_handler(virq, DOM2).unwrap();
    assert_eq!(world.domains.virq_handler(virq), Some(DOM2));
    world.domains.destroy_domain(DOM2).unwrap();
    assert_eq!(
        world.domains.virq_handler(virq),
        Some(DOM0),
        "back to hardware domain"
    );
}

#[test]
fn create_domain_refuses_reserved_ids_zero_vcpus_and_duplicates() {
    let mut world = World::new();
    let page = || -> std::sync::Arc<dyn evtchn_core::SharedInfoView> {
        std::sync::Arc::new(evtchn_core::abi::SharedInfo::new())
    };
    assert_eq!(
        world
            .domains
            .create_domain(DomainConfig::new(DomId::SELF, 1), page()),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        world
            .domains
            .create_domain(DomainConfig::new(DomId(5), 0), page()),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        world
            .domains
            .create_domain(DomainConfig::new(DOM1, 1), page()),
        Err(Errno::EEXIST)
    );
    world.add(DomainConfig::new(DomId(0x7FEF), 1));
    assert!(world.domains.contains(DomId(0x7FEF)));
}
