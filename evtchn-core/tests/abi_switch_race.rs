//! A 2-level send caught between reading the domain's ABI and writing the
//! shared page while the domain switches to FIFO (EVTCHNOP_init_control).
//!
//! 2-level senders take no ABI lock: they read the domain's ABI generation
//! before and after their page writes and raise the event again through
//! the new ABI if it changed. This test holds a sender at exactly the bad
//! instant — after its first read, before its pending bit is set — runs the
//! whole switch (whose copy of the 2-level pending bits then cannot see the
//! bit), and lets the sender finish: the event must still reach FIFO.
//! An unmask held at the same instant must still unmask the port in FIFO.
// Runs outside any loom model, on `tests/fifo_support`'s std atomics:
// built only without `--cfg loom` (the loom build is for the
// `#![cfg(loom)]` models).
#![cfg(not(loom))]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test code: a panic is a failed test"
)]

mod fifo_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::{self, ThreadId};

use evtchn_core::abi::{EvtchnInitControl, SharedInfo};
use evtchn_core::{
    DomainConfig, Domains, Errno, GuestFrame, NoPirqs, Port, SharedInfoView, VcpuId,
};
use fifo_support::{CONTROL_GFN, DOM1, EVENT_GFN, FifoNotify, GuestMemory, L, M, P};

/// Guest memory whose shared_info lookup stops one chosen thread once, at
/// its first page access, until the test lets it go.
struct GatedMemory {
    memory: GuestMemory,
    gated: Mutex<Option<ThreadId>>,
    reached: Barrier,
    release: Barrier,
    passed: AtomicBool,
}

impl SharedInfoView for GatedMemory {
    fn shared_info(&self) -> &SharedInfo {
        let is_gated = *self.gated.lock().unwrap() == Some(thread::current().id());
        if is_gated && !self.passed.swap(true, Ordering::SeqCst) {
            self.reached.wait();
            self.release.wait();
        }
        self.memory.shared_info()
    }

    fn map_frame(&self, gfn: u64) -> Result<Box<dyn GuestFrame>, Errno> {
        self.memory.map_frame(gfn)
    }
}

type TestDomains = Domains<FifoNotify, NoPirqs>;

/// DOM1 (one vcpu, 2-level) on gated memory, with an IPI port of vcpu 0.
fn gated_domain_with_ipi() -> (Arc<GatedMemory>, Arc<TestDomains>, Port) {
    let memory = Arc::new(GatedMemory {
        memory: GuestMemory::new(1, 1),
        gated: Mutex::new(None),
        reached: Barrier::new(2),
        release: Barrier::new(2),
        passed: AtomicBool::new(false),
    });
    let domains = Arc::new(Domains::new(FifoNotify::default(), NoPirqs));
    let view: Arc<dyn SharedInfoView> = memory.clone();
    domains
        .create_domain(DomainConfig::new(DOM1, 1), view)
        .unwrap();
    let port = domains.bind_ipi(DOM1, VcpuId(0)).unwrap();
    (memory, domains, port)
}

/// Switches DOM1 to FIFO: vcpu 0's control block.
fn init_control_on_vcpu0(domains: &TestDomains) {
    let request = EvtchnInitControl {
        control_gfn: CONTROL_GFN,
        vcpu: VcpuId(0),
        ..EvtchnInitControl::default()
    };
    domains.init_control(DOM1, request).unwrap();
}

#[test]
fn a_send_that_writes_two_level_bits_after_the_switch_is_raised_again_in_fifo() {
    let (memory, domains, port) = gated_domain_with_ipi();

    let sender = {
        let (domains, memory) = (domains.clone(), memory.clone());
        thread::spawn(move || {
            *memory.gated.lock().unwrap() = Some(thread::current().id());
            domains.send(DOM1, port).unwrap();
        })
    };
    // The sender has read "2-level" and stands before its pending bit.
    memory.reached.wait();
    init_control_on_vcpu0(&domains);
    memory.release.wait();
    sender.join().unwrap();

    domains.expand_array(DOM1, EVENT_GFN).unwrap();
    assert_eq!(domains.is_pending(DOM1, port), Some(true));
    let word = memory.memory.page(EVENT_GFN).words[port.0 as usize].load(Ordering::SeqCst);
    assert_eq!(
        word,
        P | L,
        "linked on its queue once its event word exists"
    );
}

#[test]
fn an_unmask_that_writes_two_level_bits_after_the_switch_is_done_again_in_fifo() {
    let (memory, domains, port) = gated_domain_with_ipi();

    let unmasker = {
        let (domains, memory) = (domains.clone(), memory.clone());
        thread::spawn(move || {
            *memory.gated.lock().unwrap() = Some(thread::current().id());
            domains.unmask(DOM1, port).unwrap();
        })
    };
    // The unmasker has read "2-level" and stands before the mask bitmap.
    memory.reached.wait();
    init_control_on_vcpu0(&domains);
    domains.expand_array(DOM1, EVENT_GFN).unwrap();
    // The guest masks the port in its new event word, as Linux masks every
    // port when it sets FIFO up.
    let words = &memory.memory.page(EVENT_GFN).words;
    words[port.0 as usize].store(M, Ordering::SeqCst);
    assert_eq!(domains.is_masked(DOM1, port), Some(true));
    memory.release.wait();
    unmasker.join().unwrap();

    assert_eq!(
        words[port.0 as usize].load(Ordering::SeqCst) & M,
        0,
        "the unmask reached the FIFO event word"
    );
    assert_eq!(domains.is_masked(DOM1, port), Some(false));
}
