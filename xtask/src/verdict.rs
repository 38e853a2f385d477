//! What a QEMU run means: the hypervisor's exit code decoded, a scenario's
//! verdict from that code and its serial log, and the closing tally line.

use std::fmt;
use std::time::Duration;

use regex::Regex;

use crate::manifest::ExpectedExit;

/// QEMU's status when the hypervisor wrote 0x10 to `isa-debug-exit`
/// (`(0x10 << 1) | 1`): every domain passed.
pub const QEMU_EXIT_PASS: i32 = 33;
/// QEMU's status for 0x11: some domain failed.
pub const QEMU_EXIT_FAIL: i32 = 35;
/// QEMU's status for 0x12: hypervisor panic or unexpected exception.
pub const QEMU_EXIT_PANIC: i32 = 37;

/// How a QEMU process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuEnd {
    /// QEMU exited with this status.
    Exited(i32),
    /// QEMU was ended by this signal (not by us: QEMU aborting, or Ctrl-C).
    Signalled(i32),
    /// QEMU ran past its wall-clock limit and was killed.
    TimedOut(Duration),
}

impl QemuEnd {
    /// The hypervisor's verdict, if QEMU ended through `isa-debug-exit`.
    pub fn hypervisor_exit(self) -> Option<ExpectedExit> {
        match self {
            QemuEnd::Exited(QEMU_EXIT_PASS) => Some(ExpectedExit::Pass),
            QemuEnd::Exited(QEMU_EXIT_FAIL) => Some(ExpectedExit::Fail),
            QemuEnd::Exited(QEMU_EXIT_PANIC) => Some(ExpectedExit::Panic),
            QemuEnd::Exited(_) | QemuEnd::Signalled(_) | QemuEnd::TimedOut(_) => None,
        }
    }
}

impl fmt::Display for QemuEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            QemuEnd::Exited(status) => match self.hypervisor_exit() {
                Some(exit) => write!(f, "QEMU exit {status}: {}", exit_meaning(exit)),
                None if status == 0 => write!(
                    f,
                    "QEMU exit 0: the machine reset or powered off without the hypervisor's \
                     exit port (a triple fault ends QEMU this way under -no-reboot)"
                ),
                None if status == 1 => {
                    write!(f, "QEMU exit 1: QEMU itself failed (see its stderr)")
                }
                None => write!(
                    f,
                    "QEMU exit {status}: not one of the hypervisor's exit codes"
                ),
            },
            QemuEnd::Signalled(signal) => match signal_name(signal) {
                Some(name) => write!(f, "QEMU was killed by signal {signal} ({name})"),
                None => write!(f, "QEMU was killed by signal {signal}"),
            },
            QemuEnd::TimedOut(limit) => {
                write!(f, "timed out after {} s; QEMU killed", limit.as_secs())
            }
        }
    }
}

fn signal_name(signal: i32) -> Option<&'static str> {
    match signal {
        2 => Some("SIGINT"),
        6 => Some("SIGABRT"),
        9 => Some("SIGKILL"),
        11 => Some("SIGSEGV"),
        15 => Some("SIGTERM"),
        _ => None,
    }
}

/// The human line for each hypervisor exit.
pub fn exit_meaning(exit: ExpectedExit) -> &'static str {
    match exit {
        ExpectedExit::Pass => "all domains passed",
        ExpectedExit::Fail => "a domain failed",
        ExpectedExit::Panic => "hypervisor panic",
    }
}

fn exit_name(exit: ExpectedExit) -> (&'static str, i32) {
    match exit {
        ExpectedExit::Pass => ("pass", QEMU_EXIT_PASS),
        ExpectedExit::Fail => ("fail", QEMU_EXIT_FAIL),
        ExpectedExit::Panic => ("panic", QEMU_EXIT_PANIC),
    }
}

/// Judges one scenario run: the exit must be the expected one and every
/// pattern must match some line of the serial log. Returns every reason it
/// failed; empty means it passed.
pub fn judge(
    expected: ExpectedExit,
    end: QemuEnd,
    serial_log: &str,
    patterns: &[Regex],
) -> Vec<String> {
    let mut reasons = Vec::new();
    if end.hypervisor_exit() != Some(expected) {
        let (name, status) = exit_name(expected);
        reasons.push(format!(
            "expected exit `{name}` (QEMU exit {status}), got: {end}"
        ));
    }
    for (index, pattern) in patterns.iter().enumerate() {
        if !serial_lines(serial_log)
            .any(|line| pattern.is_match(line) || pattern.is_match(without_domain_prefix(line)))
        {
            reasons.push(format!(
                "no serial line matches expect_output[{index}]: {}",
                pattern.as_str()
            ));
        }
    }
    reasons
}

/// A guest's console line without the `(dN) ` prefix the hypervisor puts
/// before it, so that patterns can anchor at the guest's own text (`^ok 1`).
pub fn without_domain_prefix(line: &str) -> &str {
    let Some(rest) = line.strip_prefix("(d") else {
        return line;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    match rest.get(digits..).and_then(|tail| tail.strip_prefix(") ")) {
        Some(text) if digits > 0 => text,
        _ => line,
    }
}

/// The serial log split into lines, without the `\r` of CRLF endings.
pub fn serial_lines(serial_log: &str) -> impl Iterator<Item = &str> {
    serial_log.lines().map(|line| line.trim_end_matches('\r'))
}

/// The last `count` lines of a log.
pub fn tail(log: &str, count: usize) -> Vec<&str> {
    let lines: Vec<&str> = serial_lines(log).collect();
    let start = lines.len().saturating_sub(count);
    lines.get(start..).map(<[&str]>::to_vec).unwrap_or_default()
}

/// The one closing line of `cargo xtask test`.
pub fn closing_line(passed: usize, failed: usize) -> String {
    format!("{passed} passed, {failed} failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patterns(list: &[&str]) -> Vec<Regex> {
        list.iter().map(|p| Regex::new(p).unwrap()).collect()
    }

    #[test]
    fn exit_codes_decode_to_hypervisor_verdicts() {
        assert_eq!(
            QemuEnd::Exited(33).hypervisor_exit(),
            Some(ExpectedExit::Pass)
        );
        assert_eq!(
            QemuEnd::Exited(35).hypervisor_exit(),
            Some(ExpectedExit::Fail)
        );
        assert_eq!(
            QemuEnd::Exited(37).hypervisor_exit(),
            Some(ExpectedExit::Panic)
        );
        for other in [0, 1, 2, 32, 34, 39] {
            assert_eq!(
                QemuEnd::Exited(other).hypervisor_exit(),
                None,
                "status {other}"
            );
        }
        assert_eq!(QemuEnd::Signalled(6).hypervisor_exit(), None);
        assert_eq!(
            QemuEnd::Signalled(6).to_string(),
            "QEMU was killed by signal 6 (SIGABRT)"
        );
        assert_eq!(
            QemuEnd::TimedOut(Duration::from_secs(5)).hypervisor_exit(),
            None
        );
    }

    #[test]
    fn matching_exit_and_lines_pass() {
        let log = "sluice booting\r\nselftest cpus: 4 of 4 CPUs online\r\nbye\r\n";
        let reasons = judge(
            ExpectedExit::Pass,
            QemuEnd::Exited(33),
            log,
            &patterns(&["^selftest cpus: 4 of 4 CPUs online$", "boot"]),
        );
        assert!(reasons.is_empty(), "{reasons:?}");
    }

    #[test]
    fn expected_failure_passes_on_exit_35() {
        assert!(judge(ExpectedExit::Fail, QemuEnd::Exited(35), "", &[]).is_empty());
        assert!(judge(ExpectedExit::Panic, QemuEnd::Exited(37), "", &[]).is_empty());
    }

    #[test]
    fn wrong_exit_fails_even_with_all_lines() {
        let reasons = judge(
            ExpectedExit::Pass,
            QemuEnd::Exited(35),
            "ok 1 - x",
            &patterns(&["ok 1"]),
        );
        assert_eq!(reasons.len(), 1);
        assert!(
            reasons[0].contains("expected exit `pass`"),
            "{}",
            reasons[0]
        );
        assert!(reasons[0].contains("a domain failed"), "{}", reasons[0]);
    }

    #[test]
    fn triple_fault_exit_zero_is_a_failure() {
        let reasons = judge(ExpectedExit::Pass, QemuEnd::Exited(0), "", &[]);
        assert_eq!(reasons.len(), 1);
        assert!(reasons[0].contains("triple fault"), "{}", reasons[0]);
    }

    #[test]
    fn timeout_fails_an_expected_pass() {
        let reasons = judge(
            ExpectedExit::Pass,
            QemuEnd::TimedOut(Duration::from_secs(60)),
            "",
            &[],
        );
        assert!(
            reasons[0].contains("timed out after 60 s"),
            "{}",
            reasons[0]
        );
    }

    #[test]
    fn each_missing_line_is_reported_by_index() {
        let reasons = judge(
            ExpectedExit::Pass,
            QemuEnd::Exited(33),
            "ok 1 - a\nok 2 - b\n",
            &patterns(&["ok 1", "ok 3", "not ok"]),
        );
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("expect_output[1]"));
        assert!(reasons[1].contains("expect_output[2]"));
    }

    #[test]
    fn patterns_match_single_lines_not_the_whole_log() {
        let reasons = judge(
            ExpectedExit::Pass,
            QemuEnd::Exited(33),
            "ok 1\n- a\n",
            &patterns(&["ok 1\n- a", "^- a$"]),
        );
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].contains("expect_output[0]"));
    }

    #[test]
    fn guest_lines_match_without_their_domain_prefix() {
        assert_eq!(without_domain_prefix("(d1) ok 1 - x"), "ok 1 - x");
        assert_eq!(
            without_domain_prefix("(d12) # verdict: PASS"),
            "# verdict: PASS"
        );
        assert_eq!(without_domain_prefix("(dx) ok"), "(dx) ok");
        assert_eq!(without_domain_prefix("(d) ok"), "(d) ok");
        let reasons = judge(
            ExpectedExit::Pass,
            QemuEnd::Exited(33),
            "(d1) ok 1 - xen_version reports 4.17\n",
            &patterns(&["^ok 1 - xen_version"]),
        );
        assert!(reasons.is_empty(), "{reasons:?}");
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\nb\r\nc\n", 2), vec!["b", "c"]);
        assert_eq!(tail("a\n", 40), vec!["a"]);
        assert!(tail("", 40).is_empty());
    }

    #[test]
    fn closing_line_has_the_exact_form() {
        assert_eq!(closing_line(12, 0), "12 passed, 0 failed");
        assert_eq!(closing_line(0, 3), "0 passed, 3 failed");
    }
}
