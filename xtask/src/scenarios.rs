//! Running scenarios under QEMU: each under its own wall-clock limit, a few
//! at a time, with a progress line per scenario as it ends and, for a
//! failure, why and the tail of its serial log.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use crate::manifest::Manifest;
use crate::process;
use crate::qemu::{self, Accel, Boot, GdbStub};
use crate::repo;
use crate::verdict;

/// Lines of a failing scenario's serial log shown on the terminal.
const TAIL_LINES: usize = 40;
/// `not ok` lines of a failing scenario's serial log shown on the terminal.
const NOT_OK_LINES: usize = 20;
/// Lines of QEMU's own stderr shown for a failing scenario.
const STDERR_LINES: usize = 10;

/// A scenario whose manifest parsed and checked, ready to boot.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The directory name under `tests/scenarios/`.
    pub name: String,
    /// The checked manifest.
    pub manifest: Manifest,
}

/// How a scenario ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The exit code and every expected line were seen.
    Pass,
    /// The hypervisor or a guest did not do what the manifest expects.
    Fail(Vec<String>),
    /// The scenario itself is broken or could not be started (a bad
    /// manifest, a missing image, QEMU not starting): a broken test rather
    /// than a broken hypervisor. Counted as failed all the same.
    Error(Vec<String>),
}

/// One scenario's result.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    /// The scenario's name.
    pub name: String,
    /// Its verdict.
    pub outcome: Outcome,
    /// Wall-clock seconds QEMU ran (zero if it never started).
    pub seconds: f64,
    /// Its serial log, relative to the root, if QEMU ran.
    pub serial_log: Option<PathBuf>,
    /// Its QEMU command, to reproduce it by hand.
    pub command: Option<String>,
}

impl ScenarioResult {
    /// A scenario that never booted.
    pub fn error(name: &str, reasons: Vec<String>) -> Self {
        ScenarioResult {
            name: name.to_owned(),
            outcome: Outcome::Error(reasons),
            seconds: 0.0,
            serial_log: None,
            command: None,
        }
    }

    /// Whether it counts as passed.
    pub fn is_pass(&self) -> bool {
        self.outcome == Outcome::Pass
    }
}

/// What every scenario of one run shares.
#[derive(Debug)]
pub struct Runner<'a> {
    /// The repository root.
    pub root: &'a Path,
    /// The QEMU binary.
    pub qemu: &'a Path,
    /// The self-test hypervisor image.
    pub image: &'a Path,
    /// Guest images by guest name.
    pub guest_images: &'a BTreeMap<String, PathBuf>,
    /// The accelerator chosen for this run.
    pub accel: Accel,
}

impl Runner<'_> {
    /// Runs every scenario, `jobs` at a time, printing each result as it
    /// ends; returns the results in the given order.
    pub fn run_all(&self, scenarios: &[Scenario], jobs: usize) -> Vec<ScenarioResult> {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<ScenarioResult>>> = Mutex::new(vec![None; scenarios.len()]);
        std::thread::scope(|scope| {
            for _ in 0..jobs.clamp(1, scenarios.len().max(1)) {
                scope.spawn(|| {
                    loop {
                        // Relaxed: the counter only hands out distinct indices.
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(scenario) = scenarios.get(index) else {
                            break;
                        };
                        let result = self.run_one(scenario);
                        print_result(&result);
                        let mut slots = results
                            .lock()
                            .unwrap_or_else(|poisoned| poisoned.into_inner());
                        if let Some(slot) = slots.get_mut(index) {
                            *slot = Some(result);
                        }
                    }
                });
            }
        });
        let slots = results
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slots
            .into_iter()
            .zip(scenarios)
            .map(|(slot, scenario)| {
                slot.unwrap_or_else(|| {
                    ScenarioResult::error(&scenario.name, vec!["the runner lost its result".into()])
                })
            })
            .collect()
    }

    fn run_one(&self, scenario: &Scenario) -> ScenarioResult {
        let manifest = &scenario.manifest;
        let mut modules = Vec::with_capacity(manifest.modules.len());
        for module in &manifest.modules {
            match self.guest_images.get(&module.guest) {
                Some(image) => modules.push((image.clone(), module.args.clone())),
                None => {
                    return ScenarioResult::error(
                        &scenario.name,
                        vec![format!("guest `{}` was not built", module.guest)],
                    );
                }
            }
        }
        let boot = Boot {
            kernel: self.image.to_path_buf(),
            hypervisor_args: manifest.hypervisor_args.clone(),
            modules,
            smp: manifest.smp,
            memory_mib: qemu::DEFAULT_MEMORY_MIB,
            accel: self.accel,
            gdb_stub: GdbStub::Off,
        };
        let command = match qemu::command(self.root, self.qemu, &boot) {
            Ok(command) => command,
            Err(error) => return ScenarioResult::error(&scenario.name, vec![format!("{error:#}")]),
        };
        let shown = process::display(&command);
        let logs = Path::new(repo::SCENARIO_LOGS_DIR);
        let serial_log = logs.join(format!("{}.log", scenario.name));
        let stderr_log = logs.join(format!("{}.stderr", scenario.name));

        let started = Instant::now();
        let captured = match &manifest.serial_input {
            Some(input) => qemu::run_captured_with_input(
                command,
                &self.root.join(&serial_log),
                &self.root.join(&stderr_log),
                manifest.timeout,
                input,
            ),
            None => qemu::run_captured(
                command,
                &self.root.join(&serial_log),
                &self.root.join(&stderr_log),
                manifest.timeout,
            ),
        };
        let end = match captured {
            Ok(end) => end,
            Err(error) => {
                let mut result = ScenarioResult::error(&scenario.name, vec![format!("{error:#}")]);
                result.command = Some(shown);
                return result;
            }
        };
        let seconds = started.elapsed().as_secs_f64();

        let serial = read_lossy(&self.root.join(&serial_log));
        let mut reasons =
            verdict::judge(manifest.expect_exit, end, &serial, &manifest.expect_output);
        let stderr = read_lossy(&self.root.join(&stderr_log));
        if !reasons.is_empty() && !stderr.trim().is_empty() {
            reasons.push(format!("QEMU said ({}):", stderr_log.display()));
            reasons.extend(
                verdict::tail(&stderr, STDERR_LINES)
                    .iter()
                    .map(|line| format!("  {line}")),
            );
        }
        ScenarioResult {
            name: scenario.name.clone(),
            outcome: if reasons.is_empty() {
                Outcome::Pass
            } else {
                Outcome::Fail(reasons)
            },
            seconds,
            serial_log: Some(serial_log),
            command: Some(shown),
        }
    }
}

fn read_lossy(path: &Path) -> String {
    fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// Prints a scenario's progress line and, if it did not pass, why, the tail
/// of its serial log and how to reproduce it. One block per scenario, never
/// interleaved with another's.
pub fn print_result(result: &ScenarioResult) {
    let text = render_result(result, read_lossy);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    // A closed stdout leaves nothing to report to.
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// The text [`print_result`] prints; `read_log` reads a serial log.
pub fn render_result(result: &ScenarioResult, read_log: impl Fn(&Path) -> String) -> String {
    let (label, reasons) = match &result.outcome {
        Outcome::Pass => ("pass", &[][..]),
        Outcome::Fail(reasons) => ("FAIL", reasons.as_slice()),
        Outcome::Error(reasons) => ("ERROR", reasons.as_slice()),
    };
    let mut text = format!("{label:<5} {} ({:.1} s)\n", result.name, result.seconds);
    if result.is_pass() {
        return text;
    }
    for reason in reasons {
        for line in reason.lines() {
            text.push_str(&format!("      {line}\n"));
        }
    }
    if let Some(log) = &result.serial_log {
        let serial = read_log(log);
        // TAP failures far above the tail would otherwise stay hidden.
        let not_ok: Vec<&str> = verdict::serial_lines(&serial)
            .filter(|line| line.contains("not ok "))
            .collect();
        if !not_ok.is_empty() {
            let shown = not_ok.len().min(NOT_OK_LINES);
            text.push_str(&format!(
                "      `not ok` lines ({shown} of {}):\n",
                not_ok.len()
            ));
            for line in not_ok.iter().take(shown) {
                text.push_str(&format!("      | {line}\n"));
            }
        }
        let tail = verdict::tail(&serial, TAIL_LINES);
        if tail.is_empty() {
            text.push_str(&format!("      serial log {} is empty\n", log.display()));
        } else {
            let count = match tail.len() {
                1 => "line".to_owned(),
                lines => format!("{lines} lines"),
            };
            text.push_str(&format!(
                "      serial log {}, last {count}:\n",
                log.display()
            ));
            for line in tail {
                text.push_str(&format!("      | {line}\n"));
            }
        }
    }
    if let Some(command) = &result.command {
        text.push_str(&format!(
            "      reproduce (from the repository root): {command}\n"
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_is_one_line() {
        let result = ScenarioResult {
            name: "cpus".into(),
            outcome: Outcome::Pass,
            seconds: 12.34,
            serial_log: Some("target/scenarios/cpus.log".into()),
            command: Some("qemu".into()),
        };
        assert_eq!(
            render_result(&result, |_| String::new()),
            "pass  cpus (12.3 s)\n"
        );
    }

    #[test]
    fn failure_shows_reasons_log_tail_and_command() {
        let log: String = (1..=50).map(|n| format!("line {n}\r\n")).collect();
        let result = ScenarioResult {
            name: "evtchn".into(),
            outcome: Outcome::Fail(vec!["expected exit `pass`".into()]),
            seconds: 3.0,
            serial_log: Some("target/scenarios/evtchn.log".into()),
            command: Some("qemu-system-x86_64 -kernel x".into()),
        };
        let text = render_result(&result, |_| log.clone());
        assert!(
            text.starts_with("FAIL  evtchn (3.0 s)\n      expected exit `pass`\n"),
            "{text}"
        );
        assert!(text.contains("last 40 lines"), "{text}");
        assert!(!text.contains("| line 10\n"), "{text}");
        assert!(text.contains("| line 11\n"), "{text}");
        assert!(text.contains("| line 50\n"), "{text}");
        assert!(
            text.ends_with("root): qemu-system-x86_64 -kernel x\n"),
            "{text}"
        );
    }

    #[test]
    fn failure_lists_not_ok_lines_above_the_tail() {
        let mut log = String::from("(d1) ok 1 - a\n(d1) not ok 2 - b went wrong\n");
        log.extend((1..=60).map(|n| format!("(d1) ok {} - filler\n", n + 2)));
        let result = ScenarioResult {
            name: "tap".into(),
            outcome: Outcome::Fail(vec!["expected exit `pass`".into()]),
            seconds: 1.0,
            serial_log: Some("target/scenarios/tap.log".into()),
            command: None,
        };
        let text = render_result(&result, |_| log.clone());
        assert!(
            text.contains("`not ok` lines (1 of 1):\n      | (d1) not ok 2 - b went wrong\n"),
            "{text}"
        );
    }

    #[test]
    fn one_line_log_says_line() {
        let result = ScenarioResult {
            name: "short".into(),
            outcome: Outcome::Fail(vec!["x".into()]),
            seconds: 1.0,
            serial_log: Some("target/scenarios/short.log".into()),
            command: None,
        };
        let text = render_result(&result, |_| "only\n".to_owned());
        assert!(
            text.contains("short.log, last line:\n      | only\n"),
            "{text}"
        );
    }

    #[test]
    fn broken_manifest_is_an_error_without_a_log() {
        let result = ScenarioResult::error(
            "bad",
            vec!["tests/scenarios/bad/scenario.toml: field `smp`".into()],
        );
        assert!(!result.is_pass());
        let text = render_result(&result, |_| unreachable!("no log to read"));
        assert_eq!(
            text,
            "ERROR bad (0.0 s)\n      tests/scenarios/bad/scenario.toml: field `smp`\n"
        );
    }
}
