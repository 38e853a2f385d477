//! Running the tools xtask drives (cargo, rustup, QEMU, apt-get): each runs
//! from the repository root, is echoed before it starts, and fails with a
//! message that names it.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// A command for `program` run from `root`. The rustup toolchain override
/// that `cargo xtask` inherits from its own `cargo` is dropped, so every
/// nested cargo and rustup reads `rust-toolchain.toml` itself.
pub fn command(root: &Path, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(program);
    command
        .current_dir(root)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTUP_TOOLCHAIN_SOURCE");
    command
}

/// Runs `command` to completion with inherited stdio, after echoing it;
/// a non-zero status is an error.
pub fn run(command: &mut Command) -> Result<()> {
    let shown = display(command);
    println!("$ {shown}");
    let status = command
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// A command as a shell would need it typed.
pub fn display(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| shell_quote(&word.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `word` quoted for a POSIX shell when it needs it.
pub fn shell_quote(word: &str) -> String {
    let is_plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if is_plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_stay_unquoted() {
        assert_eq!(shell_quote("-smp"), "-smp");
        assert_eq!(
            shell_quote("target/x86_64-unknown-none/release/sluice"),
            "target/x86_64-unknown-none/release/sluice"
        );
    }

    #[test]
    fn words_with_spaces_or_quotes_are_quoted() {
        assert_eq!(shell_quote("dom=1 vcpus=2"), "'dom=1 vcpus=2'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn display_joins_program_and_arguments() {
        let mut command = Command::new("qemu-system-x86_64");
        command.args(["-append", "selftest=cpus loglvl=debug"]);
        assert_eq!(
            display(&command),
            "qemu-system-x86_64 -append 'selftest=cpus loglvl=debug'"
        );
    }
}
