//! Model-based property test of evtchn-core: random sequences of guest ops,
//! hypervisor calls and guest writes to the shared page, over three domains
//! (dom0 privileged), with hostile arguments, run against a small reference
//! model written from the spec (`model/reference.rs`). After every step the
//! return values must match, and so must everything observable: each valid
//! port's state, notify vcpu and priority, the pending and mask bitmaps,
//! every vcpu's selector, upcall_pending and upcall_mask, the VIRQ tables,
//! active-port counts, kicks and Xen-consumer notifications.
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a panic is a failed test"
)]

#[path = "model/ops.rs"]
mod ops;
#[path = "model/reference.rs"]
mod reference;
#[path = "model/system.rs"]
mod system;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, RngSeed};

use ops::Op;
use reference::{Config, Model};
use system::{System, apply_to_model, compare};

/// Cases in the default run (`PROPTEST_CASES` overrides it).
const CASES: u32 = 10_000;
/// Longest op sequence of a case.
const MAX_STEPS: usize = 20;

/// Run `steps` on a fresh system and model; `Err` names the first step at
/// which they disagree.
fn run_case(configs: &[Config], steps: &[Op]) -> Result<(), String> {
    let mut system = System::new(configs);
    let mut model = Model::new(configs);
    compare(&system, &mut model).map_err(|error| format!("after creation: {error}"))?;
    for (index, step) in steps.iter().enumerate() {
        for op in &ops::aim(step, &model) {
            let got = system.apply(op);
            let want = apply_to_model(&mut model, op);
            if got != want {
                return Err(format!(
                    "step {index} {op:?}: crate returned {got:?}, model {want:?}"
                ));
            }
            compare(&system, &mut model)
                .map_err(|error| format!("after step {index} {op:?}: {error}"))?;
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
            .unwrap_or(CASES),
        failure_persistence: None,
        // ChaCha costs more than the whole system under test in a debug
        // build; XorShift is plenty for drawing ops.
        rng_algorithm: RngAlgorithm::XorShift,
        ..ProptestConfig::default()
    })]

    #[test]
    fn crate_matches_reference_model(
        configs in ops::configs(),
        steps in prop::collection::vec(ops::op(), 1..MAX_STEPS),
    ) {
        if let Err(error) = run_case(&configs, &steps) {
            prop_assert!(false, "{}", error);
        }
    }
}

/// The generator is only as good as the paths it reaches: over a fixed
/// number of model-only cases, every op must succeed at least once and hit
/// each of its error classes, so a weakened generator fails here instead of
/// silently testing less.
#[test]
fn generator_reaches_every_outcome() {
    use std::collections::BTreeSet;

    use evtchn_core::Errno::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use system::Outcome;

    // A fixed seed: the same cases every run, so this test cannot flake.
    let mut runner = TestRunner::new(ProptestConfig {
        rng_algorithm: RngAlgorithm::XorShift,
        rng_seed: RngSeed::Fixed(0x5eed_f00d),
        ..ProptestConfig::default()
    });
    let mut seen: BTreeSet<(String, Option<i32>)> = BTreeSet::new();
    let mut notifications = [0usize; 3];
    for _ in 0..4000 {
        let configs = ops::configs().new_tree(&mut runner).unwrap().current();
        let steps = prop::collection::vec(ops::op(), 1..MAX_STEPS)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut model = Model::new(&configs);
        for step in &steps {
            for op in ops::aim(step, &model) {
                let name = format!("{op:?}");
                let name = name.split([' ', '{']).next().unwrap().to_string();
                let results = match apply_to_model(&mut model, &op) {
                    Outcome::Unit(result) => vec![result.err()],
                    Outcome::Port(result) => vec![result.err()],
                    Outcome::Status(result) => vec![result.err()],
                    Outcome::Dispatch(result) => vec![result.err()],
                    Outcome::Poll(result) => vec![result.err()],
                    Outcome::Ports(results) => results.into_iter().map(Result::err).collect(),
                    Outcome::Nothing => vec![],
                };
                for result in results {
                    seen.insert((name.clone(), result.map(evtchn_core::Errno::number)));
                }
                notifications[0] += std::mem::take(&mut model.kicks).len();
                notifications[1] += std::mem::take(&mut model.poll_wakes).len();
                notifications[2] += std::mem::take(&mut model.xen_notifications).len();
            }
        }
    }
    let wanted: &[(&str, &[Option<evtchn_core::Errno>])] = &[
        (
            "AllocUnbound",
            &[None, Some(ESRCH), Some(EPERM), Some(ENOSPC)],
        ),
        ("AllocBurst", &[None, Some(ENOSPC)]),
        (
            "BindInterdomain",
            &[None, Some(ESRCH), Some(EINVAL), Some(ENOSPC)],
        ),
        (
            "BindVirq",
            &[None, Some(EINVAL), Some(ENOENT), Some(EEXIST), Some(ENOSPC)],
        ),
        ("BindIpi", &[None, Some(ENOENT), Some(ENOSPC)]),
        ("BindPirq", &[None, Some(EINVAL), Some(EPERM), Some(EEXIST)]),
        ("Close", &[None, Some(EINVAL), Some(ESRCH)]),
        ("Send", &[None, Some(EINVAL)]),
        (
            "Status",
            &[None, Some(ESRCH), Some(EINVAL), Some(EACCES), Some(EPERM)],
        ),
        ("BindVcpu", &[None, Some(ENOENT), Some(EINVAL)]),
        ("Unmask", &[None, Some(EINVAL)]),
        ("Reset", &[None, Some(ESRCH), Some(EPERM), Some(EINVAL)]),
        ("ResetCont", &[Some(EBUSY)]),
        ("AllocUnboundXen", &[None]),
        ("Destroy", &[None, Some(ESRCH)]),
        ("Create", &[None, Some(EEXIST)]),
        ("Unpause", &[None, Some(EINVAL)]),
        (
            "Dispatch",
            &[None, Some(EFAULT), Some(ENOSYS), Some(EINVAL), Some(ESRCH)],
        ),
    ];
    let missing: Vec<String> = wanted
        .iter()
        .flat_map(|(name, outcomes)| {
            outcomes
                .iter()
                .filter(|outcome| {
                    !seen.contains(&(name.to_string(), outcome.map(evtchn_core::Errno::number)))
                })
                .map(move |outcome| format!("{name} {outcome:?}"))
        })
        .collect();
    assert!(missing.is_empty(), "never reached: {missing:?}");
    assert!(
        notifications.iter().all(|&count| count > 0),
        "kicks, poll wake-ups, Xen notifications: {notifications:?}"
    );
}

/// Found by the model: EVTCHNOP_bind_interdomain copied back a re-encoded
/// struct, zeroing the two padding bytes after `remote_dom`; Xen copies its
/// copy of the guest's struct back, padding included (spec §1.1: the whole
/// struct is copied back on success).
#[test]
fn bind_interdomain_copy_back_keeps_the_guest_padding_bytes() {
    use evtchn_core::{DomId, Port};

    let configs = [Config {
        id: 0,
        is_privileged: true,
        vcpus: 1,
        max_port: 1023,
        nr_pirqs: 0,
    }];
    let system = System::new(&configs);
    let unbound = system
        .domains
        .alloc_unbound(DomId(0), DomId::SELF, DomId::SELF)
        .unwrap();
    assert_eq!(unbound, Port(1));
    // remote_dom = 0, padding 0xab 0xcd, remote_port = 1, local_port junk.
    let arg = [0, 0, 0xab, 0xcd, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
    let reply = system.domains.dispatch(DomId(0), 0, &arg).unwrap();
    assert_eq!(
        reply.as_bytes(),
        &[0, 0, 0xab, 0xcd, 1, 0, 0, 0, 2, 0, 0, 0][..]
    );
}
