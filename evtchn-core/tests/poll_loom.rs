//! loom model of SCHEDOP_poll against a send on the polled port: the
//! sender skips the poller scan when the domain's polling count reads 0, so
//! check that no interleaving loses the wake-up (spec §3.5). Run with
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p evtchn-core --test poll_loom --release
//! ```
#![cfg(loom)]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed model run"
)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;

use evtchn_core::abi::SharedInfo;
use evtchn_core::{DomId, DomainConfig, Domains, NoPirqs, Notify, PollOutcome, Port, VcpuId};

const DOM1: DomId = DomId(1);

/// Counts poller wake-ups and kicks.
#[derive(Default)]
struct Wakes {
    polls: AtomicUsize,
    kicks: AtomicUsize,
}

impl Notify for Wakes {
    fn kick_vcpu(&self, _domain: DomId, _vcpu: VcpuId) {
        self.kicks.fetch_add(1, Ordering::SeqCst);
    }
    fn wake_poller(&self, _domain: DomId, _vcpu: VcpuId) {
        self.polls.fetch_add(1, Ordering::SeqCst);
    }
}

/// Domain 1 with two vcpus and an IPI port bound to vcpu 1, masked (so the
/// only wake-up of a poller on vcpu 0 is the poller wake-up itself).
fn setup() -> (Arc<Domains<Wakes, NoPirqs>>, Port) {
    let domains = Domains::new(Wakes::default(), NoPirqs);
    let page = std::sync::Arc::new(SharedInfo::new());
    let view: std::sync::Arc<dyn evtchn_core::SharedInfoView> = page.clone();
    let config = DomainConfig {
        max_evtchn_port: 3,
        ..DomainConfig::new(DOM1, 2)
    };
    domains.create_domain(config, view).unwrap();
    let port = domains.bind_ipi(DOM1, VcpuId(1)).unwrap();
    page.evtchn_mask[0].fetch_or(1 << port.0, Ordering::SeqCst);
    (Arc::new(domains), port)
}

#[test]
fn a_send_racing_a_poll_is_seen_by_it_or_wakes_the_poller() {
    loom::model(|| {
        let (domains, port) = setup();
        let poller = {
            let domains = domains.clone();
            thread::spawn(move || domains.poll(DOM1, VcpuId(0), &[port]).unwrap())
        };
        let sender = {
            let domains = domains.clone();
            thread::spawn(move || domains.send(DOM1, port).unwrap())
        };
        let outcome = poller.join().unwrap();
        sender.join().unwrap();
        let woken = domains.notify().polls.load(Ordering::SeqCst);
        match outcome {
            // The sender may have seen the poll bit and woken the vcpu
            // while the poll was still checking: harmless, it returns anyway.
            PollOutcome::Ready => assert!(woken <= 1),
            PollOutcome::Block => {
                assert_eq!(woken, 1, "a blocked poller must be woken");
                assert!(!domains.is_polling(DOM1, VcpuId(0)));
            }
        }
        assert_eq!(domains.notify().kicks.load(Ordering::SeqCst), 0, "masked");
        // The count went back to 0: a later send skips the scan, and a
        // later poll of the (pending) port is ready at once.
        domains.poll_finish(DOM1, VcpuId(0));
        assert_eq!(
            domains.poll(DOM1, VcpuId(0), &[port]),
            Ok(PollOutcome::Ready)
        );
    });
}
