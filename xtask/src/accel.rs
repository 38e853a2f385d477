//! Choosing the accelerator. `/dev/kvm` existing is not enough: some hosts
//! offer a KVM on which a PV guest's 64-bit `syscall` from ring 3 never
//! reaches the hypervisor. So KVM is used only after a short real boot under
//! it proves that path works; otherwise scenarios run under TCG.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::process;
use crate::qemu::{self, Accel, Boot, GdbStub};
use crate::verdict::{QEMU_EXIT_PASS, QemuEnd, serial_lines};

/// What the user asked for on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccelChoice {
    /// KVM if the probe boot passes, TCG otherwise (the default).
    Probe,
    /// KVM, without probing.
    Kvm,
    /// TCG, without probing.
    Tcg,
}

/// The hypervisor command line of the probe boot.
pub const PROBE_ARGS: &str = "selftest=syscall-probe";
/// The serial line the probe boot must print.
pub const PROBE_LINE: &str = "selftest syscall-probe: ok";
/// How long the probe boot may take before it counts as hung.
pub const PROBE_LIMIT: Duration = Duration::from_secs(10);
/// Where the probe boot's serial output is kept.
const PROBE_LOG: &str = "target/kvm-probe.log";
const PROBE_STDERR: &str = "target/kvm-probe.stderr";

/// Picks the accelerator for this invocation and says which and why.
/// `probe_image` builds (or names) the self-test image; it is called only
/// when a probe boot is needed.
pub fn choose(
    root: &Path,
    qemu_binary: &Path,
    choice: AccelChoice,
    probe_image: impl FnOnce() -> Result<std::path::PathBuf>,
) -> Result<Accel> {
    match choice {
        AccelChoice::Tcg => {
            println!("accelerator: TCG (--tcg)");
            Ok(Accel::Tcg)
        }
        AccelChoice::Kvm => {
            println!("accelerator: KVM (--kvm, probe skipped)");
            Ok(Accel::Kvm)
        }
        AccelChoice::Probe => {
            if !Path::new("/dev/kvm").exists() {
                println!("accelerator: TCG (no /dev/kvm)");
                return Ok(Accel::Tcg);
            }
            let image = match probe_image() {
                Ok(image) => image,
                Err(error) => {
                    println!(
                        "KVM probe failed: no self-test image to probe with ({error:#}); using TCG"
                    );
                    return Ok(Accel::Tcg);
                }
            };
            match probe(root, qemu_binary, &image) {
                Ok(()) => {
                    println!(
                        "accelerator: KVM (probe passed: a ring-3 syscall reached the hypervisor)"
                    );
                    Ok(Accel::Kvm)
                }
                Err(reason) => {
                    println!("KVM probe failed: {reason}; using TCG");
                    Ok(Accel::Tcg)
                }
            }
        }
    }
}

/// Boots the self-test image's syscall probe under KVM; `Err` says why KVM
/// is not usable.
fn probe(root: &Path, qemu_binary: &Path, image: &Path) -> Result<(), String> {
    let boot = Boot {
        kernel: image.to_path_buf(),
        hypervisor_args: PROBE_ARGS.into(),
        modules: Vec::new(),
        smp: 1,
        memory_mib: qemu::DEFAULT_MEMORY_MIB,
        accel: Accel::Kvm,
        gdb_stub: GdbStub::Off,
    };
    let command = qemu::command(root, qemu_binary, &boot).map_err(|error| format!("{error:#}"))?;
    println!(
        "probing KVM, at most {} s: {}",
        PROBE_LIMIT.as_secs(),
        process::display(&command)
    );
    let serial_log = root.join(PROBE_LOG);
    let stderr_log = root.join(PROBE_STDERR);
    if let Some(dir) = serial_log.parent() {
        fs::create_dir_all(dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    }
    let end = qemu::run_captured(command, &serial_log, &stderr_log, PROBE_LIMIT)
        .map_err(|error| format!("{error:#}"))?;
    let serial = fs::read(&serial_log).map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    let stderr = fs::read(&stderr_log).map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    probe_verdict(
        end,
        &serial.unwrap_or_default(),
        &stderr.unwrap_or_default(),
    )
    .map_err(|reason| format!("{reason} (logs: {PROBE_LOG}, {PROBE_STDERR})"))
}

/// The probe passes only on exit 33 with the probe line on the serial log;
/// otherwise the reason, with QEMU's first complaint if it made one.
fn probe_verdict(end: QemuEnd, serial: &str, stderr: &str) -> Result<(), String> {
    let has_line = serial_lines(serial).any(|line| line.trim() == PROBE_LINE);
    let problem = match end {
        QemuEnd::Exited(QEMU_EXIT_PASS) if has_line => return Ok(()),
        QemuEnd::Exited(QEMU_EXIT_PASS) => format!("exit 33 but no line `{PROBE_LINE}`"),
        QemuEnd::TimedOut(limit) => format!("no exit within {} s", limit.as_secs()),
        QemuEnd::Exited(_) | QemuEnd::Signalled(_) => format!("{end}"),
    };
    match stderr.lines().map(str::trim).find(|line| !line.is_empty()) {
        Some(complaint) => Err(format!("{problem}; QEMU said: {complaint}")),
        None => Err(problem),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_passes_only_with_exit_33_and_the_line() {
        assert_eq!(
            probe_verdict(
                QemuEnd::Exited(33),
                "boot\r\nselftest syscall-probe: ok\r\n",
                ""
            ),
            Ok(())
        );
        assert!(probe_verdict(QemuEnd::Exited(33), "boot\n", "").is_err());
        assert!(probe_verdict(QemuEnd::Exited(35), "selftest syscall-probe: ok\n", "").is_err());
    }

    #[test]
    fn hung_probe_says_it_timed_out() {
        let reason = probe_verdict(QemuEnd::TimedOut(PROBE_LIMIT), "", "").unwrap_err();
        assert!(reason.contains("within 10 s"), "{reason}");
    }

    #[test]
    fn aborting_qemu_quotes_its_first_complaint() {
        let reason = probe_verdict(
            QemuEnd::Signalled(6),
            "",
            "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\nqemu-system-x86_64: kvm.c: Assertion failed.\n",
        )
        .unwrap_err();
        assert_eq!(
            reason,
            "QEMU was killed by signal 6 (SIGABRT); QEMU said: qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69"
        );
    }

    #[test]
    fn qemu_failure_quotes_its_message() {
        let reason = probe_verdict(
            QemuEnd::Exited(1),
            "",
            "\nqemu-system-x86_64: Could not access KVM kernel module: Permission denied\n",
        )
        .unwrap_err();
        assert!(reason.contains("Permission denied"), "{reason}");
    }
}
