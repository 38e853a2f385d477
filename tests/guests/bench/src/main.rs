//! `bench`: times the paths event delivery is made of, in TSC cycles, and
//! prints `bench <name> median=<cycles> p99=<cycles> cycles` lines (DESIGN
//! "Performance"): a null hypercall (`xen_version(XENVER_version)`), an
//! unknown hypercall (-ENOSYS: the dispatch floor), a send to a masked IPI
//! port (no upcall), and a send to an unmasked IPI port of this vcpu, whose
//! upcall runs before the send returns (send → bounce frame → handler →
//! HYPERVISOR_iret). The TAP checks only say the operations did what they
//! should; the timings are reported, never asserted.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering};

use sluice_guest::hypercall::hypercall5;
use sluice_guest::time::rdtsc;
use sluice_guest::{
    StartInfo, check, check_eq, evtchn, println, shared_info, upcall, vcpu, version,
};

sluice_guest::entry!(main);

/// Samples per measurement.
const SAMPLES: usize = 2001;

static HANDLED: AtomicU32 = AtomicU32::new(0);

fn count_event(_port: u32) {
    HANDLED.fetch_add(1, Ordering::SeqCst);
}

/// Times `operation` SAMPLES times; prints and returns (median, p99).
fn measure(name: &str, mut operation: impl FnMut()) -> (u64, u64) {
    let mut samples = [0u64; SAMPLES];
    for _ in 0..64 {
        operation();
    }
    for sample in samples.iter_mut() {
        let start = rdtsc();
        operation();
        *sample = rdtsc().wrapping_sub(start);
    }
    samples.sort_unstable();
    let median = samples.get(SAMPLES / 2).copied().unwrap_or(0);
    let p99 = samples.get(SAMPLES * 99 / 100).copied().unwrap_or(0);
    println!("bench {name} median={median} p99={p99} cycles");
    (median, p99)
}

fn main(_start_info: &'static StartInfo) {
    // No periodic ticks in the measurements.
    check_eq!(
        vcpu::stop_periodic_timer(0),
        Ok(()),
        "VCPUOP_stop_periodic_timer is rc 0"
    );
    let Some(shared) = shared_info::get() else {
        check!(false, "shared_info is mapped");
        return;
    };

    measure("null-hypercall", || {
        let _ = version::version();
    });
    measure("unknown-hypercall", || {
        // SAFETY: an unknown hypercall reads no memory; the arguments are 0.
        let _ = unsafe { hypercall5(63, 0, 0, 0, 0, 0) };
    });

    let masked = evtchn::bind_ipi(0);
    check!(
        masked.is_ok(),
        "bind_ipi(vcpu 0) for the masked port ({masked:?})"
    );
    let Ok(masked) = masked else {
        return;
    };
    shared.mask(masked);
    let mut sends_ok = true;
    measure("send-masked", || {
        sends_ok &= evtchn::send(masked).is_ok();
        shared.clear_pending(masked);
    });
    check!(sends_ok, "every send to the masked port is rc 0");

    check_eq!(
        upcall::register_callbacks(),
        Ok(()),
        "event and failsafe callbacks registered"
    );
    let port = evtchn::bind_ipi(0);
    check!(
        port.is_ok(),
        "bind_ipi(vcpu 0) for the unmasked port ({port:?})"
    );
    let Ok(port) = port else {
        return;
    };
    upcall::set_handler(port, count_event);
    upcall::unmask_vcpu();
    let mut sends_ok = true;
    let before = HANDLED.load(Ordering::SeqCst);
    measure("send-upcall-iret", || {
        sends_ok &= evtchn::send(port).is_ok();
    });
    let handled = HANDLED.load(Ordering::SeqCst) - before;
    check!(sends_ok, "every send to the unmasked port is rc 0");
    check_eq!(
        handled as usize,
        SAMPLES + 64,
        "every send ran the upcall once before returning"
    );
    upcall::mask_vcpu();
}
