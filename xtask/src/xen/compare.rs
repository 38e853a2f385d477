//! Sluice's TAP lines against Xen's for one scenario: per test number, the
//! same verdict and the same description, the same plan, and both sides run
//! to the end. Xen 4.17 is the oracle: Sluice implements Xen's ABI, so a
//! guest must see the same answers under both.
//!
//! A description may carry what the guest observed, in parentheses with a
//! number in them: `VIRQ_TIMER ticks ... (default periodic timer; 8 ticks
//! in 100 ms)`, `version even and non-zero (4), multiplier set`. Such a
//! value can vary from run to run even on Xen, and the check's verdict
//! already says whether it was acceptable, so the comparison reads every
//! parenthesised group holding a digit as `(...)`. Lines that differ only
//! there are kept as observations, listed but not failures.

use std::fmt;

use super::tap::{TapLog, TapTest};

/// Which hypervisor a log came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Sluice, booted as the scenario manifest says.
    Sluice,
    /// Real Xen 4.17, the guest as dom0.
    Xen,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Sluice => "Sluice",
            Side::Xen => "Xen",
        })
    }
}

/// One way the two logs disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// Both printed this number, with another verdict or description.
    Differs {
        /// Sluice's line.
        sluice: TapTest,
        /// Xen's line.
        xen: TapTest,
    },
    /// Only `side` printed this line, although the other side printed
    /// later numbers or ran to its end.
    OnlyOn(Side, TapTest),
    /// Both ran to the end with different plans.
    Plan {
        /// Sluice's `1..N`.
        sluice: u32,
        /// Xen's `1..N`.
        xen: u32,
    },
    /// `side` printed this number twice (the second line is given).
    Repeated(Side, TapTest),
}

impl Difference {
    /// The difference as lines for a reader, both sides' lines shown.
    pub fn render(&self) -> Vec<String> {
        match self {
            Difference::Differs { sluice, xen } => {
                let what = match (
                    sluice.verdict == xen.verdict,
                    essence(&sluice.description) == essence(&xen.description),
                ) {
                    (false, false) => "verdict and description differ",
                    (false, true) => "verdict differs",
                    (true, _) => "description differs",
                };
                vec![
                    format!("test {}: {what}", sluice.number),
                    format!("  Sluice: {}", sluice.line),
                    format!("  Xen:    {}", xen.line),
                ]
            }
            Difference::OnlyOn(side, test) => {
                let other = match side {
                    Side::Sluice => Side::Xen,
                    Side::Xen => Side::Sluice,
                };
                vec![
                    format!("test {}: printed by {side} only", test.number),
                    format!("  {side}:{} {}", pad(*side), test.line),
                    format!("  {other}:{} (no line {})", pad(other), test.number),
                ]
            }
            Difference::Plan { sluice, xen } => vec![
                "the plans differ".to_owned(),
                format!("  Sluice: 1..{sluice}"),
                format!("  Xen:    1..{xen}"),
            ],
            Difference::Repeated(side, test) => vec![format!(
                "test {}: {side} printed this number twice, again as: {}",
                test.number, test.line
            )],
        }
    }
}

/// Aligns `Xen:` under `Sluice:`.
fn pad(side: Side) -> &'static str {
    match side {
        Side::Sluice => "",
        Side::Xen => "   ",
    }
}

/// The description a comparison looks at: each parenthesised group that
/// holds a digit (what the guest measured or got) reads `(...)`. Groups
/// nested in one are part of it; an unbalanced `)` or `(` is plain text.
pub fn essence(description: &str) -> String {
    let mut essence = String::with_capacity(description.len());
    let mut rest = description.trim_end();
    while let Some(open) = rest.find('(') {
        let (before, group_and_after) = rest.split_at(open);
        essence.push_str(before);
        let Some(length) = group_length(group_and_after) else {
            // Never closes: the rest is plain text.
            rest = group_and_after;
            break;
        };
        let (group, after) = group_and_after.split_at(length);
        if group.chars().any(|c| c.is_ascii_digit()) {
            essence.push_str("(...)");
        } else {
            essence.push_str(group);
        }
        rest = after;
    }
    essence.push_str(rest);
    essence
}

/// The length in bytes of the balanced group `text` starts with (at its
/// `(`), or `None` if it never closes.
fn group_length(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (index, character) in text.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(index + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// The result of comparing one scenario's two logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// Every disagreement, by test number.
    pub differences: Vec<Difference>,
    /// Lines with the same verdict and description that differ only in the
    /// observation at their end (Sluice's line, Xen's line): not failures.
    pub observations: Vec<(TapTest, TapTest)>,
    /// Numbers both sides printed.
    pub compared: usize,
    /// Whether Sluice printed its plan (ran to the end).
    pub sluice_finished: bool,
    /// Whether Xen printed its plan.
    pub xen_finished: bool,
}

impl Comparison {
    /// Both ran to the end and agree on every line and the plan.
    pub fn is_same(&self) -> bool {
        self.sluice_finished && self.xen_finished && self.differences.is_empty()
    }
}

/// Compares the TAP of one scenario under Sluice and under Xen. A number one
/// side lacks is a difference only where that side went on past it; where a
/// side stopped early, the missing tail is its not finishing, which the
/// caller reports once rather than line by line.
pub fn compare(sluice: &TapLog, xen: &TapLog) -> Comparison {
    let mut differences = Vec::new();
    let mut observations = Vec::new();
    let mut compared = 0;
    let sluice_last = sluice.last().map_or(0, |test| test.number);
    let xen_last = xen.last().map_or(0, |test| test.number);
    let numbers: std::collections::BTreeSet<u32> = sluice
        .tests
        .keys()
        .chain(xen.tests.keys())
        .copied()
        .collect();
    for number in numbers {
        match (sluice.tests.get(&number), xen.tests.get(&number)) {
            (Some(ours), Some(theirs)) => {
                compared += 1;
                if ours.verdict != theirs.verdict
                    || essence(&ours.description) != essence(&theirs.description)
                {
                    differences.push(Difference::Differs {
                        sluice: ours.clone(),
                        xen: theirs.clone(),
                    });
                } else if ours.description != theirs.description {
                    observations.push((ours.clone(), theirs.clone()));
                }
            }
            (None, Some(theirs)) => {
                if sluice.is_finished() || number < sluice_last {
                    differences.push(Difference::OnlyOn(Side::Xen, theirs.clone()));
                }
            }
            (Some(ours), None) => {
                if xen.is_finished() || number < xen_last {
                    differences.push(Difference::OnlyOn(Side::Sluice, ours.clone()));
                }
            }
            (None, None) => {}
        }
    }
    if let (Some(ours), Some(theirs)) = (sluice.plan, xen.plan)
        && ours != theirs
    {
        differences.push(Difference::Plan {
            sluice: ours,
            xen: theirs,
        });
    }
    differences.extend(
        sluice
            .duplicates
            .iter()
            .map(|test| Difference::Repeated(Side::Sluice, test.clone())),
    );
    differences.extend(
        xen.duplicates
            .iter()
            .map(|test| Difference::Repeated(Side::Xen, test.clone())),
    );
    Comparison {
        differences,
        observations,
        compared,
        sluice_finished: sluice.is_finished(),
        xen_finished: xen.is_finished(),
    }
}

/// How far a side that did not finish got, for the one line that says so.
pub fn progress(log: &TapLog) -> String {
    match log.last() {
        None => "its log has no TAP line".to_owned(),
        Some(last) => format!(
            "its log stops after {} TAP line{}, the last `{}`",
            log.tests.len(),
            if log.tests.len() == 1 { "" } else { "s" },
            last.line
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xen::tap::parse;

    const XEN: &str = "ok 1 - a\nok 2 - b\nok 3 - c # SKIP no FIFO\n1..3\n# verdict: PASS\n";

    #[test]
    fn identical_logs_are_the_same() {
        let sluice = parse(&XEN.replace("ok", "(d1) ok"));
        let comparison = compare(&sluice, &parse(XEN));
        assert!(comparison.is_same(), "{comparison:?}");
        assert_eq!(comparison.compared, 3);
    }

    #[test]
    fn verdict_and_description_differences_show_both_lines() {
        let sluice = parse("ok 1 - a\nnot ok 2 - b\nok 3 - c but other\n1..3\n");
        let comparison = compare(&sluice, &parse(XEN));
        assert!(!comparison.is_same());
        let rendered: Vec<String> = comparison
            .differences
            .iter()
            .flat_map(Difference::render)
            .collect();
        assert_eq!(
            rendered,
            [
                "test 2: verdict differs",
                "  Sluice: not ok 2 - b",
                "  Xen:    ok 2 - b",
                "test 3: verdict and description differ",
                "  Sluice: ok 3 - c but other",
                "  Xen:    ok 3 - c # SKIP no FIFO",
            ]
        );
    }

    #[test]
    fn skip_against_ok_is_a_verdict_difference() {
        let sluice = parse("ok 1 - a\nok 2 - b\nok 3 - c\n1..3\n");
        let comparison = compare(&sluice, &parse(XEN));
        assert_eq!(comparison.differences.len(), 1);
        assert!(comparison.differences[0].render()[0].contains("verdict differs"));
    }

    #[test]
    fn unfinished_sluice_lists_only_what_it_skipped_over() {
        // Sluice printed 1 and 3, then stopped: 2 is a hole, the tail is not.
        let xen = parse("ok 1 - a\nok 2 - b\nok 3 - c\nok 4 - d\n1..4\n");
        let sluice = parse("ok 1 - a\nok 3 - c\n");
        let comparison = compare(&sluice, &xen);
        assert!(!comparison.sluice_finished && comparison.xen_finished);
        assert!(!comparison.is_same());
        assert_eq!(comparison.differences.len(), 1, "{comparison:?}");
        assert_eq!(
            comparison.differences[0].render(),
            [
                "test 2: printed by Xen only",
                "  Xen:    ok 2 - b",
                "  Sluice: (no line 2)"
            ]
        );
        assert!(progress(&sluice).contains("2 TAP lines, the last `ok 3 - c`"));
    }

    #[test]
    fn sluice_that_printed_nothing_differs_in_nothing_but_did_not_finish() {
        let comparison = compare(&parse("no domains run yet\n"), &parse(XEN));
        assert!(comparison.differences.is_empty());
        assert!(!comparison.sluice_finished);
        assert!(!comparison.is_same());
        assert_eq!(progress(&parse("")), "its log has no TAP line");
    }

    #[test]
    fn extra_lines_and_plans_after_both_finished() {
        let sluice = parse("ok 1 - a\nok 2 - b\nok 3 - c # SKIP no FIFO\nok 4 - d\n1..4\n");
        let comparison = compare(&sluice, &parse(XEN));
        let rendered: Vec<String> = comparison
            .differences
            .iter()
            .flat_map(Difference::render)
            .collect();
        assert_eq!(
            rendered,
            [
                "test 4: printed by Sluice only",
                "  Sluice: ok 4 - d",
                "  Xen:    (no line 4)",
                "the plans differ",
                "  Sluice: 1..4",
                "  Xen:    1..3",
            ]
        );
    }

    #[test]
    fn repeated_numbers_are_differences() {
        let sluice = parse("ok 1 - a\nok 1 - a\nok 2 - b\nok 3 - c # SKIP x\n1..3\n");
        let comparison = compare(&sluice, &parse(XEN));
        assert_eq!(
            comparison.differences,
            [Difference::Repeated(
                Side::Sluice,
                sluice.duplicates[0].clone()
            )]
        );
    }

    #[test]
    fn a_group_with_a_number_is_an_observation() {
        assert_eq!(
            essence("VIRQ_TIMER ticks (default periodic timer; 8 ticks in 100 ms)"),
            "VIRQ_TIMER ticks (...)"
        );
        assert_eq!(
            essence("version even and non-zero (4), multiplier set"),
            "version even and non-zero (...), multiplier set"
        );
        assert_eq!(
            essence("IF set (= !saved mask) (rflags 0x246)"),
            "IF set (= !saved mask) (...)"
        );
        assert_eq!(
            essence("magic is \"x\" (got (nested) \"x-3\") "),
            "magic is \"x\" (...)"
        );
        assert_eq!(
            essence("status of port 0 (reserved) is rc 0"),
            "status of port 0 (reserved) is rc 0"
        );
        assert_eq!(essence("unbalanced 1) (2"), "unbalanced 1) (2");
        assert_eq!(essence("(42)"), "(...)");
        assert_eq!(essence("plain"), "plain");
    }

    #[test]
    fn measurements_differ_as_observations_only() {
        let xen = parse("ok 1 - ticks (8 ticks in 100 ms)\nok 2 - port (gets 5)\n1..2\n");
        let sluice = parse("ok 1 - ticks (7 ticks in 100 ms)\nnot ok 2 - port (gets 6)\n1..2\n");
        let comparison = compare(&sluice, &xen);
        assert_eq!(comparison.observations.len(), 1);
        assert_eq!(comparison.observations[0].0.number, 1);
        assert_eq!(comparison.differences.len(), 1);
        assert_eq!(
            comparison.differences[0].render()[0],
            "test 2: verdict differs"
        );
        let other = parse("ok 1 - tocks (8 ticks in 100 ms)\nok 2 - port (gets 5)\n1..2\n");
        assert_eq!(compare(&other, &xen).differences.len(), 1);
    }

    #[test]
    fn unfinished_xen_is_not_the_same() {
        let comparison = compare(&parse(XEN), &parse("ok 1 - a\n"));
        assert!(comparison.differences.is_empty());
        assert!(!comparison.xen_finished);
        assert!(!comparison.is_same());
    }
}
