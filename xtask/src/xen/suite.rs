//! `cargo xtask test --xen`: every single-domain scenario under Sluice, then
//! its guest as dom0 on real Xen 4.17, then the two sets of TAP verdicts
//! side by side. The closing `N passed, M failed` line counts three items
//! per scenario: the Sluice run (judged as `cargo xtask test` judges it),
//! the Xen run (judged on its own) and the comparison. Host tests do not
//! run; plain `cargo xtask test` runs them.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};

use crate::build;
use crate::manifest::XenOracle;
use crate::qemu;
use crate::repo::{self, Profile};
use crate::scenarios::{Outcome, Scenario, ScenarioResult, print_result};
use crate::test;
use crate::verdict::closing_line;

use super::compare::{self, Comparison, Difference};
use super::oracle::{self, XenBoot};
use super::setup::{self, ORACLE_DIR};
use super::tap::{self, TapLog};

/// Differences printed on the terminal per scenario; the rest are in the
/// scenario's `.compare` file.
const SHOWN_DIFFERENCES: usize = 60;

/// Runs the oracle; `Ok(true)` if nothing failed.
pub fn run(root: &Path, options: &test::Options) -> Result<bool> {
    let started = Instant::now();
    println!("== single-domain scenarios: Sluice, then real Xen 4.17 as the oracle");
    let mut broken = Vec::new();
    let scenarios = match test::load_scenarios(root, options.filter.as_deref(), &mut broken) {
        Ok(scenarios) => scenarios,
        Err(error) => {
            broken.push(ScenarioResult::error(
                repo::SCENARIOS_DIR,
                vec![format!("scenario discovery failed: {error:#}")],
            ));
            Vec::new()
        }
    };
    for result in &broken {
        print_result(result);
    }
    let selected = select(scenarios);

    if selected.is_empty() {
        return Ok(summarize(&Phases::default(), &broken, started));
    }
    // Before Sluice runs, so that a missing package shows up at the top.
    let xen_elf = setup::prepare(root);
    if let Err(error) = &xen_elf {
        println!("Xen image not ready: {error:#}");
    }

    println!("== on Sluice");
    let sluice_started = Instant::now();
    let sluice = match test::prepare_and_run(root, options, &selected) {
        Ok(results) => results,
        Err(error) => {
            println!("scenarios not run on Sluice: {error:#}");
            let reason = format!("not run: {error:#}");
            selected
                .iter()
                .map(|scenario| ScenarioResult::error(&scenario.name, vec![reason.clone()]))
                .collect()
        }
    };
    let sluice_seconds = sluice_started.elapsed().as_secs_f64();

    println!("== on Xen 4.17 (TCG, dom0; serial logs in {ORACLE_DIR}/)");
    let xen_started = Instant::now();
    let xen = match xen_elf {
        Ok(xen_elf) => run_on_xen(root, &xen_elf, &selected, options.jobs),
        Err(error) => {
            let reason = format!("Xen image not ready: {error:#}");
            selected
                .iter()
                .map(|scenario| XenRun::not_run(&scenario.name, &reason))
                .collect()
        }
    };
    let xen_seconds = xen_started.elapsed().as_secs_f64();

    println!("== Sluice's verdicts against Xen's");
    let mut compared = Vec::with_capacity(selected.len());
    for ((scenario, sluice), xen) in selected.iter().zip(&sluice).zip(&xen) {
        let result = compare_one(root, scenario, sluice, xen);
        print_result(&result);
        compared.push(result);
    }

    let phases = Phases {
        sluice,
        sluice_seconds,
        xen: xen.into_iter().map(|run| run.result).collect(),
        xen_seconds,
        compared,
    };
    Ok(summarize(&phases, &broken, started))
}

/// The results of each step, for the summary.
#[derive(Default)]
struct Phases {
    /// The scenarios on Sluice.
    sluice: Vec<ScenarioResult>,
    /// How long the Sluice step took, builds included.
    sluice_seconds: f64,
    /// Their guests on Xen.
    xen: Vec<ScenarioResult>,
    /// How long the Xen step took.
    xen_seconds: f64,
    /// Sluice's verdicts against Xen's.
    compared: Vec<ScenarioResult>,
}

/// Prints the summary, the names of what failed and the closing line;
/// returns whether nothing failed. `broken` holds the manifests that did
/// not load.
fn summarize(phases: &Phases, broken: &[ScenarioResult], started: Instant) -> bool {
    let passes = |results: &[ScenarioResult]| results.iter().filter(|r| r.is_pass()).count();
    if !phases.compared.is_empty() {
        println!(
            "== Sluice: {} of {} ok ({:.0} s); Xen: {} of {} ok ({:.0} s); \
             same verdicts: {} of {}; {:.0} s in all",
            passes(&phases.sluice),
            phases.sluice.len(),
            phases.sluice_seconds,
            passes(&phases.xen),
            phases.xen.len(),
            phases.xen_seconds,
            passes(&phases.compared),
            phases.compared.len(),
            started.elapsed().as_secs_f64()
        );
    }
    let all: Vec<&ScenarioResult> = broken
        .iter()
        .chain(&phases.sluice)
        .chain(&phases.xen)
        .chain(&phases.compared)
        .collect();
    let failed: Vec<&str> = all
        .iter()
        .filter(|result| !result.is_pass())
        .map(|result| result.name.as_str())
        .collect();
    if !failed.is_empty() {
        println!("failing: {}", failed.join(", "));
    }
    println!("{}", closing_line(all.len() - failed.len(), failed.len()));
    failed.is_empty()
}

/// The scenarios that boot on Xen: exactly one module and no `xen_skip`.
/// Says which are left out and why.
fn select(scenarios: Vec<Scenario>) -> Vec<Scenario> {
    let mut selected = Vec::new();
    let mut no_guest = Vec::new();
    let mut several = Vec::new();
    for scenario in scenarios {
        match (scenario.manifest.modules.len(), &scenario.manifest.xen) {
            (1, XenOracle::Run) => selected.push(scenario),
            (1, XenOracle::Skip(reason)) => {
                println!("skip  {} on Xen: {reason} (xen_skip)", scenario.name);
            }
            (0, _) => no_guest.push(scenario.name),
            (_, _) => several.push(scenario.name),
        }
    }
    if !no_guest.is_empty() {
        println!(
            "not for Xen, no guest (hypervisor self-tests): {}",
            no_guest.join(", ")
        );
    }
    if !several.is_empty() {
        println!(
            "not for Xen, more than one domain (Xen boots one guest, as dom0): {}",
            several.join(", ")
        );
    }
    let names: Vec<&str> = selected.iter().map(|s| s.name.as_str()).collect();
    if names.is_empty() {
        println!("no single-domain scenario selected");
    } else {
        println!("single-domain scenarios: {}", names.join(", "));
    }
    selected
}

/// One scenario's run on Xen, with its TAP lines if it booted.
struct XenRun {
    result: ScenarioResult,
    tap: Option<TapLog>,
}

impl XenRun {
    fn not_run(scenario: &str, reason: &str) -> XenRun {
        XenRun {
            result: ScenarioResult::error(&xen_name(scenario), vec![reason.to_owned()]),
            tap: None,
        }
    }
}

fn xen_name(scenario: &str) -> String {
    format!("{scenario} on Xen")
}

/// Boots every scenario's guest on Xen, `jobs` at a time, printing each
/// result as it ends; results in the given order.
fn run_on_xen(root: &Path, xen_elf: &Path, scenarios: &[Scenario], jobs: usize) -> Vec<XenRun> {
    if scenarios.is_empty() {
        return Vec::new();
    }
    let prepared = (|| -> Result<_> {
        let qemu_binary = qemu::find_or_install(root)?;
        let wanted = scenarios
            .iter()
            .flat_map(|scenario| scenario.manifest.modules.iter())
            .map(|module| module.guest.clone())
            .collect();
        let images =
            build::guests(root, Profile::Release, &wanted).context("building the guests")?;
        Ok((qemu_binary, images))
    })();
    let (qemu_binary, images) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            let reason = format!("not run: {error:#}");
            return scenarios
                .iter()
                .map(|scenario| XenRun::not_run(&scenario.name, &reason))
                .collect();
        }
    };
    println!(
        "booting {} guest{} on Xen, {} at a time",
        scenarios.len(),
        if scenarios.len() == 1 { "" } else { "s" },
        jobs.clamp(1, scenarios.len())
    );
    parallel_map(scenarios, jobs, |scenario| {
        let run = run_one_on_xen(root, &qemu_binary, xen_elf, &images, scenario);
        print_result(&run.result);
        run
    })
}

fn run_one_on_xen(
    root: &Path,
    qemu_binary: &Path,
    xen_elf: &Path,
    images: &[(String, PathBuf)],
    scenario: &Scenario,
) -> XenRun {
    let name = xen_name(&scenario.name);
    let manifest = &scenario.manifest;
    let Some(module) = manifest.modules.first() else {
        return XenRun::not_run(&scenario.name, "the scenario has no module");
    };
    let Some((_, image)) = images.iter().find(|(guest, _)| *guest == module.guest) else {
        return XenRun::not_run(
            &scenario.name,
            &format!("guest `{}` was not built", module.guest),
        );
    };
    let boot = XenBoot::new(image.clone(), module, manifest.smp);
    let command = boot.command(root, qemu_binary, xen_elf);
    let shown = crate::process::display(&command);
    let serial_log = Path::new(ORACLE_DIR).join(format!("{}.log", scenario.name));
    let stderr_log = Path::new(ORACLE_DIR).join(format!("{}.stderr", scenario.name));
    let limit = manifest.timeout + oracle::XEN_ALLOWANCE;
    let started = Instant::now();
    let end = match qemu::run_captured(
        command,
        &root.join(&serial_log),
        &root.join(&stderr_log),
        limit,
    ) {
        Ok(end) => end,
        Err(error) => {
            let mut result = ScenarioResult::error(&name, vec![format!("{error:#}")]);
            result.command = Some(shown);
            return XenRun { result, tap: None };
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let serial = read_lossy(&root.join(&serial_log));
    let tap = tap::parse(&serial);
    let mut reasons = oracle::judge(manifest.expect_exit, end, &serial, &tap);
    let stderr = read_lossy(&root.join(&stderr_log));
    if !reasons.is_empty() && !stderr.trim().is_empty() {
        reasons.push(format!("QEMU said ({}):", stderr_log.display()));
        reasons.extend(stderr.lines().take(10).map(|line| format!("  {line}")));
    }
    XenRun {
        result: ScenarioResult {
            name,
            outcome: if reasons.is_empty() {
                Outcome::Pass
            } else {
                Outcome::Fail(reasons)
            },
            seconds,
            serial_log: Some(serial_log),
            command: Some(shown),
        },
        tap: Some(tap),
    }
}

/// Compares one scenario's Sluice log with its Xen log, writes the full
/// comparison to `target/xen-oracle/<name>.compare` and returns the item.
fn compare_one(
    root: &Path,
    scenario: &Scenario,
    sluice: &ScenarioResult,
    xen: &XenRun,
) -> ScenarioResult {
    let name = format!("{}: Sluice vs Xen", scenario.name);
    let Some(xen_tap) = &xen.tap else {
        return ScenarioResult::error(
            &name,
            vec!["Xen did not run this scenario (see its Xen line above)".to_owned()],
        );
    };
    let (sluice_tap, source) = match sluice_log(root, scenario, sluice) {
        Ok(found) => found,
        Err(reason) => return ScenarioResult::error(&name, vec![reason]),
    };
    let comparison = compare::compare(&sluice_tap, xen_tap);
    let mut lines = explain(scenario, sluice, &source, &sluice_tap, xen_tap, &comparison);
    if sluice.serial_log.is_none() {
        lines.insert(0, format!("Sluice log: {source}"));
    }
    let file = Path::new(ORACLE_DIR).join(format!("{}.compare", scenario.name));
    let mut text = format!(
        "{name}\nSluice: {source}\nXen:    {}\n",
        xen.result
            .serial_log
            .as_deref()
            .map_or_else(|| "no log".to_owned(), |log| log.display().to_string())
    );
    if comparison.is_same() {
        text.push_str(&format!(
            "same verdict and description on all {} tests, same plan\n",
            comparison.compared
        ));
    }
    for line in &lines {
        text.push_str(line);
        text.push('\n');
    }
    if !comparison.observations.is_empty() {
        text.push_str(&format!(
            "{} line(s) differ only in the observation at their end (not failures):\n",
            comparison.observations.len()
        ));
        for (ours, theirs) in &comparison.observations {
            text.push_str(&format!(
                "  Sluice: {}\n  Xen:    {}\n",
                ours.line, theirs.line
            ));
        }
    }
    // The comparison is also on the terminal; a file that cannot be written
    // loses only the copy.
    let _ = fs::write(root.join(&file), text);
    let mut shown = lines;
    if comparison.differences.len() > SHOWN_DIFFERENCES {
        shown.push(format!("... every difference is in {}", file.display()));
    }
    ScenarioResult {
        name,
        outcome: if comparison.is_same() {
            Outcome::Pass
        } else {
            Outcome::Fail(shown)
        },
        seconds: 0.0,
        serial_log: None,
        command: None,
    }
}

/// The Sluice log to compare: this run's, or a saved one when Sluice did
/// not boot the scenario in this run. Also says which it is.
fn sluice_log(
    root: &Path,
    scenario: &Scenario,
    sluice: &ScenarioResult,
) -> Result<(TapLog, String), String> {
    if let Some(log) = &sluice.serial_log {
        let text = read_lossy(&root.join(log));
        return Ok((tap::parse(&text), format!("{}, this run", log.display())));
    }
    let saved = Path::new(repo::SCENARIO_LOGS_DIR).join(format!("{}.log", scenario.name));
    let Ok(text) = fs::read(root.join(&saved)) else {
        return Err(format!(
            "Sluice did not run this scenario in this run and there is no saved log at {}",
            saved.display()
        ));
    };
    let age = fs::metadata(root.join(&saved))
        .and_then(|meta| meta.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .map_or_else(String::new, |age| {
            format!(", {} min old", age.as_secs() / 60)
        });
    Ok((
        tap::parse(&String::from_utf8_lossy(&text)),
        format!(
            "{}, saved by an earlier run{age}: Sluice did not run this scenario in this run",
            saved.display()
        ),
    ))
}

/// The comparison's lines for a reader: what did not finish, then every
/// difference with both lines.
fn explain(
    scenario: &Scenario,
    sluice: &ScenarioResult,
    source: &str,
    sluice_tap: &TapLog,
    xen_tap: &TapLog,
    comparison: &Comparison,
) -> Vec<String> {
    let mut lines = Vec::new();
    if !comparison.sluice_finished {
        lines.push(format!(
            "Sluice did not finish this scenario: {} ({source})",
            compare::progress(sluice_tap)
        ));
        if let Outcome::Fail(reasons) | Outcome::Error(reasons) = &sluice.outcome
            && let Some(first) = reasons.first()
        {
            lines.push(format!("  Sluice's run: {first}"));
        }
    }
    if !comparison.xen_finished {
        lines.push(format!(
            "Xen did not finish this scenario: {}",
            compare::progress(xen_tap)
        ));
    }
    if !comparison.differences.is_empty() {
        lines.push(format!(
            "{} difference{} (tests printed by both sides: {}):",
            comparison.differences.len(),
            if comparison.differences.len() == 1 {
                ""
            } else {
                "s"
            },
            comparison.compared
        ));
        let is_privileged = scenario
            .manifest
            .modules
            .first()
            .is_some_and(|module| module.args.split_whitespace().any(|word| word == "priv"));
        lines.extend(
            comparison
                .differences
                .iter()
                .take(SHOWN_DIFFERENCES)
                .flat_map(Difference::render),
        );
        if !is_privileged {
            lines.push(
                "note: Sluice boots this guest unprivileged (no `priv`), Xen as its privileged \
                 dom0; a check that depends on privilege may differ for that reason"
                    .to_owned(),
            );
        }
    }
    lines
}

/// `f` over `items`, `jobs` at a time; results in the items' order.
fn parallel_map<T: Sync, R: Send>(items: &[T], jobs: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, items.len().max(1)) {
            scope.spawn(|| {
                loop {
                    // Relaxed: the counter only hands out distinct indices.
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(index) else {
                        break;
                    };
                    let result = f(item);
                    let mut slots = slots
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                    if let Some(slot) = slots.get_mut(index) {
                        *slot = Some(result);
                    }
                }
            });
        }
    });
    slots
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(args: &str) -> Scenario {
        let text =
            format!("description = \"x\"\n[[module]]\nguest = \"hello\"\nargs = \"{args}\"\n");
        let guests = ["hello".to_owned()].into_iter().collect();
        Scenario {
            name: "hello".into(),
            manifest: crate::manifest::parse(&text, &guests).unwrap(),
        }
    }

    #[test]
    fn sluice_that_built_no_domain_did_not_finish() {
        let sluice = ScenarioResult {
            name: "hello".into(),
            outcome: Outcome::Fail(vec!["expected exit `pass`, got: QEMU exit 35".into()]),
            seconds: 0.3,
            serial_log: Some("target/scenarios/hello.log".into()),
            command: None,
        };
        let sluice_tap = tap::parse("[    0.1] cpu0 ERROR no domains run yet\n");
        let xen_tap = tap::parse("ok 1 - a\nok 2 - b (3 ticks)\n1..2\n# verdict: PASS\n");
        let comparison = compare::compare(&sluice_tap, &xen_tap);
        let lines = explain(
            &scenario("dom=1 vcpus=1"),
            &sluice,
            "target/scenarios/hello.log, this run",
            &sluice_tap,
            &xen_tap,
            &comparison,
        );
        assert_eq!(
            lines,
            [
                "Sluice did not finish this scenario: its log has no TAP line \
                 (target/scenarios/hello.log, this run)",
                "  Sluice's run: expected exit `pass`, got: QEMU exit 35",
            ]
        );
    }

    #[test]
    fn differences_of_an_unprivileged_guest_carry_the_dom0_note() {
        let sluice = ScenarioResult::error("hello", Vec::new());
        let sluice_tap = tap::parse("not ok 1 - a\n1..1\n");
        let xen_tap = tap::parse("ok 1 - a\n1..1\n");
        let comparison = compare::compare(&sluice_tap, &xen_tap);
        let unprivileged = explain(
            &scenario("dom=1"),
            &sluice,
            "",
            &sluice_tap,
            &xen_tap,
            &comparison,
        );
        assert_eq!(
            unprivileged[0],
            "1 difference (tests printed by both sides: 1):"
        );
        assert_eq!(unprivileged[2], "  Sluice: not ok 1 - a");
        assert!(
            unprivileged
                .last()
                .unwrap()
                .starts_with("note: Sluice boots this guest unprivileged")
        );
        let privileged = explain(
            &scenario("dom=0 priv"),
            &sluice,
            "",
            &sluice_tap,
            &xen_tap,
            &comparison,
        );
        assert!(
            !privileged.last().unwrap().starts_with("note:"),
            "{privileged:?}"
        );
    }

    #[test]
    fn every_phase_and_broken_manifests_count_toward_the_closing_line() {
        let pass = |name: &str| ScenarioResult {
            name: name.into(),
            outcome: Outcome::Pass,
            seconds: 1.0,
            serial_log: None,
            command: None,
        };
        let phases = Phases {
            sluice: vec![ScenarioResult::error("hello", vec!["no domain".into()])],
            xen: vec![pass("hello on Xen")],
            compared: vec![pass("hello: Sluice vs Xen")],
            ..Phases::default()
        };
        assert!(!summarize(&phases, &[], Instant::now()));
        let phases = Phases {
            sluice: vec![pass("hello")],
            ..phases
        };
        assert!(summarize(&phases, &[], Instant::now()));
        let broken = [ScenarioResult::error("bad", vec!["field `smp`".into()])];
        assert!(!summarize(&phases, &broken, Instant::now()));
        assert!(summarize(&Phases::default(), &[], Instant::now()));
    }

    #[test]
    fn parallel_map_keeps_order() {
        let items: Vec<u32> = (0..20).collect();
        assert_eq!(
            parallel_map(&items, 3, |n| n * 2),
            (0..20).map(|n| n * 2).collect::<Vec<_>>()
        );
        assert!(parallel_map(&[] as &[u32], 2, |n| *n).is_empty());
    }
}
