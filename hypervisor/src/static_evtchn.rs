//! Static event channels declared on the command line (Xen's dom0less
//! "static event channels" idea): `evtchn=A:P,B:Q` connects port P of
//! domain A with port Q of domain B before either domain runs, so both
//! find the channel already interdomain (EVTCHNOP_status) without any
//! binding of their own. Several channels: several `evtchn=` words.
//!
//! Built on evtchn-core's `alloc_unbound_at` (A's port, unbound for B) and
//! `bind_interdomain_at` (B's port, bound to it); as with a guest's
//! bind_interdomain, B's end starts pending.

use evtchn_core::{DomId, Port};

/// One `evtchn=A:P,B:Q` word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticChannel {
    /// The end allocated first (unbound for `second`).
    pub first: (DomId, Port),
    /// The end bound to it.
    pub second: (DomId, Port),
}

/// Parses `A:P,B:Q` (decimal); `None` if malformed, if a port is 0 or if
/// both ends name the same domain.
pub fn parse(value: &str) -> Option<StaticChannel> {
    let end = |text: &str| -> Option<(DomId, Port)> {
        let (domain, port) = text.split_once(':')?;
        let port: u32 = port.parse().ok()?;
        (port != 0).then_some((DomId(domain.parse().ok()?), Port(port)))
    };
    let (first, second) = value.split_once(',')?;
    let channel = StaticChannel {
        first: end(first)?,
        second: end(second)?,
    };
    (channel.first.0 != channel.second.0).then_some(channel)
}

/// Connects every channel (the domains exist, none runs yet). A channel
/// that cannot be made is logged with the errno; the domains still run.
pub fn connect_all(channels: &[StaticChannel]) {
    let domains = crate::events::domains();
    for channel in channels {
        let ((first, first_port), (second, second_port)) = (channel.first, channel.second);
        let result = domains
            .alloc_unbound_at(first, first_port, second)
            .and_then(|()| {
                domains
                    .bind_interdomain_at(second, second_port, first, first_port)
                    .inspect_err(|_| {
                        // Leave no half-made channel behind.
                        let _ = domains.close(first, first_port);
                    })
            });
        match result {
            Ok(()) => log::info!(
                "static event channel: d{} port {} <-> d{} port {}",
                first.0,
                first_port.0,
                second.0,
                second_port.0
            ),
            Err(errno) => log::error!(
                "static event channel d{}:{} <-> d{}:{}: {errno}",
                first.0,
                first_port.0,
                second.0,
                second_port.0
            ),
        }
    }
}
