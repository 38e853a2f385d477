//! Booting one scenario's guest as dom0 on real Xen 4.17 under QEMU TCG,
//! and judging that run on its own.
//!
//! The QEMU command is `tests/xen-oracle.sh`'s. The guest gets the word
//! `xen-oracle`, with which a passing guest ends with SHUTDOWN_reboot: Xen
//! halts the machine on a dom0 poweroff (QEMU would keep running), while a
//! reboot under `-no-reboot` ends QEMU with status 0. A failing guest
//! crashes dom0 and Xen reboots 5 s later, which ends QEMU too.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::manifest::{ExpectedExit, Module};
use crate::process;
use crate::verdict::{QemuEnd, serial_lines};

use super::tap::{GuestVerdict, TapLog, Verdict};

/// Xen's command line, as in `tests/xen-oracle.sh`, less `dom0_max_vcpus`.
const XEN_ARGS: &str = "console=com1 com1=115200,8n1 dom0_mem=64M loglvl=all \
                        guest_loglvl=all noreboot=false";
/// Guest memory, as in `tests/xen-oracle.sh`.
const MEMORY: &str = "512";
/// Time for Xen's own boot (and its 5 s delay before rebooting after a dom0
/// crash), added to the scenario's limit.
pub const XEN_ALLOWANCE: Duration = Duration::from_secs(30);
/// The command-line word that makes a passing guest reboot rather than
/// power off.
pub const ORACLE_WORD: &str = "xen-oracle";

/// How one single-domain scenario boots on Xen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XenBoot {
    /// The guest image, booted as dom0 (Xen's one multiboot module).
    pub guest: PathBuf,
    /// The guest's command line: `xen-oracle` and the module's own words.
    pub guest_args: String,
    /// dom0's vcpus (`dom0_max_vcpus`), from the module's `vcpus=`.
    pub vcpus: u32,
    /// QEMU `-smp`: the scenario's, or more if dom0 has more vcpus (Xen
    /// gives dom0 no more vcpus than there are CPUs).
    pub smp: u32,
}

impl XenBoot {
    /// The boot for `module` of a scenario with `smp` CPUs. The words
    /// Sluice's domain builder reads (`dom=`, `vcpus=`, `priv`) do not go
    /// to the guest: on Xen it is dom0, and `vcpus=` becomes
    /// `dom0_max_vcpus`. Any other word is the guest's own and is kept.
    pub fn new(guest: PathBuf, module: &Module, smp: u32) -> XenBoot {
        let mut vcpus = 1;
        let mut words = vec![ORACLE_WORD];
        for word in module.args.split_whitespace() {
            if let Some(count) = word.strip_prefix("vcpus=") {
                vcpus = count.parse().unwrap_or(1).max(1);
            } else if !(word.starts_with("dom=") || word == "priv") {
                words.push(word);
            }
        }
        XenBoot {
            guest,
            guest_args: words.join(" "),
            vcpus,
            smp: smp.max(vcpus),
        }
    }

    /// QEMU's arguments for this boot of `xen_elf`.
    pub fn args(&self, xen_elf: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = ["-accel", "tcg", "-cpu", "max", "-m", MEMORY, "-smp"]
            .iter()
            .map(OsString::from)
            .collect();
        args.push(self.smp.to_string().into());
        args.extend(
            [
                "-display",
                "none",
                "-serial",
                "stdio",
                "-no-reboot",
                "-kernel",
            ]
            .iter()
            .map(OsString::from),
        );
        args.push(xen_elf.as_os_str().to_owned());
        args.push("-append".into());
        args.push(format!("{XEN_ARGS} dom0_max_vcpus={}", self.vcpus).into());
        args.push("-initrd".into());
        let mut module = self.guest.as_os_str().to_owned();
        module.push(" ");
        module.push(&self.guest_args);
        args.push(module);
        args
    }

    /// The QEMU command for this boot, run from `root`.
    pub fn command(&self, root: &Path, qemu: &Path, xen_elf: &Path) -> Command {
        let mut command = process::command(root, qemu);
        command.args(self.args(xen_elf));
        command
    }
}

/// Judges a run on Xen by itself: QEMU ended through the reboot, the guest
/// gave the verdict the scenario expects, and a passing guest printed no
/// `not ok` and as many lines as its plan. Returns every reason it failed.
pub fn judge(expected: ExpectedExit, end: QemuEnd, serial_log: &str, tap: &TapLog) -> Vec<String> {
    let mut reasons = Vec::new();
    let wanted = match expected {
        ExpectedExit::Pass => GuestVerdict::Pass,
        ExpectedExit::Fail => GuestVerdict::Fail,
        ExpectedExit::Panic => {
            return vec![
                "expect_exit = \"panic\" means a Sluice panic, which nothing on Xen matches: \
                 give the scenario a `xen_skip` reason"
                    .to_owned(),
            ];
        }
    };
    match end {
        QemuEnd::Exited(0) => {}
        QemuEnd::TimedOut(limit) => reasons.push(format!(
            "timed out after {} s; QEMU killed (the guest neither rebooted nor crashed dom0)",
            limit.as_secs()
        )),
        other => reasons.push(format!(
            "QEMU should end with status 0 when Xen reboots, got: {other}"
        )),
    }
    for line in serial_lines(serial_log) {
        if line.contains("(XEN) Panic on CPU") || line.contains("(XEN) Xen BUG at") {
            reasons.push(format!("Xen itself failed: {line}"));
        }
    }
    match tap.verdict {
        Some(verdict) if verdict == wanted => {}
        Some(verdict) => reasons.push(format!(
            "the guest's verdict is {verdict:?}, the scenario expects {wanted:?}"
        )),
        None => reasons.push("the guest printed no `# verdict:` line".to_owned()),
    }
    if let Some(reason) = &tap.bail_out {
        reasons.push(format!("the guest bailed out: {reason}"));
    }
    if wanted == GuestVerdict::Pass {
        let not_ok = tap.count(Verdict::NotOk);
        if not_ok > 0 {
            reasons.push(format!("{not_ok} `not ok` line(s)"));
        }
        match tap.plan {
            None => reasons.push("the guest printed no plan (`1..N`)".to_owned()),
            Some(plan) if usize::try_from(plan).ok() != Some(tap.tests.len()) => {
                reasons.push(format!(
                    "the plan says 1..{plan}, but {} numbered lines were printed",
                    tap.tests.len()
                ));
            }
            Some(_) => {}
        }
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xen::tap::parse;

    fn module(args: &str) -> Module {
        Module {
            guest: "evtchn-basics".into(),
            args: args.into(),
        }
    }

    #[test]
    fn builder_words_become_xen_options() {
        let boot = XenBoot::new(
            PathBuf::from("target/g/guest-evtchn-basics"),
            &module("dom=1 vcpus=2 priv role=both"),
            1,
        );
        assert_eq!(boot.guest_args, "xen-oracle role=both");
        assert_eq!(boot.vcpus, 2);
        assert_eq!(boot.smp, 2);
        let args: Vec<String> = boot
            .args(Path::new("target/xen-oracle/xen.elf"))
            .iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args.join(" "),
            "-accel tcg -cpu max -m 512 -smp 2 -display none -serial stdio -no-reboot \
             -kernel target/xen-oracle/xen.elf -append console=com1 com1=115200,8n1 \
             dom0_mem=64M loglvl=all guest_loglvl=all noreboot=false dom0_max_vcpus=2 \
             -initrd target/g/guest-evtchn-basics xen-oracle role=both"
        );
    }

    #[test]
    fn one_vcpu_by_default_and_smp_kept_when_larger() {
        let boot = XenBoot::new(PathBuf::from("g"), &module(""), 4);
        assert_eq!((boot.vcpus, boot.smp), (1, 4));
        assert_eq!(boot.guest_args, "xen-oracle");
        let bad = XenBoot::new(PathBuf::from("g"), &module("vcpus=lots"), 1);
        assert_eq!(bad.vcpus, 1);
    }

    const PASSING: &str = "(XEN) boot\r\nok 1 - a\r\nok 2 - b\r\n1..2\r\n# verdict: PASS (Reboot)\r\n\
                           (XEN) Hardware Dom0 shutdown: rebooting machine\r\n";

    #[test]
    fn passing_guest_that_rebooted_passes() {
        let reasons = judge(
            ExpectedExit::Pass,
            QemuEnd::Exited(0),
            PASSING,
            &parse(PASSING),
        );
        assert!(reasons.is_empty(), "{reasons:?}");
    }

    #[test]
    fn failing_guest_fails_unless_expected() {
        let log = "ok 1 - a\nnot ok 2 - b\n1..2\n# verdict: FAIL\n";
        let reasons = judge(ExpectedExit::Pass, QemuEnd::Exited(0), log, &parse(log));
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("verdict is Fail"));
        assert!(reasons[1].contains("1 `not ok`"));
        assert!(judge(ExpectedExit::Fail, QemuEnd::Exited(0), log, &parse(log)).is_empty());
    }

    #[test]
    fn hang_and_short_plan_are_failures() {
        let log = "ok 1 - a\n";
        let reasons = judge(
            ExpectedExit::Pass,
            QemuEnd::TimedOut(Duration::from_secs(90)),
            log,
            &parse(log),
        );
        assert!(reasons[0].contains("timed out after 90 s"), "{reasons:?}");
        assert!(reasons.iter().any(|r| r.contains("no `# verdict:`")));
        assert!(reasons.iter().any(|r| r.contains("no plan")));
        let short = "ok 1 - a\n1..2\n# verdict: PASS\n";
        let reasons = judge(ExpectedExit::Pass, QemuEnd::Exited(0), short, &parse(short));
        assert_eq!(
            reasons,
            ["the plan says 1..2, but 1 numbered lines were printed"]
        );
    }

    #[test]
    fn xen_panic_and_panic_scenarios() {
        let log = format!("{PASSING}(XEN) Panic on CPU 0:\n");
        let reasons = judge(ExpectedExit::Pass, QemuEnd::Exited(0), &log, &parse(&log));
        assert_eq!(reasons, ["Xen itself failed: (XEN) Panic on CPU 0:"]);
        let reasons = judge(
            ExpectedExit::Panic,
            QemuEnd::Exited(0),
            PASSING,
            &parse(PASSING),
        );
        assert!(reasons[0].contains("xen_skip"), "{reasons:?}");
    }
}
