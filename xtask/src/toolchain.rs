//! The pinned toolchain: every subcommand first makes sure the toolchain in
//! `rust-toolchain.toml`, its components and the `x86_64-unknown-none` target
//! are installed. rustup installs a toolchain file's targets and components
//! only on an explicit `rustup toolchain install` in the repository, so that
//! is what runs when anything is missing.

use std::path::Path;

use anyhow::Result;

use crate::process;

/// The target of the hypervisor and the guests.
pub const KERNEL_TARGET: &str = "x86_64-unknown-none";

/// Components `cargo xtask lint` needs, as `rust-toolchain.toml` lists them.
const COMPONENTS: [&str; 2] = ["rustfmt", "clippy"];

/// Makes sure the pinned toolchain, its components and its target exist.
/// Two quick rustup queries when they do; an install when they do not.
pub fn ensure(root: &Path) -> Result<()> {
    if is_complete(root) {
        return Ok(());
    }
    println!("installing the pinned toolchain from rust-toolchain.toml");
    process::run(process::command(root, "rustup").args(["toolchain", "install"]))
}

fn is_complete(root: &Path) -> bool {
    let has_target = installed(root, &["target", "list", "--installed"])
        .is_some_and(|list| list.iter().any(|line| line == KERNEL_TARGET));
    let has_components =
        installed(root, &["component", "list", "--installed"]).is_some_and(|list| {
            COMPONENTS.iter().all(|component| {
                list.iter()
                    .any(|line| line.starts_with(&format!("{component}-")))
            })
        });
    has_target && has_components
}

/// A rustup listing, one item a line; `None` if rustup could not answer
/// (for example, the pinned toolchain is not installed yet).
fn installed(root: &Path, args: &[&str]) -> Option<Vec<String>> {
    let output = process::command(root, "rustup").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&output.stdout);
    Some(text.lines().map(|line| line.trim().to_owned()).collect())
}
