//! QEMU: finding (or installing) it, the command line of the project-wide
//! boot contract, and running it with a wall-clock limit.

use std::env;
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use wait_timeout::ChildExt;

use crate::process;
use crate::verdict::QemuEnd;

/// The QEMU binary Sluice boots under.
pub const QEMU: &str = "qemu-system-x86_64";
/// The Debian package that holds it.
const QEMU_PACKAGE: &str = "qemu-system-x86";
/// Guest memory when nothing else is asked for, as in the boot contract.
pub const DEFAULT_MEMORY_MIB: u32 = 512;

/// How QEMU executes the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// QEMU's binary translator: slower, works everywhere.
    Tcg,
}

impl Accel {
    /// The name QEMU's `-accel` takes.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// The name people know it by.
    pub fn label(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG",
        }
    }
}

/// One boot of the hypervisor: everything the QEMU command line depends on.
#[derive(Debug, Clone)]
pub struct Boot {
    /// The hypervisor image (`-kernel`).
    pub kernel: PathBuf,
    /// The hypervisor's command line (`-append`).
    pub hypervisor_args: String,
    /// Guest images and their command lines, in boot order (`-initrd`).
    pub modules: Vec<(PathBuf, String)>,
    /// `-smp`.
    pub smp: u32,
    /// `-m`, in MiB.
    pub memory_mib: u32,
    /// `-accel`.
    pub accel: Accel,
    /// Whether to wait for gdb on :1234 before the first instruction.
    pub gdb_stub: GdbStub,
}

/// Whether QEMU opens its gdb stub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GdbStub {
    /// No gdb stub.
    Off,
    /// `-s -S`: listen on :1234 and stop before the first instruction.
    WaitOnPort1234,
}

impl Boot {
    /// The QEMU arguments of the boot contract for this boot.
    pub fn args(&self) -> Result<Vec<OsString>> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |words: &[&str]| args.extend(words.iter().map(OsString::from));
        push(&["-machine", "q35", "-cpu", "max"]);
        push(&["-accel", self.accel.qemu_name()]);
        push(&["-m", &format!("{}M", self.memory_mib)]);
        push(&["-smp", &self.smp.to_string()]);
        push(&["-display", "none", "-no-reboot", "-serial", "stdio"]);
        push(&["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        match self.gdb_stub {
            GdbStub::Off => {}
            GdbStub::WaitOnPort1234 => push(&["-s", "-S"]),
        }
        args.push("-kernel".into());
        args.push(self.kernel.clone().into_os_string());
        if !self.hypervisor_args.is_empty() {
            args.push("-append".into());
            args.push(self.hypervisor_args.clone().into());
        }
        if !self.modules.is_empty() {
            args.push("-initrd".into());
            args.push(initrd(&self.modules)?.into());
        }
        Ok(args)
    }
}

/// QEMU's multiboot module list: `path args,path args`. A path with a space
/// or a comma cannot be written in it.
fn initrd(modules: &[(PathBuf, String)]) -> Result<String> {
    let mut entries = Vec::with_capacity(modules.len());
    for (image, args) in modules {
        let path = image.to_string_lossy();
        if path.contains([' ', ',']) {
            bail!(
                "guest image path {path:?} contains a space or a comma, which QEMU's -initrd \
                 cannot carry; move the checkout to a path without them"
            );
        }
        entries.push(if args.is_empty() {
            path.into_owned()
        } else {
            format!("{path} {args}")
        });
    }
    Ok(entries.join(","))
}

/// Finds `qemu-system-x86_64` on `PATH`. If it is missing and we are root,
/// installs Debian's `qemu-system-x86`; otherwise says what to install.
pub fn find_or_install(root: &Path) -> Result<PathBuf> {
    // Found on PATH, it is run (and shown in reproduce lines) by bare name.
    if find_on_path(QEMU).is_some() {
        return Ok(PathBuf::from(QEMU));
    }
    if !is_root() {
        bail!(
            "{QEMU} not found on PATH. Install QEMU (7.2 or later); on Debian or Ubuntu: \
             sudo apt-get install --no-install-recommends {QEMU_PACKAGE}"
        );
    }
    println!("{QEMU} not found; installing Debian's {QEMU_PACKAGE} with apt-get");
    process::run(
        process::command(root, "apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    process::run(
        process::command(root, "apt-get")
            .args(["install", "-y", "--no-install-recommends", QEMU_PACKAGE])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    find_on_path(QEMU)
        .map(|_| PathBuf::from(QEMU))
        .with_context(|| format!("{QEMU_PACKAGE} installed, but {QEMU} is still not on PATH"))
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Whether xtask runs as root (and so may install Debian packages).
pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|output| {
        output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == "0"
    })
}

/// A QEMU command for `boot`, run from `root`.
pub fn command(root: &Path, qemu: &Path, boot: &Boot) -> Result<Command> {
    let mut command = process::command(root, qemu);
    command.args(boot.args()?);
    Ok(command)
}

/// Runs QEMU with its serial port written to `serial_log` and its own
/// messages to `stderr_log`, killing it after `limit`.
pub fn run_captured(
    mut command: Command,
    serial_log: &Path,
    stderr_log: &Path,
    limit: Duration,
) -> Result<QemuEnd> {
    let serial = File::create(serial_log)
        .with_context(|| format!("cannot create {}", serial_log.display()))?;
    let stderr = File::create(stderr_log)
        .with_context(|| format!("cannot create {}", stderr_log.display()))?;
    command.stdin(Stdio::null()).stdout(serial).stderr(stderr);
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start {}", process::display(&command)))?;
    let status = child.wait_timeout(limit).context("waiting for QEMU")?;
    match status {
        Some(status) => Ok(end_of(status)),
        None => {
            // Kill may race with QEMU ending by itself; either way it is gone.
            let _ = child.kill();
            child.wait().context("reaping QEMU after its time limit")?;
            Ok(QemuEnd::TimedOut(limit))
        }
    }
}

/// As [`run_captured`], typing `input` on the serial console (QEMU's
/// stdin) once a line of the serial log matches its trigger.
pub fn run_captured_with_input(
    mut command: Command,
    serial_log: &Path,
    stderr_log: &Path,
    limit: Duration,
    input: &crate::manifest::SerialInput,
) -> Result<QemuEnd> {
    use std::io::Write as _;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let serial = File::create(serial_log)
        .with_context(|| format!("cannot create {}", serial_log.display()))?;
    let stderr = File::create(stderr_log)
        .with_context(|| format!("cannot create {}", stderr_log.display()))?;
    command.stdin(Stdio::piped()).stdout(serial).stderr(stderr);
    let mut child = command
        .spawn()
        .with_context(|| format!("could not start {}", process::display(&command)))?;
    let mut stdin = child.stdin.take().context("stdin was not piped")?;
    let has_ended = Arc::new(AtomicBool::new(false));
    let typist = {
        let has_ended = Arc::clone(&has_ended);
        let input = input.clone();
        let serial_log = serial_log.to_path_buf();
        std::thread::spawn(move || {
            // Poll the log for the trigger; QEMU writes it as it runs.
            while !has_ended.load(Ordering::Relaxed) {
                let is_due = input.after.as_ref().is_none_or(|after| {
                    std::fs::read(&serial_log).is_ok_and(|log| {
                        String::from_utf8_lossy(&log)
                            .lines()
                            .any(|line| after.is_match(line))
                    })
                });
                if is_due {
                    let _ = stdin.write_all(input.bytes.as_bytes());
                    let _ = stdin.flush();
                    // Keep stdin open until QEMU ends: EOF is not a key.
                    while !has_ended.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let status = child.wait_timeout(limit).context("waiting for QEMU");
    let end = match status {
        Ok(Some(status)) => Ok(end_of(status)),
        Ok(None) => {
            let _ = child.kill();
            child
                .wait()
                .context("reaping QEMU after its time limit")
                .map(|_| QemuEnd::TimedOut(limit))
        }
        Err(error) => Err(error),
    };
    has_ended.store(true, Ordering::Relaxed);
    let _ = typist.join();
    end
}

/// Runs QEMU on the terminal (serial on stdio) until it ends.
pub fn run_interactive(mut command: Command) -> Result<QemuEnd> {
    let status = command
        .status()
        .with_context(|| format!("could not start {}", process::display(&command)))?;
    Ok(end_of(status))
}

fn end_of(status: ExitStatus) -> QemuEnd {
    match (status.code(), status.signal()) {
        (Some(code), _) => QemuEnd::Exited(code),
        (None, Some(signal)) => QemuEnd::Signalled(signal),
        // Neither a code nor a signal: only a stopped child reports so.
        (None, None) => QemuEnd::Exited(-1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boot() -> Boot {
        Boot {
            kernel: PathBuf::from("target/selftest/x86_64-unknown-none/release/sluice"),
            hypervisor_args: "selftest=cpus".into(),
            modules: Vec::new(),
            smp: 4,
            memory_mib: DEFAULT_MEMORY_MIB,
            accel: Accel::Tcg,
            gdb_stub: GdbStub::Off,
        }
    }

    fn joined(boot: &Boot) -> String {
        boot.args()
            .unwrap()
            .iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn args_follow_the_boot_contract() {
        assert_eq!(
            joined(&boot()),
            "-machine q35 -cpu max -accel tcg -m 512M -smp 4 -display none -no-reboot -serial stdio \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
             -kernel target/selftest/x86_64-unknown-none/release/sluice -append selftest=cpus"
        );
    }

    #[test]
    fn modules_become_one_initrd_list_in_order() {
        let mut boot = boot();
        boot.modules = vec![
            (
                PathBuf::from("target/g/guest-a"),
                "dom=1 vcpus=2 priv".into(),
            ),
            (PathBuf::from("target/g/guest-b"), String::new()),
        ];
        assert!(
            joined(&boot).ends_with("-initrd target/g/guest-a dom=1 vcpus=2 priv,target/g/guest-b")
        );
    }

    #[test]
    fn module_path_with_comma_is_refused() {
        let mut boot = boot();
        boot.modules = vec![(PathBuf::from("/home/a,b/guest-a"), String::new())];
        assert!(boot.args().is_err());
    }

    #[test]
    fn gdb_kvm_and_empty_cmdline() {
        let mut boot = boot();
        boot.accel = Accel::Kvm;
        boot.gdb_stub = GdbStub::WaitOnPort1234;
        boot.hypervisor_args.clear();
        let args = joined(&boot);
        assert!(args.contains("-accel kvm"), "{args}");
        assert!(args.contains(" -s -S "), "{args}");
        assert!(!args.contains("-append"), "{args}");
    }
}
