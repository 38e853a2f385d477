//! `cargo xtask`: build, boot and test Sluice.
//!
//! Every subcommand first makes sure the pinned toolchain and its
//! `x86_64-unknown-none` target are installed, then drives cargo and QEMU
//! from the repository root. See the README for what each prints.

mod accel;
mod bench;
mod build;
mod host_tests;
mod lint;
mod manifest;
mod process;
mod qemu;
mod repo;
mod run;
mod scenarios;
mod test;
mod toolchain;
mod verdict;
mod xen;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::accel::AccelChoice;
use crate::qemu::GdbStub;
use crate::repo::Profile;

/// Build, boot and test the Sluice hypervisor.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the hypervisor (demo and self-test images) and every guest.
    Build {
        /// Build with the release profile (what `run` and `test` boot).
        #[arg(long)]
        release: bool,
    },
    /// Boot the demo (tests/demo.toml) with its serial console on this terminal.
    Run(RunArgs),
    /// Run the host tests, then every scenario under QEMU (`--xen`: the Xen oracle).
    Test(TestArgs),
    /// rustfmt and clippy on the host and the kernel-side crates.
    Lint,
    /// Host benchmarks of evtchn-core (target/bench/host.md), then the
    /// bench guest under QEMU -icount on Sluice and Xen (target/bench/guest.md
    /// and guest.svg).
    Bench(BenchArgs),
}

#[derive(Args)]
struct AccelArgs {
    /// Use KVM without the probe boot.
    #[arg(long, conflicts_with = "tcg")]
    kvm: bool,
    /// Use TCG (QEMU's translator); skips the KVM probe.
    #[arg(long)]
    tcg: bool,
}

impl AccelArgs {
    fn choice(&self) -> AccelChoice {
        if self.kvm {
            AccelChoice::Kvm
        } else if self.tcg {
            AccelChoice::Tcg
        } else {
            AccelChoice::Probe
        }
    }
}

#[derive(Args)]
struct RunArgs {
    /// Number of CPUs (QEMU -smp); default from tests/demo.toml.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=255))]
    smp: Option<u32>,
    /// Wait for gdb on localhost:1234 before the first instruction.
    #[arg(long)]
    gdb: bool,
    /// Keep the demo running after its summary (debug keys on the console).
    #[arg(long)]
    interactive: bool,
    #[command(flatten)]
    accel: AccelArgs,
    /// Guest memory in MiB (QEMU -m).
    #[arg(long, value_name = "MIB", default_value_t = qemu::DEFAULT_MEMORY_MIB,
          value_parser = clap::value_parser!(u32).range(16..))]
    memory: u32,
    /// Boot this hypervisor image instead of building one.
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
    /// Colour each domain's console lines (the hypervisor's
    /// console_colour=on): auto does when stdout is a terminal.
    #[arg(long, value_name = "WHEN", value_enum, default_value_t = run::ColourChoice::Auto)]
    colour: run::ColourChoice,
    /// Extra words for the hypervisor command line (after `--`).
    #[arg(last = true, value_name = "HYPERVISOR ARGS")]
    extra: Vec<String>,
}

#[derive(Args)]
struct BenchArgs {
    /// Only the host benchmarks of evtchn-core.
    #[arg(long, conflicts_with = "guest")]
    host: bool,
    /// Only the guest benchmarks under QEMU.
    #[arg(long)]
    guest: bool,
    /// Do not boot Xen 4.17: its column is read from the last Xen run's logs
    /// if that run booted the same bench guest image on the same Xen image
    /// with the same QEMU commands, and left empty if not.
    #[arg(long)]
    no_xen: bool,
}

#[derive(Args)]
struct TestArgs {
    #[command(flatten)]
    accel: AccelArgs,
    /// Run only the scenarios whose name contains SUBSTR (host tests always run).
    #[arg(long, value_name = "SUBSTR")]
    filter: Option<String>,
    /// Scenarios to run at once.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    jobs: u16,
    /// Instead of the host tests and every scenario: each single-domain
    /// scenario on Sluice, then as dom0 on real Xen 4.17, verdicts compared.
    #[arg(long)]
    xen: bool,
    /// Boot this hypervisor image instead of building the self-test one.
    #[arg(long, value_name = "PATH")]
    image: Option<PathBuf>,
}

fn main() -> ExitCode {
    // Usage errors exit 1, not clap's 2: `run` gives 2 its own meaning.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<ExitCode> {
    let root = repo::root()?;
    toolchain::ensure(&root)?;
    match command {
        Command::Build { release } => {
            build_all(
                &root,
                if release {
                    Profile::Release
                } else {
                    Profile::Dev
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => run::run(
            &root,
            &run::Options {
                smp: args.smp,
                is_interactive: args.interactive,
                gdb_stub: if args.gdb {
                    GdbStub::WaitOnPort1234
                } else {
                    GdbStub::Off
                },
                accel: args.accel.choice(),
                memory_mib: args.memory,
                extra_args: args.extra,
                image: args.image.map(|image| absolute(&image)),
                colour: args.colour,
            },
        ),
        Command::Test(args) => {
            let options = test::Options {
                accel: args.accel.choice(),
                filter: args.filter,
                jobs: usize::from(args.jobs),
                image: args.image.map(|image| absolute(&image)),
            };
            let passed = if args.xen {
                xen::run(&root, &options)?
            } else {
                test::run(&root, &options)?
            };
            Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Lint => {
            lint::run(&root)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(args) => {
            if !args.guest {
                bench::run(&root)?;
            }
            if !args.host {
                bench::guest::run(&root, !args.no_xen)?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A path given on the command line, made absolute: xtask runs its tools
/// from the repository root, not from where it was started.
fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn build_all(root: &Path, profile: Profile) -> Result<()> {
    let demo = build::hypervisor(root, profile, build::Flavor::Demo)?;
    let selftest = build::hypervisor(root, profile, build::Flavor::Selftest)?;
    let guests = build::guests(root, profile, &repo::guests(root)?)?;
    println!("images:");
    println!("  hypervisor           {}", demo.display());
    println!("  hypervisor selftest  {}", selftest.display());
    for (guest, image) in &guests {
        println!("  guest {guest:<14} {}", image.display());
    }
    if guests.is_empty() {
        println!("  (no guests under {}/)", repo::GUESTS_DIR);
    }
    Ok(())
}
