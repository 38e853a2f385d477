//! `cargo xtask bench`: the host benchmarks of evtchn-core (its `ops` bench
//! target), rendered as a Markdown table in `target/bench/host.md`, each
//! time also given as a ratio to the floor (one locked `fetch_or`).
//! Timings are reported, never asserted. The guest benchmarks (booted
//! under QEMU) live in [`guest`].

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use crate::process;

pub mod guest;

/// Where the table goes, relative to the repository root.
pub const HOST_TABLE: &str = "target/bench/host.md";
/// The benchmark every other one is divided by.
const FLOOR: &str = "raw fetch_or";

/// One result line of the bench binary.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Benchmark name.
    pub name: String,
    /// Median nanoseconds per operation.
    pub nanoseconds: f64,
    /// What the benchmark does.
    pub what: String,
}

/// Runs the host benchmarks, writes the table and prints it.
pub fn run(root: &Path) -> Result<()> {
    let mut cargo = process::command(root, "cargo");
    cargo
        .args(["bench", "-p", "evtchn-core", "--bench", "ops"])
        .stdout(Stdio::piped());
    let shown = process::display(&cargo);
    println!("$ {shown}");
    let mut child = cargo
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    let stdout = child.stdout.take().context("stdout was not piped")?;
    let mut measurements = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading the benchmark output")?;
        match parse_line(&line) {
            Some(measurement) => {
                println!(
                    "  {:<42} {:>9.2} ns",
                    measurement.name, measurement.nanoseconds
                );
                measurements.push(measurement);
            }
            None => println!("{line}"),
        }
    }
    let status = child.wait().context("waiting for cargo bench")?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    let table = render(&measurements, &machine())?;
    let path = root.join(HOST_TABLE);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    fs::write(&path, &table).with_context(|| format!("writing {}", path.display()))?;
    println!();
    print!("{table}");
    println!();
    println!("written to {HOST_TABLE}");
    Ok(())
}

/// `bench<TAB>name<TAB>ns<TAB>what`.
pub fn parse_line(line: &str) -> Option<Measurement> {
    let mut fields = line.strip_prefix("bench\t")?.split('\t');
    let name = fields.next()?.to_owned();
    let nanoseconds = fields.next()?.parse().ok()?;
    let what = fields.next().unwrap_or("").to_owned();
    Some(Measurement {
        name,
        nanoseconds,
        what,
    })
}

/// The Markdown table; -- fails if the floor benchmark is missing.
pub fn render(measurements: &[Measurement], machine: &str) -> Result<String> {
    let floor = measurements
        .iter()
        .find(|measurement| measurement.name == FLOOR)
        .map(|measurement| measurement.nanoseconds)
        .filter(|nanoseconds| *nanoseconds > 0.0)
        .with_context(|| format!("the floor benchmark `{FLOOR}` did not report"))?;
    let mut table = String::new();
    let _ = writeln!(table, "# evtchn-core host benchmarks");
    let _ = writeln!(table);
    let _ = writeln!(
        table,
        "Release build on {machine}. Each time is the lowest of 9 medians (rounds spread over the run) of 31 samples; \
         the ratio is to one locked set-bit (`fetch_or` on an `AtomicU64`)."
    );
    let _ = writeln!(table);
    let _ = writeln!(table, "| benchmark | ns/op | × fetch_or | what it does |");
    let _ = writeln!(table, "|---|---:|---:|---|");
    for measurement in measurements {
        let _ = writeln!(
            table,
            "| {} | {:.1} | {:.1} | {} |",
            measurement.name,
            measurement.nanoseconds,
            measurement.nanoseconds / floor,
            measurement.what
        );
    }
    Ok(table)
}

/// The CPU model and core count, for the table's header.
fn machine() -> String {
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|cpuinfo| {
            cpuinfo.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_owned())
            })
        })
        .unwrap_or_else(|| "an unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    format!("{model}, {cores} cores (shared with other jobs)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bench_lines_and_ignores_the_rest() {
        assert_eq!(
            parse_line("bench\tsend\t12.50\tsets a bit"),
            Some(Measurement {
                name: "send".into(),
                nanoseconds: 12.5,
                what: "sets a bit".into()
            })
        );
        assert_eq!(parse_line("   Compiling evtchn-core"), None);
        assert_eq!(parse_line("bench\tsend\tfast\t"), None);
    }

    #[test]
    fn ratios_are_to_the_floor() {
        let measurements = [
            Measurement {
                name: FLOOR.into(),
                nanoseconds: 4.0,
                what: "floor".into(),
            },
            Measurement {
                name: "send".into(),
                nanoseconds: 10.0,
                what: "x".into(),
            },
        ];
        let table = render(&measurements, "test CPU").unwrap();
        assert!(
            table.contains("| raw fetch_or | 4.0 | 1.0 | floor |"),
            "{table}"
        );
        assert!(table.contains("| send | 10.0 | 2.5 | x |"), "{table}");
    }

    #[test]
    fn a_missing_floor_is_an_error() {
        let measurements = [Measurement {
            name: "send".into(),
            nanoseconds: 10.0,
            what: String::new(),
        }];
        assert!(render(&measurements, "test CPU").is_err());
    }
}
