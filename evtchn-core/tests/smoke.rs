//! A first end-to-end pass over the public API.

mod common;

use common::*;
use evtchn_core::{ChannelState, DomId, Port, VcpuId};

#[test]
fn loopback_pair_delivers_send_to_the_peer() {
    let world = World::new();
    let (a, b) = world.connect(DOM1, DOM1);
    assert_eq!((a, b), (Port(1), Port(2)));
    assert_eq!(
        world.state(DOM1, b),
        ChannelState::Interdomain {
            remote: DOM1,
            remote_port: a,
            consumer: evtchn_core::Consumer::Guest
        }
    );
    // The new local port is pending straight after binding.
    assert!(world.is_pending(DOM1, b));
    world.guest_ack_all(DOM1);
    world.domains.send(DOM1, b).unwrap();
    assert!(world.is_pending(DOM1, a));
    assert_eq!(world.kicks(), vec![(DOM1, VcpuId(0))]);
    let _ = DomId::SELF;
}
