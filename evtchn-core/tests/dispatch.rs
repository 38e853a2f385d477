//! The byte-level entry point: command numbers, argument sizes, replies
//! (spec §1.1, §1.2).

mod common;

use common::*;
use evtchn_core::abi::{
    EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindVirq, EvtchnOp, EvtchnStat,
    EvtchnStatus,
};
use evtchn_core::{DomId, Errno, Port, VcpuId, Virq};

#[test]
fn unknown_commands_give_enosys() {
    let world = World::new();
    for cmd in [15, 16, 100, u32::MAX] {
        assert_eq!(
            world.domains.dispatch(DOM1, cmd, &[0; 64]),
            Err(Errno::ENOSYS),
            "{cmd}"
        );
    }
}

#[test]
fn short_argument_gives_efault_for_every_op() {
    let world = World::new();
    for op in EvtchnOp::ALL {
        let short = vec![0u8; op.arg_size() - 1];
        assert_eq!(
            world.domains.dispatch(DOM1, op.cmd(), &short),
            Err(Errno::EFAULT),
            "{op:?}"
        );
    }
}

#[test]
fn op_numbers_sizes_and_copy_back_match_the_abi_table() {
    let table: [(u32, usize, bool); 15] = [
        (0, 12, true),
        (1, 12, true),
        (2, 12, true),
        (3, 4, false),
        (4, 4, false),
        (5, 24, true),
        (6, 8, true),
        (7, 8, true),
        (8, 8, false),
        (9, 4, false),
        (10, 2, false),
        (11, 24, true),
        (12, 8, false),
        (13, 8, false),
        (14, 2, false),
    ];
    for (cmd, size, copies_back) in table {
        let op = EvtchnOp::from_cmd(cmd).unwrap();
        assert_eq!(op.cmd(), cmd);
        assert_eq!(op.arg_size(), size, "{op:?}");
        assert_eq!(op.copies_back(), copies_back, "{op:?}");
    }
}

#[test]
fn alloc_unbound_reply_carries_the_port_at_offset_4() {
    let world = World::new();
    let request = EvtchnAllocUnbound {
        dom: DomId::SELF,
        remote_dom: DOM2,
        port: Port(0xDEAD),
    };
    let reply = world
        .domains
        .dispatch(DOM1, 6, &request.to_bytes())
        .unwrap();
    assert_eq!(reply.as_bytes(), &[0xF0, 0x7F, 2, 0, 1, 0, 0, 0]);
}

#[test]
fn bind_interdomain_reply_carries_local_port_at_offset_8() {
    let world = World::new();
    let remote_port = world
        .domains
        .alloc_unbound(DOM2, DomId::SELF, DOM1)
        .unwrap();
    let request = EvtchnBindInterdomain {
        remote_dom: DOM2,
        remote_port,
        ..EvtchnBindInterdomain::default()
    };
    let reply = world
        .domains
        .dispatch(DOM1, 0, &request.to_bytes())
        .unwrap();
    let decoded = EvtchnBindInterdomain::from_bytes(reply.as_bytes().try_into().unwrap());
    assert_eq!(decoded.local_port, Port(1));
    assert_eq!(decoded.remote_port, remote_port);
}

#[test]
fn bind_virq_and_bind_ipi_replies_carry_the_port() {
    let world = World::new();
    let virq = EvtchnBindVirq {
        virq: Virq::TIMER.number(),
        vcpu: VcpuId(1),
        port: Port(0),
    };
    let reply = world.domains.dispatch(DOM1, 1, &virq.to_bytes()).unwrap();
    assert_eq!(&reply.as_bytes()[8..12], &[1, 0, 0, 0]);
    let ipi = EvtchnBindIpi {
        vcpu: VcpuId(0),
        port: Port(0),
    };
    let reply = world.domains.dispatch(DOM1, 7, &ipi.to_bytes()).unwrap();
    assert_eq!(&reply.as_bytes()[4..8], &[2, 0, 0, 0]);
}

#[test]
fn ops_without_copy_back_reply_with_no_bytes() {
    let world = World::new();
    let port = world.domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    let port_bytes = port.0.to_le_bytes();
    for cmd in [4, 9, 3] {
        let reply = world.domains.dispatch(DOM1, cmd, &port_bytes).unwrap();
        assert!(reply.is_empty(), "cmd {cmd}");
    }
    let mut bind_vcpu = [0u8; 8];
    bind_vcpu[..4].copy_from_slice(&Port(1).0.to_le_bytes());
    assert_eq!(
        world.domains.dispatch(DOM1, 8, &bind_vcpu),
        Err(Errno::EINVAL)
    );
    assert!(
        world
            .domains
            .dispatch(DOM1, 10, &[0xF0, 0x7F])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn status_reply_keeps_guest_bytes_outside_the_written_fields() {
    let zoo = Zoo::new();
    let mut request = EvtchnStatus {
        dom: DomId::SELF,
        port: IPI,
        ..EvtchnStatus::default()
    }
    .to_bytes();
    request[2] = 0xAB; // padding after dom
    request[3] = 0xCD;
    request[16..24].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    let reply = zoo.world.domains.dispatch(DOM1, 5, &request).unwrap();
    let bytes = reply.as_bytes();
    assert_eq!(bytes.len(), 24);
    assert_eq!(&bytes[0..4], &[0xF0, 0x7F, 0xAB, 0xCD]);
    assert_eq!(&bytes[8..12], &(EvtchnStat::Ipi as u32).to_le_bytes());
    assert_eq!(&bytes[12..16], &[1, 0, 0, 0], "notify vcpu 1");
    assert_eq!(&bytes[16..24], &[1, 2, 3, 4, 5, 6, 7, 8], "union untouched");
}

#[test]
fn status_reply_writes_interdomain_member_and_keeps_its_padding() {
    let zoo = Zoo::new();
    let mut request = EvtchnStatus {
        dom: DomId::SELF,
        port: INTERDOMAIN,
        ..EvtchnStatus::default()
    }
    .to_bytes();
    request[16..24].copy_from_slice(&[9; 8]);
    let reply = zoo.world.domains.dispatch(DOM1, 5, &request).unwrap();
    assert_eq!(&reply.as_bytes()[16..24], &[2, 0, 9, 9, 1, 0, 0, 0]);
}

#[test]
fn reset_cont_is_accepted_as_cmd_14() {
    let world = World::new();
    assert_eq!(
        world.domains.dispatch(DOM1, 14, &[0xF0, 0x7F]),
        Err(Errno::EBUSY)
    );
}

#[test]
fn errno_return_values_are_negative_xen_numbers() {
    let world = World::new();
    let errno = world.domains.dispatch(DOM1, 3, &[0, 0, 0, 0]).unwrap_err();
    assert_eq!(errno, Errno::EINVAL);
    assert_eq!(errno.to_return_value(), -22);
}

#[test]
fn every_op_from_an_unknown_caller_gives_esrch() {
    let world = World::new();
    for op in EvtchnOp::ALL {
        let bytes = vec![0u8; op.arg_size()];
        assert_eq!(
            world.domains.dispatch(DomId(50), op.cmd(), &bytes),
            Err(Errno::ESRCH),
            "{op:?}"
        );
    }
}

#[test]
fn naming_own_domid_explicitly_acts_like_domid_self() {
    let world = World::new();
    assert_eq!(world.domains.alloc_unbound(DOM1, DOM1, DOM1), Ok(Port(1)));
    assert_eq!(
        world.domains.bind_interdomain(DOM1, DOM1, Port(1)),
        Ok(Port(2))
    );
    assert!(world.status(DOM1, DOM1, Port(2)).is_ok());
    assert_eq!(
        world
            .domains
            .reset(DOM1, DOM1, evtchn_core::ResetMode::Start),
        Ok(())
    );
}
