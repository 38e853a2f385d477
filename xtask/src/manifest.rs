//! Scenario manifests: the `scenario.toml` files under `tests/scenarios/`,
//! parsed and checked before anything boots.
//!
//! The format is the project-wide contract in the README: which guests boot
//! together, on how many CPUs, for how long, and what the serial log and the
//! exit code must show. A manifest that does not parse or does not make sense
//! is reported with the field at fault; it never crashes the runner.

use std::collections::BTreeSet;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

/// CPUs a scenario may ask QEMU for (`-smp`).
pub const SMP_RANGE: std::ops::RangeInclusive<u32> = 1..=255;
/// Wall-clock limits a scenario may set, in seconds.
pub const TIMEOUT_SECS_RANGE: std::ops::RangeInclusive<u64> = 1..=3600;
/// `smp` when a manifest does not say.
pub const DEFAULT_SMP: u32 = 1;
/// `timeout_secs` when a manifest does not say.
pub const DEFAULT_TIMEOUT_SECS: u64 = 60;

/// How a scenario expects the hypervisor to end QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpectedExit {
    /// Every domain passed: the hypervisor writes 0x10, QEMU exits 33.
    Pass,
    /// Some domain failed: 0x11, QEMU exits 35.
    Fail,
    /// The hypervisor panicked or took an unexpected exception: 0x12, 37.
    Panic,
}

/// A manifest exactly as written; checked by [`parse`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    description: String,
    #[serde(default = "default_smp")]
    smp: u32,
    #[serde(default = "default_timeout_secs")]
    timeout_secs: u64,
    #[serde(default)]
    hypervisor_args: String,
    #[serde(default = "default_expect_exit")]
    expect_exit: ExpectedExit,
    #[serde(default)]
    expect_output: Vec<String>,
    #[serde(default, rename = "module")]
    modules: Vec<RawModule>,
    #[serde(default)]
    xen_skip: Option<String>,
    #[serde(default)]
    serial_input: Option<String>,
    #[serde(default)]
    serial_input_after: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModule {
    guest: String,
    #[serde(default)]
    args: String,
}

fn default_smp() -> u32 {
    DEFAULT_SMP
}

fn default_timeout_secs() -> u64 {
    DEFAULT_TIMEOUT_SECS
}

fn default_expect_exit() -> ExpectedExit {
    ExpectedExit::Pass
}

/// One guest image booted as a multiboot module, in boot order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    /// Directory under `tests/guests/`; the crate is `guest-<guest>`.
    pub guest: String,
    /// The module's command line (`dom=1 vcpus=2 priv`).
    pub args: String,
}

/// A checked scenario manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// One line saying what the scenario shows.
    pub description: String,
    /// QEMU `-smp`.
    pub smp: u32,
    /// Wall-clock limit; QEMU is killed when it runs out.
    pub timeout: Duration,
    /// The hypervisor's command line (`-append`).
    pub hypervisor_args: String,
    /// How the hypervisor must end QEMU.
    pub expect_exit: ExpectedExit,
    /// Each must match at least one line of the serial log.
    pub expect_output: Vec<Regex>,
    /// Guests to boot, in order.
    pub modules: Vec<Module>,
    /// Whether `cargo xtask test --xen` boots this scenario's guest on Xen.
    pub xen: XenOracle,
    /// Keys typed on the serial console (the `serial_input` field).
    pub serial_input: Option<SerialInput>,
}

/// Bytes xtask writes to QEMU's stdin, the serial console's input: the
/// debug keys a scenario presses.
#[derive(Debug, Clone)]
pub struct SerialInput {
    /// What is typed.
    pub bytes: String,
    /// Typed once a serial line matches this (`serial_input_after`); at
    /// once if none.
    pub after: Option<Regex>,
}

/// Whether a single-domain scenario also boots on real Xen under
/// `cargo xtask test --xen` (the `xen_skip` field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XenOracle {
    /// Boot it on Xen too when it has exactly one module (the default).
    Run,
    /// Never on Xen, for the reason given.
    Skip(String),
}

/// Parses and checks a manifest. `known_guests` holds the directory names
/// under `tests/guests/` that have a crate; a module naming any other guest
/// is an error. The message names the field at fault; the caller adds the
/// file name.
pub fn parse(text: &str, known_guests: &BTreeSet<String>) -> Result<Manifest, String> {
    let raw: RawManifest = toml::from_str(text).map_err(|error| error.to_string())?;

    if raw.description.trim().is_empty() {
        return Err("field `description`: must say what the scenario shows".into());
    }
    if !SMP_RANGE.contains(&raw.smp) {
        return Err(format!(
            "field `smp`: must be between {} and {}, got {}",
            SMP_RANGE.start(),
            SMP_RANGE.end(),
            raw.smp
        ));
    }
    if !TIMEOUT_SECS_RANGE.contains(&raw.timeout_secs) {
        return Err(format!(
            "field `timeout_secs`: must be between {} and {}, got {}",
            TIMEOUT_SECS_RANGE.start(),
            TIMEOUT_SECS_RANGE.end(),
            raw.timeout_secs
        ));
    }
    if raw.hypervisor_args.contains(['\n', '\r']) {
        return Err("field `hypervisor_args`: must be a single line".into());
    }

    let mut expect_output = Vec::with_capacity(raw.expect_output.len());
    for (index, pattern) in raw.expect_output.iter().enumerate() {
        let regex = Regex::new(pattern).map_err(|error| {
            format!("field `expect_output[{index}]`: not a valid regex: {error}")
        })?;
        expect_output.push(regex);
    }

    let mut modules = Vec::with_capacity(raw.modules.len());
    for (index, module) in raw.modules.into_iter().enumerate() {
        check_module(index, &module, known_guests)?;
        modules.push(Module {
            guest: module.guest,
            args: module.args,
        });
    }

    let xen = match raw.xen_skip {
        None => XenOracle::Run,
        Some(reason) if reason.trim().is_empty() => {
            return Err("field `xen_skip`: must say why the scenario cannot run on Xen".into());
        }
        Some(_) if modules.len() != 1 => {
            return Err(format!(
                "field `xen_skip`: only single-domain scenarios boot on Xen, and this one has {} \
                 modules; remove the field",
                modules.len()
            ));
        }
        Some(reason) => XenOracle::Skip(reason.trim().to_owned()),
    };

    let serial_input = match (raw.serial_input, raw.serial_input_after) {
        (None, None) => None,
        (None, Some(_)) => {
            return Err("field `serial_input_after`: needs `serial_input`".into());
        }
        (Some(bytes), after) => {
            if bytes.is_empty() {
                return Err("field `serial_input`: must not be empty".into());
            }
            let after = match after {
                Some(pattern) => Some(Regex::new(&pattern).map_err(|error| {
                    format!("field `serial_input_after`: not a valid regex: {error}")
                })?),
                None => None,
            };
            Some(SerialInput { bytes, after })
        }
    };
    Ok(Manifest {
        serial_input,
        description: raw.description.trim().to_owned(),
        smp: raw.smp,
        timeout: Duration::from_secs(raw.timeout_secs),
        hypervisor_args: raw.hypervisor_args,
        expect_exit: raw.expect_exit,
        expect_output,
        modules,
        xen,
    })
}

fn check_module(
    index: usize,
    module: &RawModule,
    known_guests: &BTreeSet<String>,
) -> Result<(), String> {
    let guest = &module.guest;
    let is_plain_name = !guest.is_empty()
        && guest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !is_plain_name {
        return Err(format!(
            "field `module[{index}].guest`: {guest:?} is not a directory name under tests/guests/ \
             (letters, digits, '-' and '_' only)"
        ));
    }
    if !known_guests.contains(guest) {
        return Err(format!(
            "field `module[{index}].guest`: no guest crate at tests/guests/{guest}/"
        ));
    }
    // QEMU's multiboot loader splits `-initrd` at commas (one module each)
    // and a module's path from its arguments at the first space.
    if module.args.contains(',') {
        return Err(format!(
            "field `module[{index}].args`: must not contain ',' (QEMU separates modules with commas)"
        ));
    }
    if module.args.contains(['\n', '\r']) {
        return Err(format!(
            "field `module[{index}].args`: must be a single line"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guests(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    const FULL: &str = r#"
description = "every CPU reports in with -smp 4"
smp = 4
timeout_secs = 90
hypervisor_args = "selftest=cpus loglvl=debug"
expect_exit = "fail"
expect_output = ["selftest cpus: 4 of 4 CPUs online", "^ok [0-9]+ - "]
[[module]]
guest = "hello"
args = "dom=1 vcpus=1"
[[module]]
guest = "ping_pong-2"
"#;

    #[test]
    fn full_manifest_keeps_every_field_in_order() {
        let manifest = parse(FULL, &guests(&["hello", "ping_pong-2"])).unwrap();
        assert_eq!(manifest.description, "every CPU reports in with -smp 4");
        assert_eq!(manifest.smp, 4);
        assert_eq!(manifest.timeout, Duration::from_secs(90));
        assert_eq!(manifest.hypervisor_args, "selftest=cpus loglvl=debug");
        assert_eq!(manifest.expect_exit, ExpectedExit::Fail);
        assert_eq!(manifest.expect_output.len(), 2);
        assert!(manifest.expect_output[1].is_match("ok 12 - close works"));
        assert_eq!(
            manifest.modules,
            vec![
                Module {
                    guest: "hello".into(),
                    args: "dom=1 vcpus=1".into()
                },
                Module {
                    guest: "ping_pong-2".into(),
                    args: String::new()
                },
            ]
        );
    }

    #[test]
    fn only_description_is_required() {
        let manifest = parse("description = \"boots\"", &guests(&[])).unwrap();
        assert_eq!(manifest.smp, DEFAULT_SMP);
        assert_eq!(manifest.timeout, Duration::from_secs(DEFAULT_TIMEOUT_SECS));
        assert_eq!(manifest.hypervisor_args, "");
        assert_eq!(manifest.expect_exit, ExpectedExit::Pass);
        assert!(manifest.expect_output.is_empty());
        assert!(manifest.modules.is_empty());
    }

    #[test]
    fn missing_description_names_the_field() {
        let error = parse("smp = 2", &guests(&[])).unwrap_err();
        assert!(error.contains("description"), "{error}");
    }

    #[test]
    fn blank_description_is_rejected() {
        let error = parse("description = \"  \"", &guests(&[])).unwrap_err();
        assert!(error.contains("`description`"), "{error}");
    }

    #[test]
    fn unknown_field_is_named() {
        let error = parse("description = \"x\"\nsmpp = 2", &guests(&[])).unwrap_err();
        assert!(error.contains("smpp"), "{error}");
    }

    #[test]
    fn wrong_type_points_at_the_line() {
        let error = parse("description = \"x\"\nsmp = \"four\"", &guests(&[])).unwrap_err();
        assert!(error.contains("line 2"), "{error}");
        assert!(error.contains("smp"), "{error}");
    }

    #[test]
    fn unknown_expect_exit_is_rejected() {
        let error = parse("description = \"x\"\nexpect_exit = \"ok\"", &guests(&[])).unwrap_err();
        assert!(error.contains("pass"), "{error}");
    }

    #[test]
    fn smp_zero_is_rejected() {
        let error = parse("description = \"x\"\nsmp = 0", &guests(&[])).unwrap_err();
        assert!(error.contains("`smp`"), "{error}");
    }

    #[test]
    fn timeout_out_of_range_is_rejected() {
        for bad in ["0", "3601"] {
            let text = format!("description = \"x\"\ntimeout_secs = {bad}");
            let error = parse(&text, &guests(&[])).unwrap_err();
            assert!(error.contains("`timeout_secs`"), "{error}");
        }
    }

    #[test]
    fn invalid_regex_names_its_index() {
        let text = "description = \"x\"\nexpect_output = [\"fine\", \"(unclosed\"]";
        let error = parse(text, &guests(&[])).unwrap_err();
        assert!(error.contains("`expect_output[1]`"), "{error}");
    }

    #[test]
    fn unknown_guest_names_the_module() {
        let text =
            "description = \"x\"\n[[module]]\nguest = \"hello\"\n[[module]]\nguest = \"nope\"";
        let error = parse(text, &guests(&["hello"])).unwrap_err();
        assert!(error.contains("`module[1].guest`"), "{error}");
        assert!(error.contains("tests/guests/nope"), "{error}");
    }

    #[test]
    fn guest_path_escape_is_rejected() {
        let text = "description = \"x\"\n[[module]]\nguest = \"../hello\"";
        let error = parse(text, &guests(&["../hello"])).unwrap_err();
        assert!(error.contains("`module[0].guest`"), "{error}");
    }

    #[test]
    fn comma_in_module_args_is_rejected() {
        let text = "description = \"x\"\n[[module]]\nguest = \"hello\"\nargs = \"dom=1,vcpus=2\"";
        let error = parse(text, &guests(&["hello"])).unwrap_err();
        assert!(error.contains("`module[0].args`"), "{error}");
    }

    #[test]
    fn module_without_guest_is_rejected() {
        let text = "description = \"x\"\n[[module]]\nargs = \"dom=1\"";
        let error = parse(text, &guests(&["hello"])).unwrap_err();
        assert!(error.contains("guest"), "{error}");
    }

    #[test]
    fn xen_skip_needs_a_reason_and_one_module() {
        let one = "description = \"x\"\n[[module]]\nguest = \"hello\"\n";
        let known = guests(&["hello"]);
        assert_eq!(parse(one, &known).unwrap().xen, XenOracle::Run);
        let skipped = format!("xen_skip = \" needs two domains \"\n{one}");
        assert_eq!(
            parse(&skipped, &known).unwrap().xen,
            XenOracle::Skip("needs two domains".into())
        );
        let blank = format!("xen_skip = \" \"\n{one}");
        let error = parse(&blank, &known).unwrap_err();
        assert!(error.contains("`xen_skip`: must say why"), "{error}");
        let none = "description = \"x\"\nxen_skip = \"why\"";
        let error = parse(none, &known).unwrap_err();
        assert!(error.contains("only single-domain"), "{error}");
    }

    /// The worked example in the README must stay a valid manifest.
    #[test]
    fn readme_worked_example_parses() {
        let readme = include_str!("../../README.md");
        let start = readme
            .find("# tests/scenarios/ping-pong/scenario.toml")
            .expect("the README's worked example");
        let block = &readme[start..];
        let block = &block[..block.find("```").expect("end of the example")];
        let manifest = parse(block, &guests(&["ping", "pong"])).unwrap();
        assert_eq!(manifest.smp, 2);
        assert_eq!(manifest.modules.len(), 2);
        assert_eq!(manifest.modules[0].args, "dom=0 vcpus=1 priv");
        assert!(manifest.expect_output[1].is_match("ok 12 - notify reaches the remote domain"));
    }
}
