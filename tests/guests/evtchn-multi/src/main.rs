//! `evtchn-multi`: event channels between many domains on many pCPUs.
//!
//! One image plays every part; its command line says which:
//!
//! * `test=pingpong role=a|b peer=<domid> wait=spin|block|poll rounds=N`:
//!   two domains play N strict round trips over one interdomain channel
//!   ([`pingpong`]);
//! * `test=ipi rounds=N ticks=K`: two vcpus of one domain play N round
//!   trips over IPI ports, then each takes K VIRQ_TIMER ticks ([`ipi`]);
//! * `test=race role=receiver|sender peer=<domid> rounds=N`: thousands of
//!   sends racing the receiver's SCHEDOP_block ([`race`]);
//! * `test=mesh domains=D rounds=M`: D domains of two vcpus exchange
//!   requests and acknowledgements all-to-all ([`mesh`]);
//! * `test=destroy role=survivor|victim|late`: a domain crashes in the
//!   middle of a conversation; the survivor binds again elsewhere
//!   ([`destroy`]);
//! * `test=domexc role=control|victim|bystander`: VIRQ_DOM_EXC reaches
//!   the privileged domain, and only it, when another domain shuts down
//!   ([`domexc`]);
//! * `test=hostile role=victim|partner|hostile`: a domain floods sends and
//!   makes random hypercalls while two others finish their round trips
//!   ([`hostile`]);
//! * `test=global role=a|b peer=<domid> rounds=N`: two domains on one
//!   pCPU map a page of their own at the same address with the global
//!   bit; neither ever sees the other's frame there ([`global`]).
//!
//! Every count is exact: a strict request/answer protocol keeps at most one
//! event in flight per direction of a channel, so no two events coalesce
//! into one pending bit. No domain shares memory with another: channels are
//! set up by domid, Xen's lowest-free port allocation and EVTCHNOP_status.
#![no_std]
#![no_main]

mod common;
mod destroy;
mod domexc;
mod global;
mod hostile;
mod ipi;
mod mesh;
mod pingpong;
mod race;

use sluice_guest::{StartInfo, check, check_eq, upcall};

sluice_guest::entry!(main);

fn main(start_info: &'static StartInfo) {
    if !check_eq!(
        upcall::register_callbacks(),
        Ok(()),
        "the event and failsafe callbacks are registered"
    ) {
        return;
    }
    match start_info.arg_value("test").unwrap_or("") {
        "pingpong" => pingpong::main(start_info),
        "ipi" => ipi::main(start_info),
        "race" => race::main(start_info),
        "mesh" => mesh::main(start_info),
        "destroy" => destroy::main(start_info),
        "domexc" => domexc::main(start_info),
        "hostile" => hostile::main(start_info),
        "global" => global::main(start_info),
        other => {
            check!(
                false,
                "the command line names a known test (test=pingpong|ipi|race|mesh|destroy|domexc|hostile|global), got {other:?}"
            );
        }
    }
}
