//! `pirq`: a physical interrupt line routed to a guest port (spec §2.9, §6,
//! §8 XSA-46/83). Sluice hands out one line, GSI 8, the CMOS RTC's
//! periodic interrupt, which it programs and acknowledges itself.
//!
//! As the privileged domain (`priv`, SIF_PRIVILEGED) the guest checks
//! map_pirq / unmap_pirq / bind_pirq / eoi errnos, then maps GSI 8 to pirq
//! 8, binds it and counts [`delivery::INTERRUPTS`] interrupts, each
//! handled by its upcall, which sends PHYSDEVOP_eoi (the hypervisor holds
//! the line masked until then, or forces the EOI after 1 ms); then closes
//! the port and sees nothing more, re-binds, and unmaps a bound pirq. As an unprivileged domain it checks that every
//! PIRQ-granting call is refused.
//!
//! With `pirq-vcpu=N` (and `vcpus=` above N) the privileged guest instead
//! starts vcpu N, moves the pirq port to it with EVTCHNOP_bind_vcpu and
//! counts the interrupts there (the hypervisor sends the line to vcpu N's
//! pCPU); the re-bind and unmap checks follow as usual. With `slow-eoi` it
//! instead EOIs late, twice, then never ([`delivery::slow_eoi`]), and the
//! hypervisor's 1 ms forced EOI keeps the line going.
//!
//! With `share=silent partner=N` (privileged) and `share=good` (domain
//! N), two domains share the line and the silent one never EOIs
//! ([`shared`]).
#![no_std]
#![no_main]

mod delivery;
mod errors;
mod shared;

use sluice_guest::start_info::SIF_PRIVILEGED;
use sluice_guest::{StartInfo, check, println, upcall};

sluice_guest::entry!(main);

/// The line Sluice hands to guests: GSI 8, the RTC.
pub const RTC_GSI: i32 = 8;
/// The pirq the privileged guest maps it to (identity, as Linux dom0 does).
pub const RTC_PIRQ: u32 = 8;
/// A pirq past any domain's nr_pirqs.
pub const HUGE_PIRQ: u32 = 1_000_000;

fn main(start_info: &'static StartInfo) {
    check!(
        upcall::register_callbacks().is_ok(),
        "the event and failsafe callbacks are registered"
    );
    upcall::unmask_vcpu();
    match start_info.arg_value("share") {
        Some("silent") => {
            let partner = start_info
                .arg_value("partner")
                .and_then(|value| value.parse().ok())
                .unwrap_or(1);
            println!("# pirq: shares GSI {RTC_GSI} with d{partner} and never EOIs");
            shared::silent(partner, start_info.arg_value("end") == Some("crash"));
            return;
        }
        Some("good") => {
            println!("# pirq: shares GSI {RTC_GSI} and EOIs each interrupt");
            shared::good(start_info.arg_value("partner-end") == Some("crash"));
            return;
        }
        _ => {}
    }
    if start_info.flags & SIF_PRIVILEGED != 0 {
        println!("# pirq: privileged domain: GSI {RTC_GSI} -> pirq {RTC_PIRQ}");
        errors::before_mapping();
        errors::mapping();
        match start_info
            .arg_value("pirq-vcpu")
            .and_then(|value| value.parse().ok())
        {
            Some(target) => delivery::counted_on_vcpu(target),
            None if start_info.has_arg("slow-eoi") => delivery::slow_eoi(),
            None => delivery::counted_interrupts(),
        }
        delivery::rebind_after_close();
        delivery::unmap_while_bound();
    } else {
        println!("# pirq: unprivileged domain: every grant is refused");
        errors::unprivileged();
    }
}
