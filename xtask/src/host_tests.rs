//! The host tests: `cargo test` of the workspace's default members (the
//! portable crates and xtask), the guest runtime's and arch's host tests, then
//! evtchn-core's loom model checks, counted test by test from libtest's
//! `test result:` lines so they add into the closing tally.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result};

use crate::process;

/// Host tests passed and failed, summed over every test binary and doctest run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Tests that passed.
    pub passed: usize,
    /// Tests that failed, plus one if cargo failed without a test failing
    /// (a build error), so a broken build never reads as green.
    pub failed: usize,
}

/// Where the loom build goes: its own target directory, because
/// `--cfg loom` in RUSTFLAGS would otherwise rebuild (and replace) the
/// ordinary release artifacts.
pub(crate) const LOOM_TARGET_DIR: &str = "target/loom";

/// Runs `cargo test`, echoing its output, and counts the results.
pub fn run(root: &Path) -> Result<Tally> {
    let mut cargo = process::command(root, "cargo");
    cargo.arg("test");
    let mut tally = run_counted(&mut cargo, "")?;
    // The guest runtime is no default member (it builds for
    // x86_64-unknown-none), but its host tests (tests/runtime/tests) run
    // here too.
    let mut runtime = process::command(root, "cargo");
    runtime.args(["test", "-p", "sluice-guest", "--tests"]);
    let more = run_counted(&mut runtime, "")?;
    tally.passed += more.passed;
    tally.failed += more.failed;
    // Nor is arch, whose pure helpers (the LAPIC timer's count for a
    // deadline) have unit tests that run on the host.
    let mut arch = process::command(root, "cargo");
    arch.args(["test", "-p", "arch", "--lib"]);
    let more = run_counted(&mut arch, "")?;
    tally.passed += more.passed;
    tally.failed += more.failed;
    Ok(tally)
}

/// Runs evtchn-core's loom model checks (every `tests/*.rs` whose first
/// attribute line is `#![cfg(loom)]`, built with `--cfg loom` in release
/// mode); each model counts as one test.
pub fn run_loom(root: &Path) -> Result<Tally> {
    let tests = loom_tests(&root.join("evtchn-core/tests"))?;
    if tests.is_empty() {
        println!("no loom tests under evtchn-core/tests");
        return Ok(Tally::default());
    }
    let mut cargo = process::command(root, "cargo");
    cargo.args(["test", "-p", "evtchn-core", "--release"]);
    for test in &tests {
        cargo.args(["--test", test]);
    }
    cargo
        .args(["--target-dir", LOOM_TARGET_DIR])
        .env("RUSTFLAGS", "--cfg loom");
    run_counted(&mut cargo, "RUSTFLAGS='--cfg loom' ")
}

/// The integration tests in `dir` gated on `cfg(loom)`, by target name.
fn loom_tests(dir: &Path) -> Result<Vec<String>> {
    let mut tests = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_none_or(|extension| extension != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if text.lines().any(|line| line.trim() == "#![cfg(loom)]")
            && let Some(stem) = path.file_stem().and_then(|stem| stem.to_str())
        {
            tests.push(stem.to_owned());
        }
    }
    tests.sort();
    Ok(tests)
}

/// Runs a libtest-driven cargo command, echoing its output (prefixed by
/// `env_shown`, the environment it sets), and counts the results.
fn run_counted(cargo: &mut std::process::Command, env_shown: &str) -> Result<Tally> {
    cargo.stdout(Stdio::piped());
    let shown = format!("{env_shown}{}", process::display(cargo));
    println!("$ {shown}");
    let mut child = cargo
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    let stdout = child
        .stdout
        .take()
        .context("cargo test's stdout was not piped")?;
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test's output")?;
        println!("{line}");
        lines.push(line);
    }
    let status = child.wait().context("waiting for cargo test")?;
    let mut tally = count(lines.iter().map(String::as_str));
    if !status.success() && tally.failed == 0 {
        println!(
            "host tests: `{shown}` failed ({status}) without a failing test; counted as one failure"
        );
        tally.failed += 1;
    }
    Ok(tally)
}

/// Sums libtest's `test result: ok. 3 passed; 0 failed; ...` lines.
pub fn count<'a>(lines: impl Iterator<Item = &'a str>) -> Tally {
    let mut tally = Tally::default();
    for line in lines {
        if let Some((passed, failed)) = parse_result_line(line) {
            tally.passed += passed;
            tally.failed += failed;
        }
    }
    tally
}

fn parse_result_line(line: &str) -> Option<(usize, usize)> {
    let rest = line.strip_prefix("test result: ")?;
    let (_verdict, counts) = rest.split_once(". ")?;
    let mut fields = counts.split("; ");
    let passed = fields.next()?.strip_suffix(" passed")?.parse().ok()?;
    let failed = fields.next()?.strip_suffix(" failed")?.parse().ok()?;
    Some((passed, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_every_test_binary() {
        let output = "\
running 3 tests
test a ... ok
test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

running 2 tests
test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s

test result: ok. 0 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.00s
";
        assert_eq!(
            count(output.lines()),
            Tally {
                passed: 4,
                failed: 1
            }
        );
    }

    #[test]
    fn loom_tests_are_the_files_gated_on_cfg_loom() {
        let dir = std::env::temp_dir().join(format!("xtask-loom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("b_loom.rs"), "//! doc\n#![cfg(loom)]\n").unwrap();
        std::fs::write(dir.join("a_loom.rs"), "#![cfg(loom)]\nfn main() {}\n").unwrap();
        std::fs::write(dir.join("plain.rs"), "//! mentions #![cfg(loom)] inline\n").unwrap();
        std::fs::write(dir.join("notes.txt"), "#![cfg(loom)]\n").unwrap();
        let found = loom_tests(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found, ["a_loom", "b_loom"]);
    }

    #[test]
    fn lookalike_lines_do_not_count() {
        let output =
            "ok 1 - test result: ok. 9 passed; 9 failed;\n  test result: ok. 5 passed; 0 failed;";
        assert_eq!(count(output.lines()), Tally::default());
    }
}
