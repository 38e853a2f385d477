//! The errnos of map_pirq, unmap_pirq, bind_pirq, eoi and irq_status_query
//! (spec §2.9, §6.2): what a privileged domain gets for bad requests, and
//! what an unprivileged one gets for every request.

use sluice_guest::evtchn::{self, DOMID_SELF};
use sluice_guest::physdev::{self, XENIRQSTAT_NEEDS_EOI, XENIRQSTAT_SHARED};
use sluice_guest::{Errno, check, check_eq};

use crate::{HUGE_PIRQ, RTC_GSI, RTC_PIRQ};

/// A GSI no IOAPIC has.
const NO_SUCH_GSI: i32 = 1000;
/// COM1's line: the hypervisor's own (its console), never handed out.
const COM1_GSI: i32 = 4;
/// A domain id no domain has.
const NO_SUCH_DOMAIN: u16 = 99;

/// Before anything is mapped.
pub fn before_mapping() {
    check_eq!(
        evtchn::bind_pirq(RTC_PIRQ, 0),
        Err(Errno::EPERM),
        "bind_pirq of a pirq not yet mapped fails -EPERM"
    );
    check_eq!(
        evtchn::bind_pirq(HUGE_PIRQ, 0),
        Err(Errno::EINVAL),
        "bind_pirq of a pirq >= nr_pirqs fails -EINVAL"
    );
    check_eq!(
        physdev::eoi(RTC_PIRQ),
        Err(Errno::EINVAL),
        "PHYSDEVOP_eoi of a pirq the domain does not have fails -EINVAL"
    );
    check_eq!(
        physdev::unmap_pirq(DOMID_SELF, RTC_PIRQ as i32),
        Err(Errno::EINVAL),
        "unmap_pirq of a pirq not mapped fails -EINVAL"
    );
    let flags = physdev::irq_status_query(RTC_PIRQ);
    check_eq!(
        flags.map(|flags| flags & (XENIRQSTAT_NEEDS_EOI | XENIRQSTAT_SHARED)),
        Ok(XENIRQSTAT_NEEDS_EOI),
        "irq_status_query says needs_eoi (always, for PV) and not shared"
    );
}

/// map_pirq of GSI 8 and its errors.
pub fn mapping() {
    check_eq!(
        physdev::map_pirq_gsi(DOMID_SELF, NO_SUCH_GSI, -1),
        Err(Errno::EINVAL),
        "map_pirq of a GSI no IOAPIC has fails -EINVAL"
    );
    check_eq!(
        physdev::map_pirq_gsi(DOMID_SELF, COM1_GSI, COM1_GSI),
        Err(Errno::EPERM),
        "map_pirq of the hypervisor's own line (COM1, GSI 4) fails -EPERM"
    );
    check_eq!(
        physdev::map_pirq_gsi(NO_SUCH_DOMAIN, RTC_GSI, -1),
        Err(Errno::ESRCH),
        "map_pirq for a domain that does not exist fails -ESRCH"
    );
    check_eq!(
        physdev::map_pirq_gsi(DOMID_SELF, RTC_GSI, RTC_PIRQ as i32),
        Ok(RTC_PIRQ),
        "map_pirq of GSI 8 to pirq 8 succeeds"
    );
    check_eq!(
        physdev::map_pirq_gsi(DOMID_SELF, RTC_GSI, -1),
        Ok(RTC_PIRQ),
        "map_pirq of GSI 8 again, letting the hypervisor choose, answers pirq 8"
    );
    check_eq!(
        physdev::map_pirq_gsi(DOMID_SELF, RTC_GSI, RTC_PIRQ as i32 + 1),
        Err(Errno::EEXIST),
        "map_pirq of the mapped GSI 8 to another pirq fails -EEXIST (XSA-46)"
    );
    check_eq!(
        evtchn::bind_pirq(RTC_PIRQ + 1, 0),
        Err(Errno::EPERM),
        "the refused mapping left pirq 9 unmapped: bind_pirq fails -EPERM"
    );
    check_eq!(
        physdev::unmap_pirq(DOMID_SELF, HUGE_PIRQ as i32),
        Err(Errno::EINVAL),
        "unmap_pirq of a pirq >= nr_pirqs fails -EINVAL"
    );
    check_eq!(
        physdev::eoi(RTC_PIRQ),
        Ok(()),
        "PHYSDEVOP_eoi of a mapped pirq with nothing outstanding is rc 0"
    );
}

/// An unprivileged domain: map and unmap need DM_PRIV, so even its own
/// pirqs are refused; nothing is mapped for it, so bind_pirq is refused.
pub fn unprivileged() {
    check_eq!(
        physdev::map_pirq_gsi(DOMID_SELF, RTC_GSI, RTC_PIRQ as i32),
        Err(Errno::EPERM),
        "map_pirq of GSI 8 for itself by an unprivileged domain fails -EPERM"
    );
    check_eq!(
        physdev::map_pirq_gsi(0, RTC_GSI, -1),
        Err(Errno::EPERM),
        "map_pirq of GSI 8 for dom0 by an unprivileged domain fails -EPERM"
    );
    check_eq!(
        physdev::map_pirq_gsi(NO_SUCH_DOMAIN, RTC_GSI, -1),
        Err(Errno::ESRCH),
        "map_pirq for a domain that does not exist fails -ESRCH (checked before privilege)"
    );
    check_eq!(
        physdev::unmap_pirq(0, RTC_PIRQ as i32),
        Err(Errno::EPERM),
        "unmap_pirq of dom0's pirq by an unprivileged domain fails -EPERM"
    );
    check_eq!(
        evtchn::bind_pirq(RTC_PIRQ, 0),
        Err(Errno::EPERM),
        "bind_pirq of a pirq not mapped for it fails -EPERM"
    );
    check_eq!(
        evtchn::bind_pirq(HUGE_PIRQ, 0),
        Err(Errno::EINVAL),
        "bind_pirq of a pirq >= nr_pirqs fails -EINVAL"
    );
    check_eq!(
        physdev::eoi(RTC_PIRQ),
        Err(Errno::EINVAL),
        "PHYSDEVOP_eoi of a pirq it does not have fails -EINVAL"
    );
    check!(
        physdev::irq_status_query(RTC_PIRQ).is_ok_and(|flags| flags & XENIRQSTAT_NEEDS_EOI != 0),
        "irq_status_query still says needs_eoi"
    );
}
