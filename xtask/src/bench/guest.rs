//! `cargo xtask bench`'s guest half: the `bench` guest booted under QEMU TCG
//! with `-icount shift=0,sleep=off`, where the guest TSC ticks once per
//! retired instruction, so every number is deterministic (DESIGN
//! "Performance").
//!
//! Boots: the self-test image with `selftest=syscall-floor` (the floor
//! probe: a bare `syscall`/`sysretq` round trip through Sluice's entry), the
//! demo image with the `bench` guest (one vcpu, then two for the ping-pong
//! rows; each boot times its 2-level rows, switches the domain to FIFO and
//! times the FIFO rows), the demo image with two `bench` guests of one vcpu
//! each on two pCPUs for the interdomain ping-pong rows (Sluice only: the
//! Xen oracle boots a lone dom0), and, when Xen 4.17 is installed, the
//! single-domain guest boots as dom0 on Xen in the same QEMU mode. Their `bench <name>
//! median=<n> p99=<n>` lines become `target/bench/guest.md` (each row as a
//! ratio to the floor, to the Xen run and to issue #6's reference medians)
//! and a bar chart `target/bench/guest.svg`. Timings are reported, never
//! asserted.
//!
//! A Xen run that passed leaves a hash of the guest image, the Xen image
//! and the QEMU commands it booted in `target/bench/xen-guest.id`;
//! `--no-xen` then fills the Xen column from that run's logs if all three
//! are still the same (the table says so), and leaves it empty otherwise.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::manifest::Module;
use crate::qemu::{self, Accel, Boot, GdbStub};
use crate::repo::Profile;
use crate::verdict::QemuEnd;
use crate::{build, xen};

/// Where the table and the plot go, relative to the repository root.
pub const GUEST_TABLE: &str = "target/bench/guest.md";
/// The bar chart.
pub const GUEST_PLOT: &str = "target/bench/guest.svg";
/// QEMU's deterministic mode: one TSC tick per retired instruction.
const ICOUNT: [&str; 2] = ["-icount", "shift=0,sleep=off"];
/// Wall-clock limit of one boot (TCG with icount is slow).
const LIMIT: Duration = Duration::from_secs(300);
/// The bench guest's boots: name, module words (after `dom=`), `-smp`.
const BENCH_BOOTS: [(&str, &str, u32); 2] =
    [("guest", "vcpus=1", 1), ("pingpong", "vcpus=2 pingpong", 2)];
/// The Sluice-only boot of the interdomain rows: two bench guests, one
/// vcpu each, pinned to pCPUs 0 and 1 (`-smp 2`). The Xen oracle boots only
/// a dom0 (no toolstack builds a second domain), so these rows have no Xen
/// column; not being in [`BENCH_BOOTS`], the boot leaves the Xen run's id
/// alone.
const INTERDOMAIN_BOOT: (&str, [&str; 2], u32) = (
    "interdomain",
    [
        "dom=1 vcpus=1 cpus=0 interdomain=a peer=2",
        "dom=2 vcpus=1 cpus=1 interdomain=b peer=1",
    ],
    2,
);
/// The floor probe's row name.
const FLOOR: &str = "syscall-floor";
/// Written next to the Xen logs after a Xen run passed: the id of what
/// their numbers depend on (see [`xen_run_id`]).
const XEN_GUEST_ID: &str = "target/bench/xen-guest.id";

/// A row of the table: the bench line's name, what it times, and Xen
/// 4.17's reference median from issue #6 (guest TSC ticks, same QEMU mode),
/// if the issue gives one. Numbers Sluice's own bench measured on Xen go
/// to the "measured" column only.
struct Row {
    name: &'static str,
    what: &'static str,
    xen_reference: Option<u64>,
}

/// The rows, in the order shown.
const ROWS: &[Row] = &[
    Row {
        name: FLOOR,
        what: "floor probe: bare syscall/sysretq through Sluice's entry (selftest=syscall-floor)",
        xen_reference: None,
    },
    Row {
        name: "null-hypercall",
        what: "xen_version(XENVER_version)",
        xen_reference: Some(288),
    },
    Row {
        name: "unknown-hypercall",
        what: "hypercall 63: -ENOSYS",
        xen_reference: None,
    },
    Row {
        name: "send-masked",
        what: "EVTCHNOP_send to a masked port",
        xen_reference: Some(456),
    },
    Row {
        name: "fifo-send-masked",
        what: "FIFO: EVTCHNOP_send to a port with M set in its event word (sets P only)",
        xen_reference: None,
    },
    Row {
        name: "send-vcpu-masked",
        what: "send to an unmasked port, vcpu masked (sets pending, selector, upcall_pending)",
        xen_reference: Some(507),
    },
    Row {
        name: "unmask",
        what: "EVTCHNOP_unmask of a masked, idle port",
        xen_reference: Some(389),
    },
    Row {
        name: "status",
        what: "EVTCHNOP_status of an IPI port",
        xen_reference: Some(467),
    },
    Row {
        name: "alloc-unbound",
        what: "EVTCHNOP_alloc_unbound (remote = itself)",
        xen_reference: Some(702),
    },
    Row {
        name: "close",
        what: "EVTCHNOP_close of that unbound port",
        xen_reference: Some(439),
    },
    Row {
        name: "send-upcall-entry",
        what: "send on a loopback interdomain channel until the upcall's entry: the event callback's third instruction reads the TSC (after saving rax and rdx)",
        xen_reference: Some(597),
    },
    Row {
        name: "send-upcall-handler",
        what: "the same send until the port handler reads the TSC (5 instructions into it), through the runtime's instrumented callback (register saves, test counters, its 2-level demux)",
        xen_reference: None,
    },
    Row {
        name: "fifo-send-upcall-entry",
        what: "FIFO: the same send until the upcall's entry (linking, the ready bit, the upcall)",
        xen_reference: None,
    },
    Row {
        name: "fifo-send-upcall-handler",
        what: "FIFO: the same send until the handler, through the runtime's instrumented callback and its queue consumer",
        xen_reference: None,
    },
    Row {
        name: "send-upcall-iret",
        what: "the same send until it returns: bounce frame, the bench's lean callback (a kernel's 2-level consumer, no test counters) and the handler, HYPERVISOR_iret",
        xen_reference: Some(1020),
    },
    Row {
        name: "fifo-send-upcall-iret",
        what: "FIFO: the same send until it returns (upcall, the lean callback with the runtime's queue consumer, handler, HYPERVISOR_iret)",
        xen_reference: None,
    },
    Row {
        name: "ipi-self",
        what: "send on an IPI port of this vcpu, upcall through the lean callback, iret: round trip",
        xen_reference: Some(1006),
    },
    Row {
        name: "timer-lateness",
        what: "from a VCPUOP_set_singleshot_timer deadline 20 us ahead (its TSC value computed from vcpu_time_info's scale) until the VIRQ_TIMER handler's first statement reads the TSC, through the lean callback; the vcpu spins with events enabled. Includes how late each hypervisor's own timer fires: both program their LAPIC timer for the earliest deadline (Sluice one-shot, from the calibrated rate)",
        xen_reference: None,
    },
    Row {
        name: "pingpong-spin",
        what: "vcpu 0 -> vcpu 1 -> vcpu 0 over IPI ports, both spinning on the pending bit (2 vcpus, -smp 2)",
        xen_reference: Some(3344),
    },
    Row {
        name: "pingpong-blocked",
        what: "the same round trip, both waiting in SCHEDOP_poll",
        xen_reference: Some(8941),
    },
    Row {
        name: "fifo-pingpong-spin",
        what: "FIFO: vcpu 0 -> vcpu 1 -> vcpu 0, each vcpu with its control block, both spinning on P of a masked port",
        xen_reference: None,
    },
    Row {
        name: "fifo-pingpong-blocked",
        what: "FIFO: the same round trip, both waiting in SCHEDOP_poll",
        xen_reference: None,
    },
    Row {
        name: "interdomain-pingpong-spin",
        what: "d1 -> d2 -> d1 over one interdomain channel, one vcpu each on its own pCPU, both spinning on the pending bit (Sluice only: the Xen oracle boots a lone dom0, no second domain)",
        xen_reference: None,
    },
    Row {
        name: "interdomain-pingpong-blocked",
        what: "the same interdomain round trip, both waiting in SCHEDOP_poll (Sluice only, as above)",
        xen_reference: None,
    },
];

/// One parsed `bench` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Median, TSC ticks.
    pub median: u64,
    /// 99th percentile, TSC ticks.
    pub p99: u64,
}

/// What one boot reported, by row name.
type Results = Vec<(String, Sample)>;

/// The "Xen 4.17 measured" column.
struct XenColumn {
    results: Results,
    /// `Some(id)`: not measured by this run but read from the logs of the
    /// last run with Xen, whose guest image, Xen image and QEMU commands
    /// have this id ([`xen_run_id`]).
    reused_from: Option<String>,
}

/// Parses `... bench <name> median=<n> p99=<n> ...` anywhere in a line (a
/// guest line carries `(dN) `, a hypervisor line its log prefix).
pub fn parse_line(line: &str) -> Option<(String, Sample)> {
    let (_, rest) = line.split_once("bench ")?;
    let mut words = rest.split_whitespace();
    let name = words.next()?.to_owned();
    let median = words.next()?.strip_prefix("median=")?.parse().ok()?;
    let p99 = words.next()?.strip_prefix("p99=")?.parse().ok()?;
    Some((name, Sample { median, p99 }))
}

fn parse_log(log: &str) -> Results {
    log.lines().filter_map(parse_line).collect()
}

fn lookup(results: &Results, name: &str) -> Option<Sample> {
    results
        .iter()
        .find(|(row, _)| row == name)
        .map(|(_, sample)| *sample)
}

/// Runs `command` under the limit with its serial log in `log`; returns
/// the log's text and how QEMU ended.
fn boot(root: &Path, mut command: Command, log: &str) -> Result<(String, QemuEnd)> {
    command.args(ICOUNT);
    println!("$ {}", crate::process::display(&command));
    let serial = root.join(log);
    let stderr = serial.with_extension("stderr");
    let end = qemu::run_captured(command, &serial, &stderr, LIMIT)?;
    let text = fs::read_to_string(&serial).with_context(|| format!("reading {log}"))?;
    Ok((text, end))
}

fn sluice_boot(
    kernel: PathBuf,
    hypervisor_args: &str,
    modules: Vec<(PathBuf, String)>,
    smp: u32,
) -> Boot {
    Boot {
        kernel,
        hypervisor_args: hypervisor_args.to_owned(),
        modules,
        smp,
        memory_mib: qemu::DEFAULT_MEMORY_MIB,
        accel: Accel::Tcg,
        gdb_stub: GdbStub::Off,
    }
}

/// Runs the guest benchmarks (`with_xen`: also on Xen, if installed),
/// writes the table and plot and prints the table.
pub fn run(root: &Path, with_xen: bool) -> Result<()> {
    let qemu_path = qemu::find_or_install(root)?;
    let demo = build::hypervisor(root, Profile::Release, build::Flavor::Demo)?;
    let selftest = build::hypervisor(root, Profile::Release, build::Flavor::Selftest)?;
    let guests = build::guests(
        root,
        Profile::Release,
        &BTreeSet::from(["bench".to_owned()]),
    )?;
    let Some((_, guest)) = guests.into_iter().next() else {
        bail!("the bench guest did not build");
    };
    fs::create_dir_all(root.join("target/bench")).context("creating target/bench")?;

    let mut sluice = Results::new();
    let floor_boot = sluice_boot(selftest, "selftest=syscall-floor", Vec::new(), 1);
    let (log, end) = boot(
        root,
        qemu::command(root, &qemu_path, &floor_boot)?,
        "target/bench/sluice-floor.log",
    )?;
    if !matches!(end, QemuEnd::Exited(33)) {
        bail!("the floor probe ended with {end} (log: target/bench/sluice-floor.log)");
    }
    sluice.extend(parse_log(&log));

    let single_domain = BENCH_BOOTS
        .map(|(variant, args, smp)| (variant, vec![(guest.clone(), format!("dom=1 {args}"))], smp));
    let (variant, args, smp) = INTERDOMAIN_BOOT;
    let two_domains = (
        variant,
        args.map(|args| (guest.clone(), args.to_owned())).to_vec(),
        smp,
    );
    for (variant, modules, smp) in single_domain.into_iter().chain([two_domains]) {
        let guest_boot = sluice_boot(demo.clone(), "loglvl=info", modules, smp);
        let log_path = format!("target/bench/sluice-{variant}.log");
        let (log, end) = boot(
            root,
            qemu::command(root, &qemu_path, &guest_boot)?,
            &log_path,
        )?;
        if !matches!(end, QemuEnd::Exited(33)) {
            bail!("the bench guest ({variant}) on Sluice ended with {end} (log: {log_path})");
        }
        sluice.extend(parse_log(&log));
    }

    let xen_column = if with_xen {
        match xen_run(root, &qemu_path, &guest) {
            Ok(results) => Some(XenColumn {
                results,
                reused_from: None,
            }),
            Err(error) => {
                println!("no Xen column: {error:#}");
                None
            }
        }
    } else {
        match reuse_xen_logs(root, &qemu_path, &guest) {
            Ok(column) => Some(column),
            Err(error) => {
                println!("no Xen column: {error:#}");
                None
            }
        }
    };
    let table = render(&sluice, xen_column.as_ref())?;
    fs::write(root.join(GUEST_TABLE), &table).with_context(|| format!("writing {GUEST_TABLE}"))?;
    let xen_results = xen_column.as_ref().map(|column| &column.results);
    fs::write(root.join(GUEST_PLOT), plot(&sluice, xen_results))
        .with_context(|| format!("writing {GUEST_PLOT}"))?;
    println!();
    print!("{table}");
    println!();
    println!("written to {GUEST_TABLE} and {GUEST_PLOT}");
    Ok(())
}

/// FNV-1a (64-bit) offset basis: the hash of nothing.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a (64-bit) of `bytes`, continuing from `hash`.
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The Xen boots of [`BENCH_BOOTS`]: each variant with its QEMU command
/// (without [`ICOUNT`], which [`boot`] adds).
fn xen_boots(
    root: &Path,
    qemu_path: &Path,
    guest: &Path,
    xen_elf: &Path,
) -> Vec<(&'static str, Command)> {
    BENCH_BOOTS
        .iter()
        .map(|&(variant, args, smp)| {
            let module = Module {
                guest: "bench".into(),
                args: format!("dom=0 priv {args}"),
            };
            let xen_boot = xen::oracle::XenBoot::new(guest.to_path_buf(), &module, smp);
            (variant, xen_boot.command(root, qemu_path, xen_elf))
        })
        .collect()
}

/// What a Xen run's numbers depend on, as one id (FNV-1a, in hex): the
/// bench guest image, the Xen image and every boot's QEMU command line
/// with its `-icount` mode. A change to any of them changes the id.
fn xen_run_id(
    root: &Path,
    guest: &Path,
    xen_elf: &Path,
    boots: &[(&str, Command)],
) -> Result<String> {
    let mut hash = FNV_OFFSET;
    for path in [guest.to_path_buf(), root.join(xen_elf)] {
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        hash = fnv1a(hash, &bytes);
    }
    for (variant, command) in boots {
        let line = format!(
            "{variant}: {} {}",
            crate::process::display(command),
            ICOUNT.join(" ")
        );
        hash = fnv1a(hash, line.as_bytes());
    }
    Ok(format!("{hash:016x}"))
}

/// The Xen log of one of [`BENCH_BOOTS`].
fn xen_log(variant: &str) -> String {
    format!("target/bench/xen-{variant}.log")
}

/// The bench guest as dom0 on Xen 4.17, same QEMU mode. Once every boot
/// passed, records the run's id ([`xen_run_id`]) in [`XEN_GUEST_ID`] so
/// that a later `--no-xen` run of the same guest, Xen and commands may
/// reuse the logs.
fn xen_run(root: &Path, qemu_path: &Path, guest: &Path) -> Result<Results> {
    let xen_elf = xen::setup::prepare(root)?;
    // The logs are about to be replaced: they vouch for no run until
    // every boot passed.
    let id_path = root.join(XEN_GUEST_ID);
    if id_path.exists() {
        fs::remove_file(&id_path).with_context(|| format!("removing {XEN_GUEST_ID}"))?;
    }
    let boots = xen_boots(root, qemu_path, guest, &xen_elf);
    let id = xen_run_id(root, guest, &xen_elf, &boots)?;
    let mut results = Results::new();
    for (variant, command) in boots {
        let log_path = xen_log(variant);
        let (log, end) = boot(root, command, &log_path)?;
        let found = parse_log(&log);
        if !log.contains("# verdict: PASS") || found.is_empty() {
            bail!("the bench guest ({variant}) on Xen did not pass ({end}; log: {log_path})");
        }
        results.extend(found);
    }
    fs::write(&id_path, format!("{id}\n")).with_context(|| format!("writing {XEN_GUEST_ID}"))?;
    Ok(results)
}

/// With `--no-xen`: the Xen column from the last Xen run's logs, if that
/// run passed with this very guest image, the Xen image it would boot now
/// and the same QEMU commands (their id in [`XEN_GUEST_ID`]).
fn reuse_xen_logs(root: &Path, qemu_path: &Path, guest: &Path) -> Result<XenColumn> {
    let recorded = fs::read_to_string(root.join(XEN_GUEST_ID))
        .with_context(|| format!("no Xen run recorded ({XEN_GUEST_ID})"))?;
    let xen_elf = Path::new(xen::setup::XEN_ELF);
    let boots = xen_boots(root, qemu_path, guest, xen_elf);
    let id = xen_run_id(root, guest, xen_elf, &boots)?;
    if recorded.trim() != id {
        bail!(
            "the Xen logs under target/bench are from another bench guest image, Xen image or QEMU command ({} there, {id} now)",
            recorded.trim()
        );
    }
    let mut results = Results::new();
    for (variant, _, _) in BENCH_BOOTS {
        let log_path = xen_log(variant);
        let log = fs::read_to_string(root.join(&log_path))
            .with_context(|| format!("reading {log_path}"))?;
        let found = parse_log(&log);
        if !log.contains("# verdict: PASS") || found.is_empty() {
            bail!("{log_path} does not end in a pass with bench rows");
        }
        results.extend(found);
    }
    println!("Xen column: reused from target/bench/xen-*.log (run id {id})");
    Ok(XenColumn {
        results,
        reused_from: Some(id),
    })
}

fn ratio(value: u64, base: Option<u64>) -> String {
    match base {
        Some(base) if base > 0 => format!("{:.2}", value as f64 / base as f64),
        _ => "–".to_owned(),
    }
}

fn cell(value: Option<u64>) -> String {
    value.map_or_else(|| "–".to_owned(), |value| value.to_string())
}

/// The Markdown table; fails if the floor probe or a guest row is missing.
fn render(sluice: &Results, xen: Option<&XenColumn>) -> Result<String> {
    let floor = lookup(sluice, FLOOR)
        .map(|sample| sample.median)
        .with_context(|| format!("the floor probe `{FLOOR}` did not report"))?;
    let mut table = String::new();
    let _ = writeln!(table, "# Sluice guest benchmarks");
    let _ = writeln!(table);
    let _ = writeln!(
        table,
        "QEMU TCG with `-icount shift=0,sleep=off`, 1 CPU (the ping-pong rows: 2 CPUs, a 2-vcpu guest; `interdomain-` rows: 2 CPUs, two 1-vcpu domains, Sluice only as the Xen oracle boots a lone dom0; `fifo-` rows: the same boot after \
         switching the domain to the FIFO ABI): one guest TSC tick is one retired instruction, so the numbers are deterministic. 2001 timed samples per row after 64 \
         untimed ones; median and p99 computed in the guest. \"× floor\" divides Sluice's median \
         by the floor probe's; \"× Xen measured\" divides it by the median of the same bench guest \
         booted as dom0 on Xen 4.17 in the same QEMU mode; \"Xen 4.17 reference\" holds only the \
         medians issue #6 gives (measured on Xen 4.17 in that mode by another guest), \"–\" where it \
         gives none. Reported, never asserted."
    );
    let _ = writeln!(table);
    let _ = writeln!(
        table,
        "The upcall rows go through two guest callbacks, the same on both hypervisors: \
         `*-upcall-entry` stops at the event callback's entry, the round trips (`*-upcall-iret`, \
         `ipi-self`) run the bench guest's lean callback (a kernel's consumer without test \
         counters), and `*-upcall-handler` runs the test runtime's instrumented callback up to \
         the handler (until the bench guest had the lean callback, `send-upcall-entry` meant \
         this, and the round trips went through the runtime's callback too)."
    );
    if let Some(id) = xen.and_then(|column| column.reused_from.as_deref()) {
        let _ = writeln!(table);
        let _ = writeln!(
            table,
            "The \"Xen 4.17 measured\" column was not measured by this run (`--no-xen`): it is \
             read from `target/bench/xen-guest.log` and `xen-pingpong.log`, written by the last \
             run with Xen, which booted this same bench guest image on the same Xen image with \
             the same QEMU commands (run id {id}, FNV-1a)."
        );
    }
    let _ = writeln!(table);
    let measured_header = if xen.is_some_and(|column| column.reused_from.is_some()) {
        "Xen 4.17 measured (last run's logs)"
    } else {
        "Xen 4.17 measured"
    };
    let _ = writeln!(
        table,
        "| row | Sluice median | Sluice p99 | × floor | {measured_header} | × Xen measured | Xen 4.17 reference | × Xen reference | what it times |"
    );
    let _ = writeln!(table, "|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for row in ROWS {
        let Some(sample) = lookup(sluice, row.name) else {
            bail!("Sluice did not report `{}`", row.name);
        };
        let xen_measured = xen
            .and_then(|column| lookup(&column.results, row.name))
            .map(|sample| sample.median);
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.name,
            sample.median,
            sample.p99,
            ratio(sample.median, Some(floor)),
            cell(xen_measured),
            ratio(sample.median, xen_measured),
            cell(row.xen_reference),
            ratio(sample.median, row.xen_reference),
            row.what
        );
    }
    Ok(table)
}

/// A grouped horizontal bar chart of the medians, written by hand: a dozen
/// bars and their labels are a few SVG elements, not worth a plotting
/// crate and its dependency tree in xtask.
fn plot(sluice: &Results, xen: Option<&Results>) -> String {
    const LEFT: f64 = 150.0;
    const WIDTH: f64 = 560.0;
    const BAR: f64 = 9.0;
    let series: [(&str, &str); 3] = [
        ("Sluice", "#2b6cb0"),
        ("Xen 4.17 measured", "#dd6b20"),
        ("Xen 4.17 reference", "#a0aec0"),
    ];
    let values = |row: &Row| -> [Option<u64>; 3] {
        [
            lookup(sluice, row.name).map(|sample| sample.median),
            xen.and_then(|results| lookup(results, row.name))
                .map(|sample| sample.median),
            row.xen_reference,
        ]
    };
    let largest = ROWS
        .iter()
        .flat_map(|row| values(row).into_iter().flatten())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let group = BAR * 3.0 + 8.0;
    let height = 50.0 + group * ROWS.len() as f64 + 30.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{height}" font-family="sans-serif" font-size="11">"#,
        LEFT + WIDTH + 60.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="10" y="18" font-size="13">Median guest TSC ticks (= instructions, QEMU -icount shift=0)</text>"#
    );
    for (index, (label, colour)) in series.iter().enumerate() {
        let x = LEFT + index as f64 * 170.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{x}" y="28" width="10" height="10" fill="{colour}"/><text x="{}" y="37">{label}</text>"#,
            x + 14.0
        );
    }
    for (row_index, row) in ROWS.iter().enumerate() {
        let top = 50.0 + row_index as f64 * group;
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            top + BAR * 1.5 + 4.0,
            row.name
        );
        for (index, (value, (_, colour))) in values(row).into_iter().zip(series).enumerate() {
            let Some(value) = value else { continue };
            let y = top + index as f64 * BAR;
            let length = (value as f64 / largest * WIDTH).max(1.0);
            let _ = writeln!(
                svg,
                r#"<rect x="{LEFT}" y="{y}" width="{length:.1}" height="{}" fill="{colour}"/><text x="{:.1}" y="{}" font-size="9">{value}</text>"#,
                BAR - 1.0,
                LEFT + length + 3.0,
                y + BAR - 1.5
            );
        }
    }
    let _ = writeln!(svg, "</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_guest_and_hypervisor_lines() {
        assert_eq!(
            parse_line("(d1) bench send-masked median=1002 p99=1010 cycles"),
            Some((
                "send-masked".into(),
                Sample {
                    median: 1002,
                    p99: 1010
                }
            ))
        );
        assert_eq!(
            parse_line("[    0.09] cpu0 INFO  bench syscall-floor median=106 p99=106 cycles")
                .map(|(name, _)| name),
            Some("syscall-floor".into())
        );
        assert_eq!(parse_line("(d1) ok 3 - bench ran"), None);
        assert_eq!(parse_line("(d1) bench x median=a p99=1"), None);
    }

    fn full(scale: u64) -> Results {
        ROWS.iter()
            .enumerate()
            .map(|(index, row)| {
                (
                    row.name.to_owned(),
                    Sample {
                        median: (index as u64 + 1) * scale,
                        p99: (index as u64 + 1) * scale + 1,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn ratios_are_to_the_floor_and_to_xen() {
        let sluice = full(100);
        let xen = XenColumn {
            results: full(50),
            reused_from: None,
        };
        let table = render(&sluice, Some(&xen)).unwrap();
        // null-hypercall is row 2: 200 ticks, floor 100, Xen measured 100,
        // Xen reference 288.
        assert!(
            table.contains("| null-hypercall | 200 | 201 | 2.00 | 100 | 2.00 | 288 | 0.69 |"),
            "{table}"
        );
        let without_xen = render(&sluice, None).unwrap();
        assert!(
            without_xen.contains("| null-hypercall | 200 | 201 | 2.00 | – | – | 288 | 0.69 |"),
            "{without_xen}"
        );
    }

    #[test]
    fn reused_xen_logs_are_labelled() {
        let sluice = full(100);
        let measured = XenColumn {
            results: full(50),
            reused_from: None,
        };
        let table = render(&sluice, Some(&measured)).unwrap();
        assert!(!table.contains("last run's logs"), "{table}");
        let reused = XenColumn {
            results: full(50),
            reused_from: Some("0123456789abcdef".into()),
        };
        let table = render(&sluice, Some(&reused)).unwrap();
        assert!(
            table.contains("| Xen 4.17 measured (last run's logs) |")
                && table.contains("not measured by this run")
                && table.contains("run id 0123456789abcdef"),
            "{table}"
        );
    }

    #[test]
    fn only_the_issue_gives_reference_numbers() {
        // Issue #6 gives twelve medians; numbers Sluice's bench measured on
        // Xen belong in the measured column.
        let references: Vec<_> = ROWS
            .iter()
            .filter_map(|row| row.xen_reference.map(|value| (row.name, value)))
            .collect();
        assert_eq!(references.len(), 12, "{references:?}");
        assert!(
            ROWS.iter()
                .filter(|row| row.name.starts_with("fifo-") || row.name.ends_with("-handler"))
                .all(|row| row.xen_reference.is_none())
        );
    }

    #[test]
    fn fnv1a_matches_its_published_values() {
        // FNV-1a 64 of nothing is its offset basis; of "a", 0xaf63dc4c8601ec8c.
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            fnv1a(fnv1a(FNV_OFFSET, b"a"), b"b"),
            fnv1a(FNV_OFFSET, b"ab")
        );
    }

    #[test]
    fn the_run_id_covers_guest_xen_and_commands() {
        let root = std::env::temp_dir().join(format!("xtask-run-id-{}", std::process::id()));
        fs::create_dir_all(&root).unwrap();
        let (guest, xen_elf, qemu) = (root.join("guest"), Path::new("xen.elf"), Path::new("qemu"));
        fs::write(&guest, b"guest").unwrap();
        fs::write(root.join(xen_elf), b"xen").unwrap();
        let id = |boots: &[(&str, Command)]| xen_run_id(&root, &guest, xen_elf, boots).unwrap();
        let boots = xen_boots(&root, qemu, &guest, xen_elf);
        let first = id(&boots);
        assert_eq!(id(&boots), first);
        fs::write(&guest, b"guest 2").unwrap();
        let second = id(&boots);
        assert_ne!(second, first);
        fs::write(root.join(xen_elf), b"xen 2").unwrap();
        let third = id(&boots);
        assert_ne!(third, second);
        let other_qemu = xen_boots(&root, Path::new("qemu-2"), &guest, xen_elf);
        assert_ne!(id(&other_qemu), third);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_missing_row_is_an_error() {
        let mut sluice = full(100);
        sluice.retain(|(name, _)| name != "status");
        assert!(render(&sluice, None).is_err());
        let mut sluice = full(100);
        sluice.retain(|(name, _)| name != FLOOR);
        assert!(render(&sluice, None).is_err());
    }

    #[test]
    fn the_plot_has_a_bar_per_value() {
        let svg = plot(&full(100), None);
        // Sluice for every row, the reference for the rows that have one.
        let references = ROWS
            .iter()
            .filter(|row| row.xen_reference.is_some())
            .count();
        assert_eq!(svg.matches("<rect").count(), 3 + ROWS.len() + references);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
}
