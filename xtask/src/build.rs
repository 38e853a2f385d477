//! Building the kernel-side images with cargo: the hypervisor (demo and
//! self-test flavours) and the guests, all for `x86_64-unknown-none`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use crate::process;
use crate::repo::{self, Profile};
use crate::toolchain::KERNEL_TARGET;

/// Which hypervisor image to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// The plain image `cargo xtask run` boots.
    Demo,
    /// Built with `--features selftest`, for scenarios and the KVM probe.
    Selftest,
}

/// Builds the hypervisor and returns its image, relative to `root`.
pub fn hypervisor(root: &Path, profile: Profile, flavor: Flavor) -> Result<PathBuf> {
    let mut cargo = process::command(root, "cargo");
    cargo.args(["build", "-p", "hypervisor", "--target", KERNEL_TARGET]);
    add_profile(&mut cargo, profile);
    let image = match flavor {
        Flavor::Demo => repo::hypervisor_image(profile),
        Flavor::Selftest => {
            cargo.args([
                "--features",
                "selftest",
                "--target-dir",
                repo::SELFTEST_TARGET_DIR,
            ]);
            repo::selftest_image(profile)
        }
    };
    process::run(&mut cargo)?;
    check_exists(root, &image)?;
    Ok(image)
}

/// Builds the given guests (directory names under `tests/guests/`) and
/// returns their images, relative to `root`, in name order.
pub fn guests(
    root: &Path,
    profile: Profile,
    guests: &BTreeSet<String>,
) -> Result<Vec<(String, PathBuf)>> {
    if guests.is_empty() {
        return Ok(Vec::new());
    }
    let mut cargo = process::command(root, "cargo");
    cargo.args(["build", "--target", KERNEL_TARGET]);
    add_profile(&mut cargo, profile);
    for guest in guests {
        cargo.args(["-p", &repo::package_name(guest)]);
    }
    process::run(&mut cargo)?;
    let mut images = Vec::with_capacity(guests.len());
    for guest in guests {
        let image = repo::guest_image(profile, guest);
        check_exists(root, &image)?;
        images.push((guest.clone(), image));
    }
    Ok(images)
}

fn add_profile(cargo: &mut std::process::Command, profile: Profile) {
    match profile {
        Profile::Dev => {}
        Profile::Release => {
            cargo.arg("--release");
        }
    }
}

fn check_exists(root: &Path, image: &Path) -> Result<()> {
    if !root.join(image).is_file() {
        bail!(
            "cargo finished, but the image {} is missing",
            image.display()
        );
    }
    Ok(())
}
