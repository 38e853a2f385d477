//! The FIFO ops on a domain using the 2-level ABI (spec §2.13).
//!
//! The spec and the task text agree: set_priority gives -ENOSYS (after
//! -EINVAL for an invalid port) and expand_array -EOPNOTSUPP. init_control
//! would switch to FIFO, but these domains' views (bare `SharedInfo`
//! pages) map no guest frames, which means no FIFO: after Xen 4.17's
//! argument checks it answers -EOPNOTSUPP. The FIFO ABI itself is tested in
//! `fifo_*.rs`.

mod common;

use common::*;
use evtchn_core::abi::EvtchnInitControl;
use evtchn_core::{Errno, Port, VcpuId};

#[test]
fn set_priority_gives_enosys_for_every_valid_port_on_two_level() {
    let zoo = Zoo::new();
    for (what, port) in ZOO_PORTS {
        for priority in [0, 7, 15, 16, u32::MAX] {
            assert_eq!(
                zoo.world.domains.set_priority(DOM1, port, priority),
                Err(Errno::ENOSYS),
                "{what} priority {priority}"
            );
        }
    }
}

#[test]
fn set_priority_gives_einval_for_invalid_port_before_enosys() {
    let zoo = Zoo::new();
    for port in INVALID_PORTS {
        assert_eq!(
            zoo.world.domains.set_priority(DOM1, port, 3),
            Err(Errno::EINVAL),
            "{port}"
        );
    }
}

#[test]
fn expand_array_gives_eopnotsupp_while_fifo_is_not_active() {
    let world = World::new();
    for gfn in [0, 1, u64::MAX] {
        assert_eq!(
            world.domains.expand_array(DOM1, gfn),
            Err(Errno::EOPNOTSUPP)
        );
    }
}

#[test]
fn init_control_checks_vcpu_then_offset_then_reports_no_fifo() {
    let world = World::new();
    let request = |vcpu: u32, offset: u32| EvtchnInitControl {
        control_gfn: 0x1234,
        offset,
        vcpu: VcpuId(vcpu),
        ..EvtchnInitControl::default()
    };
    let cases: [(&str, EvtchnInitControl, Errno); 6] = [
        ("missing vcpu", request(2, 0), Errno::ENOENT),
        (
            "missing vcpu beats bad offset",
            request(9, 4095),
            Errno::ENOENT,
        ),
        ("offset past 4024", request(0, 4025 + 7), Errno::EINVAL),
        ("offset not 8-aligned", request(0, 4), Errno::EINVAL),
        ("largest offset", request(1, 4024), Errno::EOPNOTSUPP),
        ("offset 0", request(0, 0), Errno::EOPNOTSUPP),
    ];
    for (what, arg, errno) in cases {
        assert_eq!(world.domains.init_control(DOM1, arg), Err(errno), "{what}");
    }
    // Still 2-level afterwards.
    assert_eq!(
        world.domains.set_priority(DOM1, Port(1), 0),
        Err(Errno::ENOSYS)
    );
}
