//! `hello`: the smallest Sluice scenario guest. It greets with the
//! hypervisor's version and its command line, TAP-checks a few start-of-day
//! facts of the PV ABI, and powers off.
//!
//! Checked (spec §7.7, §7.9, §7.12, §3.2): xen_version reports 4.17 (the
//! release Sluice is faithful to); start_info's magic; shared_info got
//! mapped (vcpu 0's `evtchn_upcall_mask` reads 1, which the reserved .bss
//! page it replaced would not); every legacy vcpu_info slot starts masked;
//! no port is pending or masked at boot; vcpu 0's time record and the
//! wall clock are published.
#![no_std]
#![no_main]

use core::sync::atomic::Ordering;

use sluice_guest::shared_info::{self, LEGACY_MAX_VCPUS};
use sluice_guest::{StartInfo, check, check_eq, println, version};

sluice_guest::entry!(main);

fn main(start_info: &'static StartInfo) {
    let (major, minor) = version::version();
    let extra = version::extraversion();
    let extra_len = extra.iter().position(|&b| b == 0).unwrap_or(extra.len());
    let extra = core::str::from_utf8(extra.get(..extra_len).unwrap_or(&[])).unwrap_or("?");
    println!("# Hello from a Sluice test guest on Xen {major}.{minor}{extra}");
    println!("# command line: \"{}\"", start_info.cmd_line_str());
    println!(
        "# start_info: nr_pages={} flags={:#x} shared_info={:#x} pt_base={:#x} nr_pt_frames={}",
        start_info.nr_pages,
        start_info.flags,
        start_info.shared_info,
        start_info.pt_base,
        start_info.nr_pt_frames
    );

    check_eq!((major, minor), (4, 17), "xen_version reports 4.17");
    check!(
        start_info.has_valid_magic(),
        "start_info magic is \"xen-3.0-x86_64\" (got \"{}\")",
        start_info.magic_str()
    );

    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped with update_va_mapping");
        return;
    };
    check!(true, "shared_info is mapped with update_va_mapping");
    check_eq!(
        shared.vcpu0().evtchn_upcall_mask.load(Ordering::SeqCst),
        1,
        "vcpu 0 starts with evtchn_upcall_mask = 1"
    );
    let unmasked_slots = (0..LEGACY_MAX_VCPUS)
        .filter(|&v| shared.vcpu(v).is_some_and(|info| !info.upcall_masked()))
        .count();
    check_eq!(
        unmasked_slots,
        0,
        "all 32 vcpu_info slots start with evtchn_upcall_mask = 1"
    );
    let pending_words = shared
        .evtchn_pending
        .iter()
        .filter(|w| w.load(Ordering::SeqCst) != 0)
        .count();
    check_eq!(pending_words, 0, "no port is pending at boot");
    // spec §9.4 item 14: both time records are published (seqlock version
    // even = stable, non-zero = written at least once).
    let vcpu_time = shared.vcpu0().time.version.load(Ordering::SeqCst);
    check!(
        vcpu_time != 0 && vcpu_time.is_multiple_of(2),
        "vcpu 0's time version is even and non-zero ({vcpu_time})"
    );
    let wall_clock = shared.wc_version.load(Ordering::SeqCst);
    check!(
        wall_clock != 0 && wall_clock.is_multiple_of(2),
        "the wall-clock version is even and non-zero ({wall_clock})"
    );
    let masked_words = shared
        .evtchn_mask
        .iter()
        .filter(|w| w.load(Ordering::SeqCst) != 0)
        .count();
    check_eq!(masked_words, 0, "no port is masked at boot");
}
