//! Where things are in the repository: its root, the guest crates under
//! `tests/guests/`, the scenario manifests under `tests/scenarios/`, the demo
//! manifest, and the images cargo builds.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::toolchain::KERNEL_TARGET;

/// The repository root (the directory above `xtask/`).
pub fn root() -> Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .context("xtask's manifest directory has no parent")
}

/// Guest crates live one per directory here.
pub const GUESTS_DIR: &str = "tests/guests";
/// Scenario manifests live one per directory here.
pub const SCENARIOS_DIR: &str = "tests/scenarios";
/// The manifest `cargo xtask run` boots.
pub const DEMO_MANIFEST: &str = "tests/demo.toml";
/// Where `cargo xtask test` keeps each scenario's serial log.
pub const SCENARIO_LOGS_DIR: &str = "target/scenarios";
/// The cargo target directory of the self-test image, apart from the demo
/// image so that both exist side by side and neither rebuilds the other.
pub const SELFTEST_TARGET_DIR: &str = "target/selftest";

/// A cargo profile for the kernel-side images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// `cargo build` without `--release`.
    Dev,
    /// `cargo build --release`: what `run` and `test` boot.
    Release,
}

impl Profile {
    /// The directory cargo puts this profile's outputs in.
    pub fn dir_name(self) -> &'static str {
        match self {
            Profile::Dev => "debug",
            Profile::Release => "release",
        }
    }
}

/// The demo hypervisor image, relative to the root.
pub fn hypervisor_image(profile: Profile) -> PathBuf {
    Path::new("target")
        .join(KERNEL_TARGET)
        .join(profile.dir_name())
        .join("sluice")
}

/// The hypervisor image built with `--features selftest`, relative to the root.
pub fn selftest_image(profile: Profile) -> PathBuf {
    Path::new(SELFTEST_TARGET_DIR)
        .join(KERNEL_TARGET)
        .join(profile.dir_name())
        .join("sluice")
}

/// A guest image, relative to the root.
pub fn guest_image(profile: Profile, guest: &str) -> PathBuf {
    Path::new("target")
        .join(KERNEL_TARGET)
        .join(profile.dir_name())
        .join(package_name(guest))
}

/// The cargo package of the guest in `tests/guests/<guest>`.
pub fn package_name(guest: &str) -> String {
    format!("guest-{guest}")
}

#[derive(Deserialize)]
struct CargoManifest {
    package: Option<CargoPackage>,
}

#[derive(Deserialize)]
struct CargoPackage {
    name: String,
}

/// The guests: directory names under `tests/guests/` that hold a crate,
/// checked to be named `guest-<directory>` as the build contract says.
pub fn guests(root: &Path) -> Result<BTreeSet<String>> {
    let dir = root.join(GUESTS_DIR);
    let mut guests = BTreeSet::new();
    if !dir.exists() {
        return Ok(guests);
    }
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let cargo_toml = entry.path().join("Cargo.toml");
        if !cargo_toml.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = fs::read_to_string(&cargo_toml)
            .with_context(|| format!("cannot read {}", cargo_toml.display()))?;
        let manifest: CargoManifest = toml::from_str(&text)
            .with_context(|| format!("cannot parse {}", cargo_toml.display()))?;
        let expected = package_name(&name);
        match manifest.package {
            Some(package) if package.name == expected => {}
            Some(package) => bail!(
                "{GUESTS_DIR}/{name}/Cargo.toml: package is named `{}`, but a guest in \
                 {GUESTS_DIR}/{name} must be `{expected}`",
                package.name
            ),
            None => bail!("{GUESTS_DIR}/{name}/Cargo.toml has no [package]"),
        }
        guests.insert(name);
    }
    Ok(guests)
}

/// A scenario directory found under `tests/scenarios/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioFile {
    /// The directory name, which is the scenario's name.
    pub name: String,
    /// `tests/scenarios/<name>/scenario.toml`, relative to the root.
    pub manifest: PathBuf,
}

/// Every scenario directory, sorted by name. A directory without a
/// `scenario.toml` is still listed, so that the runner reports it rather
/// than silently skipping it.
pub fn scenarios(root: &Path) -> Result<Vec<ScenarioFile>> {
    let dir = root.join(SCENARIOS_DIR);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        if !entry.path().is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        found.push(ScenarioFile {
            manifest: Path::new(SCENARIOS_DIR).join(&name).join("scenario.toml"),
            name,
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}
