//! `cargo xtask run`: boot the demo (the hypervisor plus the guests of
//! `tests/demo.toml`) with its serial console on the terminal.

use std::collections::BTreeSet;
use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::accel::{self, AccelChoice};
use crate::build::{self, Flavor};
use crate::manifest::{self, ExpectedExit};
use crate::process;
use crate::qemu::{self, Boot, GdbStub};
use crate::repo::{self, Profile};
use crate::verdict::{QemuEnd, exit_meaning};

/// What `cargo xtask run` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Add `interactive` to every module's command line: the demo's
    /// control domain then stays up for the debug keys.
    pub is_interactive: bool,
    /// `-smp`, overriding the demo manifest's.
    pub smp: Option<u32>,
    /// Open QEMU's gdb stub and wait for gdb.
    pub gdb_stub: GdbStub,
    /// How to pick the accelerator.
    pub accel: AccelChoice,
    /// `-m`, in MiB.
    pub memory_mib: u32,
    /// Words appended to the demo's hypervisor command line.
    pub extra_args: Vec<String>,
    /// Boot this hypervisor image instead of building the demo one.
    pub image: Option<PathBuf>,
    /// Whether to colour each domain's console lines.
    pub colour: ColourChoice,
}

/// `--colour`: whether the hypervisor colours each domain's `(dN)` lines
/// (its `console_colour=on`). It cannot see where its serial line ends,
/// so xtask decides: `auto` colours when xtask's own stdout, which QEMU's
/// serial console shares, is a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColourChoice {
    /// When stdout is a terminal.
    #[default]
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The hypervisor word that `choice` adds, given whether stdout is a
/// terminal.
fn colour_word(choice: ColourChoice, is_terminal: bool) -> Option<&'static str> {
    match (choice, is_terminal) {
        (ColourChoice::Always, _) | (ColourChoice::Auto, true) => Some("console_colour=on"),
        (ColourChoice::Never, _) | (ColourChoice::Auto, false) => None,
    }
}

/// Exit status of `cargo xtask run` when every domain passed.
pub const EXIT_PASSED: u8 = 0;
/// ... when a domain failed (hypervisor exit 0x11).
pub const EXIT_DOMAIN_FAILED: u8 = 2;
/// ... when the hypervisor panicked (0x12).
pub const EXIT_PANIC: u8 = 3;
/// ... when QEMU ended any other way (triple fault, QEMU error, signal).
pub const EXIT_OTHER: u8 = 4;

/// Boots the demo and maps how it ended to an exit status.
pub fn run(root: &Path, options: &Options) -> Result<ExitCode> {
    let demo_path = root.join(repo::DEMO_MANIFEST);
    let text = fs::read_to_string(&demo_path)
        .with_context(|| format!("cannot read the demo manifest {}", repo::DEMO_MANIFEST))?;
    let guests = repo::guests(root)?;
    let demo = manifest::parse(&text, &guests)
        .map_err(|reason| anyhow::anyhow!("{}: {reason}", repo::DEMO_MANIFEST))?;

    let qemu_binary = qemu::find_or_install(root)?;
    let image = match &options.image {
        Some(image) if image.is_file() => image.clone(),
        Some(image) => bail!("hypervisor image {} does not exist", image.display()),
        None => build::hypervisor(root, Profile::Release, Flavor::Demo)
            .context("building the hypervisor")?,
    };
    let wanted: BTreeSet<String> = demo
        .modules
        .iter()
        .map(|module| module.guest.clone())
        .collect();
    let guest_images =
        build::guests(root, Profile::Release, &wanted).context("building the demo's guests")?;
    let accel = accel::choose(root, &qemu_binary, options.accel, || {
        build::hypervisor(root, Profile::Release, Flavor::Selftest)
            .context("building the self-test image for the KVM probe")
    })?;

    let mut modules = Vec::with_capacity(demo.modules.len());
    for module in &demo.modules {
        let image = guest_images
            .iter()
            .find(|(guest, _)| *guest == module.guest)
            .map(|(_, image)| image.clone())
            .with_context(|| format!("guest `{}` was not built", module.guest))?;
        let mut args = module.args.clone();
        if options.is_interactive {
            args.push_str(" interactive");
        }
        modules.push((image, args));
    }
    let mut hypervisor_args = demo.hypervisor_args.clone();
    // Before the extra words, so that `-- console_colour=off` wins.
    let colour = colour_word(options.colour, std::io::stdout().is_terminal());
    for word in colour
        .into_iter()
        .chain(options.extra_args.iter().map(String::as_str))
    {
        if !hypervisor_args.is_empty() {
            hypervisor_args.push(' ');
        }
        hypervisor_args.push_str(word);
    }
    let boot = Boot {
        kernel: image.clone(),
        hypervisor_args,
        modules,
        smp: options.smp.unwrap_or(demo.smp),
        memory_mib: options.memory_mib,
        accel,
        gdb_stub: options.gdb_stub,
    };
    let command = qemu::command(root, &qemu_binary, &boot)?;
    println!(
        "booting {} ({}): {}",
        repo::DEMO_MANIFEST,
        demo.description,
        process::display(&command)
    );
    if demo.modules.is_empty() {
        println!(
            "the demo manifest {} lists no guests yet",
            repo::DEMO_MANIFEST
        );
    }
    match options.gdb_stub {
        GdbStub::Off => {}
        GdbStub::WaitOnPort1234 => {
            println!("QEMU is waiting for gdb before the first instruction. In another terminal:");
            println!(
                "  gdb {} -ex 'target remote :1234'",
                process::shell_quote(&image.to_string_lossy())
            );
        }
    }
    println!("serial console follows; Ctrl-C ends QEMU");
    let end = qemu::run_interactive(command)?;
    let (line, status) = outcome(end);
    println!("{line}");
    Ok(ExitCode::from(status))
}

/// The human line and exit status for how the demo ended.
fn outcome(end: QemuEnd) -> (String, u8) {
    match end.hypervisor_exit() {
        Some(ExpectedExit::Pass) => (exit_meaning(ExpectedExit::Pass).to_owned(), EXIT_PASSED),
        Some(ExpectedExit::Fail) => (
            exit_meaning(ExpectedExit::Fail).to_owned(),
            EXIT_DOMAIN_FAILED,
        ),
        Some(ExpectedExit::Panic) => (exit_meaning(ExpectedExit::Panic).to_owned(), EXIT_PANIC),
        None => (end.to_string(), EXIT_OTHER),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypervisor_exits_map_to_distinct_statuses() {
        assert_eq!(
            outcome(QemuEnd::Exited(33)),
            ("all domains passed".to_owned(), 0)
        );
        assert_eq!(
            outcome(QemuEnd::Exited(35)),
            ("a domain failed".to_owned(), 2)
        );
        assert_eq!(
            outcome(QemuEnd::Exited(37)),
            ("hypervisor panic".to_owned(), 3)
        );
    }

    #[test]
    fn colour_only_on_a_terminal_unless_forced() {
        let on = Some("console_colour=on");
        assert_eq!(colour_word(ColourChoice::Auto, true), on);
        assert_eq!(colour_word(ColourChoice::Auto, false), None);
        assert_eq!(colour_word(ColourChoice::Always, false), on);
        assert_eq!(colour_word(ColourChoice::Never, true), None);
    }

    #[test]
    fn any_other_end_is_status_4() {
        for end in [
            QemuEnd::Exited(0),
            QemuEnd::Exited(1),
            QemuEnd::Signalled(2),
        ] {
            assert_eq!(outcome(end).1, EXIT_OTHER, "{end:?}");
        }
    }
}
