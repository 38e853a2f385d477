//! `selftest=pirq-map-race`: PHYSDEVOP_map_pirq racing the destroy of its
//! target. The hypercall checks that the target exists, then maps under
//! the PIRQ table's lock; a destroy can forget the target's pirqs in
//! between. This plays that order (forget, then map) and checks the map
//! is refused and leaves no mapping, and that a domain built under the id
//! again may map.

use arch::qemu::ExitCode;
use evtchn_core::{DomId, Errno, PirqHost};

use crate::pirq::{self, HostPirqs};

/// The domain id the test maps for (no domain runs in a self-test).
const DOMAIN: DomId = DomId(9);
/// The RTC's line, identity-mapped.
const GSI: i32 = 8;

/// Runs the three steps.
pub fn run() -> ExitCode {
    // The line's first map logs through the console: nothing else needed.
    let first = pirq::map_gsi(DOMAIN, GSI, GSI);
    pirq::forget_domain(DOMAIN);
    let is_forgotten = !HostPirqs.is_pirq_mapped(DOMAIN, GSI as u32);
    let racing = pirq::map_gsi(DOMAIN, GSI, GSI);
    let is_stale = HostPirqs.is_pirq_mapped(DOMAIN, GSI as u32);
    pirq::new_domain(DOMAIN);
    let rebuilt = pirq::map_gsi(DOMAIN, GSI, GSI);
    pirq::forget_domain(DOMAIN);
    log::info!(
        "selftest pirq-map-race: map {first:?}; forgotten: {is_forgotten}; map after the forget {racing:?}, mapping left: {is_stale}; after a new build {rebuilt:?}"
    );
    if first == Ok(8)
        && is_forgotten
        && racing == Err(Errno::ESRCH)
        && !is_stale
        && rebuilt == Ok(8)
    {
        log::info!(
            "selftest pirq-map-race: a map that comes after its target's pirqs were forgotten is refused and leaves no mapping"
        );
        ExitCode::Pass
    } else {
        log::error!("selftest pirq-map-race: FAILED");
        ExitCode::Fail
    }
}
