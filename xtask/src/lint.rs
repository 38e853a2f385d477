//! `cargo xtask lint`: formatting and clippy, on the host crates and on the
//! kernel-side crates for `x86_64-unknown-none`. Every check runs; any
//! failure fails the whole.

use std::fs;
use std::path::Path;

use anyhow::{Result, bail};

use crate::process;
use crate::repo;
use crate::toolchain::KERNEL_TARGET;

/// Runs every lint gate; an error names the ones that failed.
pub fn run(root: &Path) -> Result<()> {
    let guests = repo::guests(root)?;
    // (name, cargo's arguments, RUSTFLAGS if the gate sets it)
    let mut gates: Vec<(String, Vec<String>, Option<&str>)> = Vec::new();
    let words = |list: &[&str]| {
        list.iter()
            .map(|word| (*word).to_owned())
            .collect::<Vec<_>>()
    };

    gates.push(("rustfmt".into(), words(&["fmt", "--all", "--check"]), None));
    gates.push((
        "clippy (host crates)".into(),
        words(&["clippy", "--all-targets", "--", "-D", "warnings"]),
        None,
    ));
    // evtchn-core as its loom models build it (`sync` on loom's types),
    // every target: the models themselves and the tests gated off loom.
    // In the loom build's own directory (`host_tests`), so it does not
    // replace the ordinary artifacts.
    gates.push((
        "clippy (evtchn-core with --cfg loom, all targets)".into(),
        words(&[
            "clippy",
            "-p",
            "evtchn-core",
            "--all-targets",
            "--target-dir",
            crate::host_tests::LOOM_TARGET_DIR,
            "--",
            "-D",
            "warnings",
        ]),
        Some("--cfg loom"),
    ));
    gates.push((
        "clippy (guest runtime host tests)".into(),
        words(&[
            "clippy",
            "-p",
            "sluice-guest",
            "--tests",
            "--",
            "-D",
            "warnings",
        ]),
        None,
    ));
    let mut kernel = words(&[
        "clippy",
        "--target",
        KERNEL_TARGET,
        "-p",
        "hypervisor",
        "-p",
        "arch",
        "-p",
        "sluice-guest",
    ]);
    for guest in &guests {
        kernel.push("-p".into());
        kernel.push(repo::package_name(guest));
    }
    kernel.extend(words(&["--", "-D", "warnings"]));
    gates.push(("clippy (kernel crates)".into(), kernel, None));
    if has_selftest_feature(root) {
        gates.push((
            "clippy (hypervisor with selftest)".into(),
            words(&[
                "clippy",
                "--target",
                KERNEL_TARGET,
                "-p",
                "hypervisor",
                "--features",
                "selftest",
                "--",
                "-D",
                "warnings",
            ]),
            None,
        ));
    }

    let mut failed = Vec::new();
    for (name, args, rustflags) in &gates {
        let mut cargo = process::command(root, "cargo");
        cargo.args(args);
        if let Some(flags) = rustflags {
            println!("RUSTFLAGS='{flags}' for:");
            cargo.env("RUSTFLAGS", flags);
        }
        if let Err(error) = process::run(&mut cargo) {
            println!("lint: {name} failed: {error:#}");
            failed.push(name.as_str());
        }
    }
    if !failed.is_empty() {
        bail!("lint failed: {}", failed.join(", "));
    }
    println!("lint: all {} gates clean", gates.len());
    Ok(())
}

/// Whether the hypervisor crate declares the `selftest` feature yet.
fn has_selftest_feature(root: &Path) -> bool {
    let Ok(text) = fs::read_to_string(root.join("hypervisor/Cargo.toml")) else {
        return false;
    };
    let Ok(manifest) = toml::from_str::<toml::Table>(&text) else {
        return false;
    };
    manifest
        .get("features")
        .and_then(toml::Value::as_table)
        .is_some_and(|features| features.contains_key("selftest"))
}
