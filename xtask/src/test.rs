//! `cargo xtask test`: the host tests, then every scenario under QEMU, and
//! one closing line `N passed, M failed` that counts both.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::accel::{self, AccelChoice};
use crate::build::{self, Flavor};
use crate::host_tests;
use crate::manifest;
use crate::qemu;
use crate::repo::{self, Profile};
use crate::scenarios::{Runner, Scenario, ScenarioResult, print_result};
use crate::verdict::closing_line;

/// What `cargo xtask test` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// How to pick the accelerator.
    pub accel: AccelChoice,
    /// Only scenarios whose name contains this.
    pub filter: Option<String>,
    /// Scenarios run at once.
    pub jobs: usize,
    /// Boot this hypervisor image instead of building the self-test one.
    pub image: Option<PathBuf>,
}

/// Runs the whole suite; `Ok(true)` if nothing failed.
pub fn run(root: &Path, options: &Options) -> Result<bool> {
    let started = Instant::now();
    println!("== host tests");
    let mut host = host_tests::run(root)?;
    println!("== loom model checks");
    let loom = host_tests::run_loom(root)?;
    host.passed += loom.passed;
    host.failed += loom.failed;

    println!("== scenarios");
    let mut results = Vec::new();
    let scenarios = match load_scenarios(root, options.filter.as_deref(), &mut results) {
        Ok(scenarios) => scenarios,
        Err(error) => {
            // Counted as one failed item so the closing line still comes.
            results.push(ScenarioResult::error(
                repo::SCENARIOS_DIR,
                vec![format!("scenario discovery failed: {error:#}")],
            ));
            Vec::new()
        }
    };
    for result in &results {
        print_result(result);
    }
    if !scenarios.is_empty() {
        match prepare_and_run(root, options, &scenarios) {
            Ok(ran) => results.extend(ran),
            Err(error) => {
                let reason = format!("not run: {error:#}");
                println!("scenarios not run: {error:#}");
                results.extend(
                    scenarios.iter().map(|scenario| {
                        ScenarioResult::error(&scenario.name, vec![reason.clone()])
                    }),
                );
            }
        }
    }

    let scenarios_passed = results.iter().filter(|result| result.is_pass()).count();
    let scenarios_failed = results.len() - scenarios_passed;
    println!(
        "== host tests: {} of {} ok; scenarios: {} of {} ok; {:.0} s in all",
        host.passed,
        host.passed + host.failed,
        scenarios_passed,
        results.len(),
        started.elapsed().as_secs_f64()
    );
    let failed_names: Vec<&str> = results
        .iter()
        .filter(|result| !result.is_pass())
        .map(|result| result.name.as_str())
        .collect();
    if !failed_names.is_empty() {
        println!("failing scenarios: {}", failed_names.join(", "));
    }
    let passed = host.passed + scenarios_passed;
    let failed = host.failed + scenarios_failed;
    println!("{}", closing_line(passed, failed));
    Ok(failed == 0)
}

/// Finds and checks the scenarios the filter selects. Broken ones go to
/// `broken` as errors, with the file and field named.
pub fn load_scenarios(
    root: &Path,
    filter: Option<&str>,
    broken: &mut Vec<ScenarioResult>,
) -> Result<Vec<Scenario>> {
    let mut files = repo::scenarios(root)?;
    if files.is_empty() {
        println!("no scenarios under {}/", repo::SCENARIOS_DIR);
        return Ok(Vec::new());
    }
    if let Some(filter) = filter {
        files.retain(|file| file.name.contains(filter));
        if files.is_empty() {
            println!("no scenario name contains `{filter}`");
            return Ok(Vec::new());
        }
    }
    let guests = match repo::guests(root) {
        Ok(guests) => guests,
        Err(error) => {
            let reason = format!("{error:#}");
            broken.extend(
                files
                    .iter()
                    .map(|file| ScenarioResult::error(&file.name, vec![reason.clone()])),
            );
            return Ok(Vec::new());
        }
    };
    let mut scenarios = Vec::with_capacity(files.len());
    for file in files {
        let text = match fs::read_to_string(root.join(&file.manifest)) {
            Ok(text) => text,
            Err(error) => {
                broken.push(ScenarioResult::error(
                    &file.name,
                    vec![format!("cannot read {}: {error}", file.manifest.display())],
                ));
                continue;
            }
        };
        match manifest::parse(&text, &guests) {
            Ok(manifest) => scenarios.push(Scenario {
                name: file.name,
                manifest,
            }),
            Err(reason) => broken.push(ScenarioResult::error(
                &file.name,
                vec![format!("{}: {reason}", file.manifest.display())],
            )),
        }
    }
    Ok(scenarios)
}

/// Builds what the scenarios boot, picks the accelerator and runs them.
pub fn prepare_and_run(
    root: &Path,
    options: &Options,
    scenarios: &[Scenario],
) -> Result<Vec<ScenarioResult>> {
    let qemu_binary = qemu::find_or_install(root)?;
    let image = match &options.image {
        Some(image) => {
            if !image.is_file() {
                anyhow::bail!("hypervisor image {} does not exist", image.display());
            }
            image.clone()
        }
        None => build::hypervisor(root, Profile::Release, Flavor::Selftest)
            .context("building the self-test image")?,
    };
    let wanted: BTreeSet<String> = scenarios
        .iter()
        .flat_map(|scenario| {
            scenario
                .manifest
                .modules
                .iter()
                .map(|module| module.guest.clone())
        })
        .collect();
    let guest_images: BTreeMap<String, PathBuf> = build::guests(root, Profile::Release, &wanted)
        .context("building the guests")?
        .into_iter()
        .collect();
    let accel = accel::choose(root, &qemu_binary, options.accel, || Ok(image.clone()))?;
    fs::create_dir_all(root.join(repo::SCENARIO_LOGS_DIR))
        .with_context(|| format!("cannot create {}", repo::SCENARIO_LOGS_DIR))?;
    let jobs = options.jobs.clamp(1, scenarios.len().max(1));
    println!(
        "running {} scenario{} under {}, {} at a time; serial logs in {}/",
        scenarios.len(),
        if scenarios.len() == 1 { "" } else { "s" },
        accel.label(),
        jobs,
        repo::SCENARIO_LOGS_DIR
    );
    let runner = Runner {
        root,
        qemu: &qemu_binary,
        image: &image,
        guest_images: &guest_images,
        accel,
    };
    Ok(runner.run_all(scenarios, jobs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::Outcome;

    /// A throwaway repository tree under the system temp directory.
    struct Tree(PathBuf);

    impl Tree {
        fn new(name: &str) -> Self {
            let root = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).unwrap();
            Tree(root)
        }

        fn write(&self, path: &str, text: &str) {
            let path = self.0.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn sample_tree(name: &str) -> Tree {
        let tree = Tree::new(name);
        tree.write(
            "tests/guests/hello/Cargo.toml",
            "[package]\nname = \"guest-hello\"\n",
        );
        tree.write(
            "tests/scenarios/b-good/scenario.toml",
            "description = \"boots\"\n[[module]]\nguest = \"hello\"\n",
        );
        tree.write(
            "tests/scenarios/a-bad/scenario.toml",
            "description = \"x\"\ntimeout_secs = 0\n",
        );
        fs::create_dir_all(tree.0.join("tests/scenarios/c-empty")).unwrap();
        tree
    }

    fn error_text(result: &ScenarioResult) -> String {
        match &result.outcome {
            Outcome::Error(reasons) => reasons.join("\n"),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn broken_scenarios_become_errors_naming_file_and_field() {
        let tree = sample_tree("load");
        let mut broken = Vec::new();
        let scenarios = load_scenarios(&tree.0, None, &mut broken).unwrap();
        let names: Vec<&str> = scenarios.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["b-good"]);
        assert_eq!(broken.len(), 2);
        assert_eq!(broken[0].name, "a-bad");
        let bad = error_text(&broken[0]);
        assert!(
            bad.contains("tests/scenarios/a-bad/scenario.toml: field `timeout_secs`"),
            "{bad}"
        );
        assert_eq!(broken[1].name, "c-empty");
        assert!(
            error_text(&broken[1]).contains("tests/scenarios/c-empty/scenario.toml"),
            "{broken:?}"
        );
    }

    #[test]
    fn filter_selects_by_name_substring() {
        let tree = sample_tree("filter");
        let mut broken = Vec::new();
        let scenarios = load_scenarios(&tree.0, Some("good"), &mut broken).unwrap();
        assert_eq!(scenarios.len(), 1);
        assert!(broken.is_empty());
        let none = load_scenarios(&tree.0, Some("nothing"), &mut broken).unwrap();
        assert!(none.is_empty() && broken.is_empty());
    }

    #[test]
    fn misnamed_guest_crate_fails_every_selected_scenario() {
        let tree = sample_tree("misnamed");
        tree.write(
            "tests/guests/hello/Cargo.toml",
            "[package]\nname = \"hello\"\n",
        );
        let mut broken = Vec::new();
        let scenarios = load_scenarios(&tree.0, None, &mut broken).unwrap();
        assert!(scenarios.is_empty());
        assert_eq!(broken.len(), 3);
        assert!(error_text(&broken[0]).contains("must be `guest-hello`"));
    }
}
