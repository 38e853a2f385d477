//! A property test of FIFO linking and unlinking against a reference model
//! written from spec §4.3–§4.5: random sends, priority changes, guest masks
//! and unmasks, closes and binds, and (partial) drains over 16 priorities
//! and three vcpus, one of them without a control block. After every step
//! each event word (P, M, L and LINK), every queue head, the ready words,
//! `upcall_pending`, every errno and every handled port must equal the
//! model's.

// Runs outside any loom model, on `tests/fifo_support`'s std atomics:
// built only without `--cfg loom` (the loom build is for the
// `#![cfg(loom)]` models).
#![cfg(not(loom))]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a panic in a property test is a failed case"
)]

mod fifo_support;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;

use evtchn_core::{Errno, Port, VcpuId};
use fifo_support::*;
use proptest::prelude::*;

const VCPUS: u32 = 3;
/// vcpu 2 never gets a control block.
const VCPUS_WITH_BLOCK: u32 = 2;
const INITIAL_PORTS: usize = 10;

#[derive(Clone, Debug)]
enum Step {
    Send(usize),
    SetPriority(usize, u32),
    GuestMask(usize),
    GuestUnmask(usize),
    Close(usize),
    Bind(u32),
    Drain { vcpu: u32, limit: usize },
    ClearUpcall(u32),
}

fn step() -> impl Strategy<Value = Step> {
    let index = 0..INITIAL_PORTS + 4;
    prop_oneof![
        6 => index.clone().prop_map(Step::Send),
        2 => (index.clone(), 0u32..18).prop_map(|(i, p)| Step::SetPriority(i, p)),
        1 => index.clone().prop_map(Step::GuestMask),
        1 => index.clone().prop_map(Step::GuestUnmask),
        1 => index.prop_map(Step::Close),
        1 => (0..VCPUS).prop_map(Step::Bind),
        3 => (0..VCPUS_WITH_BLOCK, 1usize..6).prop_map(|(vcpu, limit)| Step::Drain { vcpu, limit }),
        1 => (0..VCPUS).prop_map(Step::ClearUpcall),
    ]
}

#[derive(Clone, Debug, Default)]
struct ModelPort {
    is_bound: bool,
    vcpu: u32,
    priority: u8,
    pending: bool,
    masked: bool,
    linked: bool,
}

#[derive(Default)]
struct Model {
    ports: BTreeMap<u32, ModelPort>,
    queues: Vec<Vec<VecDeque<u32>>>,
    heads: Vec<[u32; 16]>,
    ready: Vec<u32>,
    upcall: Vec<bool>,
}

impl Model {
    fn new() -> Self {
        Self {
            queues: (0..VCPUS)
                .map(|_| (0..16).map(|_| VecDeque::new()).collect())
                .collect(),
            heads: vec![[0; 16]; VCPUS as usize],
            ready: vec![0; VCPUS as usize],
            upcall: vec![false; VCPUS as usize],
            ..Self::default()
        }
    }

    fn word(&self, port: u32) -> u32 {
        let Some(state) = self.ports.get(&port) else {
            return 0;
        };
        let mut word = 0;
        if state.pending {
            word |= P;
        }
        if state.masked {
            word |= M;
        }
        if state.linked {
            word |= L;
        }
        word | self.link_of(port)
    }

    fn link_of(&self, port: u32) -> u32 {
        for vcpu in &self.queues {
            for queue in vcpu {
                if let Some(at) = queue.iter().position(|&queued| queued == port) {
                    return queue.get(at + 1).copied().unwrap_or(0);
                }
            }
        }
        0
    }

    /// Spec §4.3, sequentially.
    fn set_pending(&mut self, port: u32) {
        let state = self.ports.get_mut(&port).unwrap();
        let vcpu = state.vcpu as usize;
        if state.vcpu >= VCPUS_WITH_BLOCK {
            return; // XSA-107: dropped, P untouched.
        }
        state.pending = true;
        if state.masked || state.linked {
            return;
        }
        state.linked = true;
        let priority = usize::from(state.priority);
        let queue = &mut self.queues[vcpu][priority];
        if queue.is_empty() {
            self.heads[vcpu][priority] = port;
            let bit = 1 << priority;
            if self.ready[vcpu] & bit == 0 {
                self.ready[vcpu] |= bit;
                self.upcall[vcpu] = true;
            }
        }
        queue.push_back(port);
    }

    /// Spec §4.5 with at most `limit` events unlinked; ready bits not
    /// finished are given back.
    fn drain(&mut self, vcpu: usize, limit: usize) -> Vec<u32> {
        let mut handled = Vec::new();
        let mut ready = std::mem::take(&mut self.ready[vcpu]);
        let mut consumed = 0;
        while ready != 0 && consumed < limit {
            let queue = ready.trailing_zeros() as usize;
            match self.queues[vcpu][queue].pop_front() {
                None => ready &= !(1 << queue),
                Some(port) => {
                    consumed += 1;
                    if self.queues[vcpu][queue].is_empty() {
                        ready &= !(1 << queue);
                    }
                    let state = self.ports.get_mut(&port).unwrap();
                    state.linked = false;
                    if state.pending && !state.masked {
                        state.pending = false;
                        handled.push(port);
                    }
                }
            }
            ready |= std::mem::take(&mut self.ready[vcpu]);
        }
        self.ready[vcpu] |= ready;
        handled
    }

    fn lowest_free(&self) -> u32 {
        (1..)
            .find(|port| {
                self.ports
                    .get(port)
                    .is_none_or(|state| !state.is_bound && !state.linked)
            })
            .unwrap()
    }
}

/// The implementation's drain with the same limit and give-back.
fn drain_limited(world: &FifoWorld, vcpu: u32, consumer: &mut Consumer, limit: usize) -> Vec<u32> {
    let block = world.block(DOM1, vcpu);
    let word_of = |port: u32| world.word_of(DOM1, port);
    let mut handled = Vec::new();
    let mut ready = block.ready().swap(0, Ordering::SeqCst);
    let mut consumed = 0;
    while ready != 0 && consumed < limit {
        let queue = ready.trailing_zeros() as usize;
        match consumer.consume_one(&block, queue, word_of) {
            None => ready &= !(1 << queue),
            Some((port, old)) => {
                consumed += 1;
                if old & LINK == 0 {
                    ready &= !(1 << queue);
                }
                if old & P != 0 && old & M == 0 {
                    word_of(port).fetch_and(!P, Ordering::SeqCst);
                    handled.push(port);
                }
            }
        }
        ready |= block.ready().swap(0, Ordering::SeqCst);
    }
    block.ready().fetch_or(ready, Ordering::SeqCst);
    handled
}

fn run(priorities: &[u32], steps: &[Step]) -> Result<(), TestCaseError> {
    let world = FifoWorld::new(VCPUS);
    for vcpu in 0..VCPUS_WITH_BLOCK {
        world.init_control(DOM1, vcpu).unwrap();
    }
    world.expand(DOM1, 0).unwrap();
    let mut model = Model::new();
    let mut ports = Vec::new();
    for (index, &priority) in priorities.iter().enumerate() {
        let vcpu = index as u32 % VCPUS;
        let port = world.domains.bind_ipi(DOM1, VcpuId(vcpu)).unwrap();
        world.domains.set_priority(DOM1, port, priority).unwrap();
        model.ports.insert(
            port.0,
            ModelPort {
                is_bound: true,
                vcpu,
                priority: priority as u8,
                ..ModelPort::default()
            },
        );
        ports.push(port.0);
    }
    let mut consumers: Vec<Consumer> = (0..VCPUS).map(|_| Consumer::default()).collect();
    for step in steps {
        let port_at = |index: usize| ports.get(index % ports.len()).copied().unwrap();
        match *step {
            Step::Send(index) => {
                let port = port_at(index);
                let result = world.domains.send(DOM1, Port(port));
                let expected = if model.ports[&port].is_bound {
                    model.set_pending(port);
                    Ok(())
                } else {
                    Err(Errno::EINVAL)
                };
                prop_assert_eq!(result, expected, "send {}", port);
            }
            Step::SetPriority(index, priority) => {
                let port = port_at(index);
                let result = world.domains.set_priority(DOM1, Port(port), priority);
                let state = model.ports.get_mut(&port).unwrap();
                let expected = if !state.is_bound {
                    Err(Errno::EACCES)
                } else if priority > 15 {
                    Err(Errno::EINVAL)
                } else {
                    state.priority = priority as u8;
                    Ok(())
                };
                prop_assert_eq!(result, expected, "set_priority {} {}", port, priority);
            }
            Step::GuestMask(index) => {
                let port = port_at(index);
                world.word_of(DOM1, port).fetch_or(M, Ordering::SeqCst);
                model.ports.get_mut(&port).unwrap().masked = true;
            }
            Step::GuestUnmask(index) => {
                let port = port_at(index);
                let word = world.word_of(DOM1, port);
                word.fetch_and(!M, Ordering::SeqCst);
                model.ports.get_mut(&port).unwrap().masked = false;
                if word.load(Ordering::SeqCst) & P != 0 {
                    prop_assert_eq!(world.domains.unmask(DOM1, Port(port)), Ok(()));
                    if model.ports[&port].is_bound {
                        model.set_pending(port);
                    }
                }
            }
            Step::Close(index) => {
                let port = port_at(index);
                let result = world.domains.close(DOM1, Port(port));
                let state = model.ports.get_mut(&port).unwrap();
                let expected = if state.is_bound {
                    state.is_bound = false;
                    state.pending = false;
                    Ok(())
                } else {
                    Err(Errno::EINVAL)
                };
                prop_assert_eq!(result, expected, "close {}", port);
            }
            Step::Bind(vcpu) => {
                let expected = model.lowest_free();
                let port = world.domains.bind_ipi(DOM1, VcpuId(vcpu));
                prop_assert_eq!(port, Ok(Port(expected)), "bind_ipi");
                let state = model.ports.entry(expected).or_default();
                state.is_bound = true;
                state.vcpu = vcpu;
                state.priority = 7;
                if !ports.contains(&expected) {
                    ports.push(expected);
                }
            }
            Step::Drain { vcpu, limit } => {
                let handled = drain_limited(&world, vcpu, &mut consumers[vcpu as usize], limit);
                let expected = model.drain(vcpu as usize, limit);
                prop_assert_eq!(handled, expected, "drain vcpu {}", vcpu);
            }
            Step::ClearUpcall(vcpu) => {
                world.clear_upcall_pending(DOM1, vcpu as usize);
                model.upcall[vcpu as usize] = false;
            }
        }
        for &port in model.ports.keys() {
            prop_assert_eq!(
                world.word(DOM1, port),
                model.word(port),
                "word of port {} after {:?}",
                port,
                step
            );
        }
        for vcpu in 0..VCPUS {
            prop_assert_eq!(
                world.upcall_pending(DOM1, vcpu as usize) != 0,
                model.upcall[vcpu as usize]
            );
            if vcpu < VCPUS_WITH_BLOCK {
                prop_assert_eq!(world.ready(DOM1, vcpu), model.ready[vcpu as usize]);
                for queue in 0..16 {
                    prop_assert_eq!(
                        world.head(DOM1, vcpu, queue),
                        model.heads[vcpu as usize][queue],
                        "head {} {}",
                        vcpu,
                        queue
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        // PROPTEST_CASES, when set, replaces the default: naming `cases`
        // here would otherwise hide proptest's own variable.
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|cases| cases.parse().ok())
            .unwrap_or(2000),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn fifo_linking_matches_the_reference_model(
        priorities in proptest::collection::vec(0u32..16, INITIAL_PORTS),
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        run(&priorities, &steps)?;
    }
}
