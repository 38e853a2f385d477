//! The Xen image the oracle boots: Debian's `xen-hypervisor-4.17-amd64`
//! installs it as `/boot/xen-4.17-amd64.gz`; it is unpacked to
//! `target/xen-oracle/xen.elf`, which QEMU loads with `-kernel`
//! (multiboot). When the package is missing, xtask installs it if it runs
//! as root and otherwise says what to install.
//!
//! The package has no dependencies; its one recommendation,
//! `xen-hypervisor-common`, is what makes GRUB boot Xen by default, so it
//! is installed with `--no-install-recommends` and a machine that boots
//! through GRUB keeps booting as before.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use flate2::read::GzDecoder;

use crate::process;

/// Debian's package with the Xen 4.17 hypervisor image.
pub const XEN_PACKAGE: &str = "xen-hypervisor-4.17-amd64";
/// Where that package puts the image.
pub const XEN_IMAGE: &str = "/boot/xen-4.17-amd64.gz";
/// Names another Xen image to boot (gzip or plain ELF), as for
/// `tests/xen-oracle.sh`.
pub const XEN_IMAGE_ENV: &str = "XEN_ORACLE_XEN";
/// Where the oracle keeps the unpacked image, serial logs and comparisons.
pub const ORACLE_DIR: &str = "target/xen-oracle";
/// The unpacked image, relative to the root.
pub const XEN_ELF: &str = "target/xen-oracle/xen.elf";

/// The first bytes of a gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The first bytes of an ELF file.
const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];

/// Finds (or installs) the Xen image and unpacks it; returns
/// [`XEN_ELF`], relative to `root`.
pub fn prepare(root: &Path) -> Result<PathBuf> {
    let source = match std::env::var_os(XEN_IMAGE_ENV) {
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                bail!("{XEN_IMAGE_ENV}={} is not a file", path.display());
            }
            path
        }
        None => find_or_install(root)?,
    };
    fs::create_dir_all(root.join(ORACLE_DIR))
        .with_context(|| format!("cannot create {ORACLE_DIR}"))?;
    let elf = Path::new(XEN_ELF);
    unpack(&source, &root.join(elf))?;
    println!("Xen image: {} unpacked to {XEN_ELF}", source.display());
    Ok(elf.to_path_buf())
}

fn find_or_install(root: &Path) -> Result<PathBuf> {
    let image = PathBuf::from(XEN_IMAGE);
    if image.is_file() {
        return Ok(image);
    }
    if !crate::qemu::is_root() {
        bail!(
            "{XEN_IMAGE} not found. Install Debian's Xen 4.17 hypervisor (no recommends: \
             xen-hypervisor-common would make GRUB boot Xen by default): \
             sudo apt-get install -y --no-install-recommends {XEN_PACKAGE}"
        );
    }
    println!("{XEN_IMAGE} not found; installing Debian's {XEN_PACKAGE} with apt-get");
    process::run(
        process::command(root, "apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    process::run(
        process::command(root, "apt-get")
            .args(["install", "-y", "--no-install-recommends", XEN_PACKAGE])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if !image.is_file() {
        bail!("{XEN_PACKAGE} installed, but {XEN_IMAGE} is still missing");
    }
    Ok(image)
}

/// Writes the ELF inside `source` (gzip-compressed or not) to `target`.
fn unpack(source: &Path, target: &Path) -> Result<()> {
    let mut input =
        File::open(source).with_context(|| format!("cannot open {}", source.display()))?;
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {}", source.display()))?;
    let elf = decompress(&bytes).with_context(|| format!("unpacking {}", source.display()))?;
    let partial = target.with_extension("elf.partial");
    let mut output =
        File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    output
        .write_all(&elf)
        .with_context(|| format!("cannot write {}", partial.display()))?;
    // Renamed into place so a concurrent tests/xen-oracle.sh never boots
    // half an image.
    fs::rename(&partial, target)
        .with_context(|| format!("cannot move {} into place", target.display()))?;
    Ok(())
}

/// The ELF image inside `bytes`: gunzipped if it is gzip, as it is if it is
/// already an ELF, an error otherwise.
pub fn decompress(bytes: &[u8]) -> Result<Vec<u8>> {
    let elf = if bytes.starts_with(&GZIP_MAGIC) {
        let mut elf = Vec::new();
        GzDecoder::new(bytes)
            .read_to_end(&mut elf)
            .map_err(|error: io::Error| anyhow::anyhow!("not a valid gzip stream: {error}"))?;
        elf
    } else {
        bytes.to_vec()
    };
    if !elf.starts_with(&ELF_MAGIC) {
        bail!("the image is not an ELF file (nor a gzip-compressed one)");
    }
    Ok(elf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;

    fn fake_elf() -> Vec<u8> {
        let mut elf = ELF_MAGIC.to_vec();
        elf.extend((0..5000u32).map(|n| (n % 251) as u8));
        elf
    }

    #[test]
    fn gzip_image_is_unpacked() {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(&fake_elf()).unwrap();
        let gz = encoder.finish().unwrap();
        assert_eq!(decompress(&gz).unwrap(), fake_elf());
    }

    #[test]
    fn plain_elf_is_taken_as_is() {
        assert_eq!(decompress(&fake_elf()).unwrap(), fake_elf());
    }

    #[test]
    fn neither_gzip_nor_elf_is_refused() {
        let error = decompress(b"#!/bin/sh\n").unwrap_err();
        assert!(error.to_string().contains("not an ELF"), "{error}");
    }

    #[test]
    fn truncated_gzip_is_refused() {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(&fake_elf()).unwrap();
        let gz = encoder.finish().unwrap();
        let error = decompress(&gz[..gz.len() / 2]).unwrap_err();
        assert!(error.to_string().contains("gzip"), "{error}");
    }
}
