//! The TAP lines a guest prints, read back from a serial log.
//!
//! Guests print `ok 7 - <behaviour>` / `not ok 7 - <behaviour>` (a skip is
//! `ok 7 - <behaviour> # SKIP <reason>`), then the plan `1..N`, a summary
//! and `# verdict: PASS` or `# verdict: FAIL`. On Xen, dom0's console
//! output reaches the serial line bare; under Sluice a line may carry the
//! hypervisor's log header and a `(dN)` domain tag first. Both are taken
//! off before a line is read, so the two logs compare line for line.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::LazyLock;

use regex::Regex;

/// What a TAP line says about its check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `ok N - ...`.
    Ok,
    /// `not ok N - ...`.
    NotOk,
    /// `ok N - ... # SKIP reason`: not run, which TAP counts as passing.
    Skip,
}

/// One numbered TAP line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapTest {
    /// The test number.
    pub number: u32,
    /// Its verdict.
    pub verdict: Verdict,
    /// The behaviour it names, without the `- ` and without a directive.
    pub description: String,
    /// The line as the guest printed it (prefixes and `\r` taken off).
    pub line: String,
}

/// The guest's own closing verdict line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestVerdict {
    /// `# verdict: PASS`.
    Pass,
    /// `# verdict: FAIL`.
    Fail,
}

/// Everything TAP in one serial log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapLog {
    /// Numbered lines by number (the first one printed for each number).
    pub tests: BTreeMap<u32, TapTest>,
    /// Lines whose number was already taken: a guest bug worth reporting.
    pub duplicates: Vec<TapTest>,
    /// The plan's count, from `1..N`.
    pub plan: Option<u32>,
    /// `# verdict: PASS` / `# verdict: FAIL`, if the guest got that far.
    pub verdict: Option<GuestVerdict>,
    /// The text after `Bail out!`, if the guest gave up.
    pub bail_out: Option<String>,
}

impl TapLog {
    /// Whether the guest ran to its end: it printed the plan, which the
    /// runtime prints only after the last check.
    pub fn is_finished(&self) -> bool {
        self.plan.is_some()
    }

    /// The numbered lines with this verdict.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.tests
            .values()
            .filter(|test| test.verdict == verdict)
            .count()
    }

    /// The last numbered line printed, by number.
    pub fn last(&self) -> Option<&TapTest> {
        self.tests.values().next_back()
    }
}

/// The Sluice log header `[    0.095307] cpu0 INFO  `, then a `(dN) `
/// domain tag, each optional.
static PREFIX: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:\[[ 0-9.\-]*\]\s+cpu[0-9]+\s+[A-Z]+\s+)?(?:\(d[0-9]+\)\s?)?")
        .unwrap_or_else(|error| unreachable!("the prefix regex is valid: {error}"))
});

/// `ok 7 - text` / `not ok 7 text`.
static TEST_LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(not ok|ok)\s+([0-9]+)\b\s*(?:-\s*)?(.*)$")
        .unwrap_or_else(|error| unreachable!("the test line regex is valid: {error}"))
});

/// A `# SKIP` or `# TODO` directive at the end of a description.
static DIRECTIVE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^(.*?)\s*#\s*(skip|todo)\b.*$")
        .unwrap_or_else(|error| unreachable!("the directive regex is valid: {error}"))
});

/// The guest's line with any log header and domain tag taken off.
pub fn strip_prefix(line: &str) -> &str {
    let line = line.trim_end_matches('\r');
    let start = PREFIX.find(line).map_or(0, |found| found.end());
    line.get(start..).unwrap_or(line)
}

/// Reads every TAP line of a serial log.
pub fn parse(serial_log: &str) -> TapLog {
    let mut log = TapLog::default();
    for raw in serial_log.lines() {
        let line = strip_prefix(raw);
        if let Some(test) = parse_test(line) {
            match log.tests.entry(test.number) {
                Entry::Occupied(_) => log.duplicates.push(test),
                Entry::Vacant(slot) => {
                    slot.insert(test);
                }
            }
        } else if let Some(count) = line.strip_prefix("1..") {
            // `1..N`, possibly followed by a `# comment`.
            let digits: String = count.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(count) = digits.parse() {
                log.plan = Some(count);
            }
        } else if let Some(verdict) = line.strip_prefix("# verdict: ") {
            if verdict.starts_with("PASS") {
                log.verdict = Some(GuestVerdict::Pass);
            } else if verdict.starts_with("FAIL") {
                log.verdict = Some(GuestVerdict::Fail);
            }
        } else if let Some(reason) = line.strip_prefix("Bail out!") {
            log.bail_out = Some(reason.trim().to_owned());
        }
    }
    log
}

fn parse_test(line: &str) -> Option<TapTest> {
    let captures = TEST_LINE.captures(line)?;
    let number = captures.get(2)?.as_str().parse().ok()?;
    let text = captures.get(3).map_or("", |text| text.as_str()).trim_end();
    let is_not_ok = captures.get(1)?.as_str() == "not ok";
    let directive = DIRECTIVE.captures(text);
    let is_skip = directive
        .as_ref()
        .and_then(|captures| captures.get(2))
        .is_some_and(|kind| kind.as_str().eq_ignore_ascii_case("skip"));
    let description = match &directive {
        Some(captures) => captures.get(1).map_or("", |text| text.as_str()),
        None => text,
    };
    let verdict = match (is_not_ok, is_skip) {
        (true, _) => Verdict::NotOk,
        (false, true) => Verdict::Skip,
        (false, false) => Verdict::Ok,
    };
    Some(TapTest {
        number,
        verdict,
        description: description.to_owned(),
        line: line.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_lines_as_xen_prints_them() {
        let log = "(XEN) Scrubbing free RAM\r\n\
                   # Hello from a Sluice test guest\r\n\
                   ok 1 - xen_version reports 4.17\r\n\
                   not ok 2 - start_info magic is right\r\n\
                   #   expected: 1\r\n\
                   ok 3 - FIFO works # SKIP needs FIFO\r\n\
                   1..3\r\n\
                   # 2 passed, 1 failed, 1 skipped\r\n\
                   # verdict: FAIL\r\n";
        let tap = parse(log);
        assert_eq!(tap.tests.len(), 3);
        assert_eq!(tap.tests[&1].verdict, Verdict::Ok);
        assert_eq!(tap.tests[&1].description, "xen_version reports 4.17");
        assert_eq!(tap.tests[&1].line, "ok 1 - xen_version reports 4.17");
        assert_eq!(tap.tests[&2].verdict, Verdict::NotOk);
        assert_eq!(tap.tests[&3].verdict, Verdict::Skip);
        assert_eq!(tap.tests[&3].description, "FIFO works");
        assert_eq!(tap.plan, Some(3));
        assert_eq!(tap.verdict, Some(GuestVerdict::Fail));
        assert!(tap.is_finished());
        assert_eq!(tap.count(Verdict::Ok), 1);
        assert_eq!(tap.last().map(|test| test.number), Some(3));
    }

    #[test]
    fn sluice_log_header_and_domain_tag_are_taken_off() {
        let log = "[    0.095307] cpu0 INFO  (d1) ok 1 - a\n\
                   (d1) not ok 2 - b\n\
                   [    -.------] cpu1 DEBUG (d1) ok 3 - c\n\
                   [    0.1] cpu0 INFO  no domains run yet\n\
                   (d1) # verdict: PASS (Poweroff)\n";
        let tap = parse(log);
        let lines: Vec<&str> = tap.tests.values().map(|t| t.line.as_str()).collect();
        assert_eq!(lines, ["ok 1 - a", "not ok 2 - b", "ok 3 - c"]);
        assert_eq!(tap.verdict, Some(GuestVerdict::Pass));
        assert!(!tap.is_finished());
    }

    #[test]
    fn lookalikes_are_not_tests() {
        let tap = parse("token 1 - x\nbook 2 - y\n  ok 3 - indented\nok - no number\nokay 4\n");
        assert!(tap.tests.is_empty(), "{tap:?}");
    }

    #[test]
    fn repeated_number_is_kept_apart() {
        let tap = parse("ok 1 - first\nnot ok 1 - again\n");
        assert_eq!(tap.tests[&1].description, "first");
        assert_eq!(tap.duplicates.len(), 1);
        assert_eq!(tap.duplicates[0].line, "not ok 1 - again");
    }

    #[test]
    fn description_without_dash_and_todo_directive() {
        let tap = parse("ok 4 plain words\nnot ok 5 - known gap # TODO later\n");
        assert_eq!(tap.tests[&4].description, "plain words");
        assert_eq!(tap.tests[&5].verdict, Verdict::NotOk);
        assert_eq!(tap.tests[&5].description, "known gap");
    }

    #[test]
    fn plan_with_comment_and_bail_out() {
        let tap = parse("1..0 # skipped everything\nBail out! no shared_info\n");
        assert_eq!(tap.plan, Some(0));
        assert_eq!(tap.bail_out.as_deref(), Some("no shared_info"));
    }

    #[test]
    fn empty_log_is_unfinished() {
        let tap = parse("");
        assert!(!tap.is_finished());
        assert!(tap.last().is_none());
        assert_eq!(tap.verdict, None);
    }
}
